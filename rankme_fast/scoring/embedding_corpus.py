"""`score_files`: every row of a corpus of embedding files streamed into a float64 Gram state
on the corpus-job engine (rankme_fast.corpus), with a reader thread running ahead of the
kernel. What is this command's own: how a file is opened (rankme_fast.io), batches of rows,
a cap on the rows, and rows holding NaN or Inf."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from rankme_fast._checks import check_positive_int
from rankme_fast._inputs import torch_dtype
from rankme_fast.accumulate import GramAccumulator
from rankme_fast.corpus import BadFileError, Corpus, FileReport, JobOptions, Outcome, Unit, interval_report, run_job
from rankme_fast.distributed import world
from rankme_fast.io import embedding_paths, open_source
from rankme_fast.sample_limit import local_share
from rankme_fast.scoring.prefetch import BadFile, Prefetcher
from rankme_fast.state import NonFiniteRowsError
from rankme_fast.uncertainty import Estimate, Growth
from rankme_fast.update import check_nonfinite

BLOCKS_BY = ("rows", "file")
BATCH_BYTES = 16 << 20  # default batch: 16 MiB of input rows (up to 4 are in flight: read, queued, used)


@dataclass(frozen=True)
class ScoreOptions(JobOptions):
    key: str | None = None
    column: str | None = None
    centered: bool = False
    nonfinite: str = "raise"  # or "drop": rows with NaN/Inf are skipped and counted
    batch_rows: int | None = None  # None: 16 MiB of rows
    max_rows: int | None = None  # over all processes, the first rows in file order
    blocks_by: str = "rows"  # with ci: each file cut into `blocks` runs of rows, or each file in one block ("file")

    def check(self) -> None:
        super().check()
        check_nonfinite(self.nonfinite)
        if "nesum" in self.metrics and not self.centered:
            raise ValueError("nesum is defined on the covariance spectrum: pass --centered")
        for name in ("batch_rows", "max_rows"):
            check_positive_int(getattr(self, name), name, optional=True)
        if self.blocks_by not in BLOCKS_BY:
            raise ValueError(f"blocks_by must be one of {BLOCKS_BY}, got {self.blocks_by!r}")


@dataclass
class ScoreResult:
    metrics: dict[str, float]
    rows: int
    dim: int
    bytes: int
    seconds: float
    backend: str | None
    processes: int
    files: list[FileReport] = field(default_factory=list)
    resumed_from_row: int = 0
    dropped: int = 0  # rows holding NaN or Inf, skipped under nonfinite="drop"
    intervals: dict[str, Estimate] | None = None  # with ci: each metric's jackknife estimate
    growth: Growth | None = None  # with ci: RankMe against N along the blocks

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self) | {"rows_per_second": self.rows_per_second}
        data["intervals"] = None if self.intervals is None else {k: e.to_json() for k, e in self.intervals.items()}
        data["growth"] = None if self.growth is None else self.growth.to_json()
        return data


def score_files(paths: list[str], options: ScoreOptions = ScoreOptions()) -> ScoreResult:
    """Score every row of every file (files, directories, globs). Collective under
    torch.distributed: every process calls it and gets the same result.

    Args:
        paths: files (.npy, .npz, .safetensors, .parquet, .arrow, .feather, .h5, .hdf5),
            directories (recursive) and globs.
        options: ScoreOptions (JobOptions' checkpoints, resume, bad files, metrics, and the
            key/column, centring, non-finite rows, batch size and row cap).

    Returns:
        ScoreResult: the metrics of all rows, counts, timing, and a FileReport per file.

    Example:
        >>> import tempfile, numpy as np, rankme_fast as rf
        >>> from rankme_fast.scoring import ScoreOptions, score_files
        >>> z = np.random.default_rng(0).standard_normal((2000, 64)) * np.arange(1, 65) ** -0.5
        >>> folder = tempfile.mkdtemp()
        >>> for i, part in enumerate(np.array_split(z, 4)):
        ...     np.save(f"{folder}/part{i}.npy", part)
        >>> result = score_files([folder], ScoreOptions(progress=False))
        >>> result.rows, len(result.files), round(result.metrics["rankme"], 4)
        (2000, 4, 54.8356)
    """
    options.check()
    rank, processes = world()
    corpus = EmbeddingCorpus(embedding_paths(paths)[rank::processes], options, rank, processes)
    started = time.perf_counter()
    outcome = run_job(corpus, corpus.files, options)
    return corpus.result(outcome, time.perf_counter() - started)


class EmbeddingCorpus(Corpus):
    """Embedding files read in batches of rows into one state, "rows"."""

    label = "rankme-fast score"

    def __init__(self, files: list[str], options: ScoreOptions, rank: int = 0, processes: int = 1) -> None:
        super().__init__(files, options)
        self.options: ScoreOptions = options
        self.rank, self.processes = rank, processes  # file i here is file rank + i·processes of all
        self.file_sizes: dict[str, int] = {}  # rows of each file, from its survey
        self.cap = local_share(options.max_rows)
        self.first_dim: tuple[int, str] | None = None
        self.row_bytes = 1
        self.rows = self.bytes = self.file_rows = 0  # taken (with rows left out), all files and this one
        self.backend: str | None = None
        self.resumed_from_row = 0

    @property
    def batch_rows(self) -> int:
        return self.options.batch_rows or max(1, BATCH_BYTES // self.row_bytes)

    def survey(self, path: str) -> FileReport:
        source = open_source(path, key=self.options.key, column=self.options.column)
        source.close()
        if self.first_dim is not None and source.dim != self.first_dim[0]:
            raise BadFileError(path, f"D={source.dim} but {self.first_dim[1]} has D={self.first_dim[0]}")
        self.first_dim = self.first_dim or (source.dim, path)
        self.row_bytes = max(self.row_bytes, source.dim * torch_dtype(source.dtype).itemsize)
        self.file_sizes[path] = source.rows
        return FileReport(path, source.rows, source.dim, source.dtype)

    def new_states(self) -> dict[str, GramAccumulator]:
        o = self.options
        return {"rows": GramAccumulator(centered=o.centered, precision=o.precision, backend=o.backend,
                                        nonfinite=o.nonfinite, blocks=o.state_blocks)}  # fmt: skip

    @contextmanager
    def units(self, reports: list[FileReport], start: tuple[int, int]) -> Iterator[Iterator[Unit]]:
        reader = Prefetcher(
            lambda i: open_source(self.files[i], key=self.options.key, column=self.options.column),
            len(self.files), start, self.batch_rows, keep_going=self.options.skip_bad,
        )  # fmt: skip
        try:
            yield (
                Unit(item.file, 0, 0, error=item.error)
                if isinstance(item, BadFile)
                else Unit(item.file, item.first, len(item.rows), (item.rows, item.source))
                for item in reader
            )
        finally:
            reader.close()

    def add(self, unit: Unit, states: dict[str, GramAccumulator], report: FileReport) -> float:
        rows, source = unit.payload
        take = len(rows) if self.cap is None else min(len(rows), self.cap - self.rows)
        state = states["rows"]
        before = state.count
        try:
            for block, piece in self._pieces(unit, rows[:take], report):
                state.update(piece, block=block)
        except ValueError as error:  # non-finite rows (under nonfinite="raise"): the file is bad
            problem = str(error)
            if isinstance(error, NonFiniteRowsError):
                problem = (f"{error.bad} of {error.rows} rows hold NaN or Inf; nothing of this file was added "
                           "(--nonfinite drop skips such rows)")  # fmt: skip
            raise BadFileError(report.path, f"rows {unit.first}..{unit.first + take - 1}: {problem}") from error
        unit.count = take
        report.dropped += take - (state.count - before)
        self.backend = state.last_backend
        self.rows += take
        self.file_rows += take
        self.bytes += take * source.dim * source.itemsize
        return take

    def _pieces(self, unit: Unit, rows: Any, report: FileReport) -> Iterator[tuple[int | None, Any]]:
        """The rows of a batch with the block each goes to: without an interval, all of them to
        the one block; by "file", all to block g mod K (g: the file's index among all files, so
        the blocks do not depend on the number of processes); by "rows", each file of R rows cut
        into K contiguous runs as rf.rankme(Z, ci=...) cuts a matrix (run k: rows ⌊kR/K⌋ up to
        ⌊(k+1)R/K⌋), run k to block (g + k) mod K. A pure function of the position: resuming,
        batch sizes and torchrun do not change it."""
        blocks = self.options.state_blocks
        if blocks == 1:
            yield None, rows
            return
        index = self.rank + unit.file * self.processes
        if self.options.blocks_by == "file":
            yield index % blocks, rows
            return
        size = self.file_sizes[report.path]
        start, stop = unit.first, unit.first + len(rows)
        run = ((start + 1) * blocks - 1) // size  # the run row `start` is in
        while start < stop:
            end = min(stop, (run + 1) * size // blocks)  # where run ends
            if end > start:
                yield (index + run) % blocks, rows[start - unit.first : end - unit.first]
            start, run = max(start, end), run + 1

    def end_file(self, states: dict[str, GramAccumulator], report: FileReport) -> None:
        state = states["rows"]
        if self.options.per_file:
            spectrum = state.spectrum()
            report.metrics = {name: spectrum.metric(name, self.options.eps) for name in self.options.metrics}
        report.rows = state.count

    def keep_file(self, report: FileReport) -> None:
        self.file_rows = 0

    def forget_file(self) -> None:
        self.rows -= self.file_rows
        self.file_rows = 0

    def full(self) -> bool:
        return self.cap is not None and self.rows >= self.cap

    def progress_total(self, reports: list[FileReport]) -> float:
        total = sum(r.rows for r in reports if r.error is None)
        return total if self.cap is None else min(total, self.cap)

    def fingerprint(self) -> dict[str, Any]:
        o = self.options
        return {"key": o.key, "column": o.column, "centered": o.centered, "nonfinite": o.nonfinite,
                "batch_rows": self.batch_rows, "max_rows": o.max_rows}  # fmt: skip

    def saved(self) -> dict[str, Any]:
        return {"rows": self.rows, "bytes": self.bytes, "file_rows": self.file_rows, "backend": self.backend}

    def restore(self, saved: dict[str, Any]) -> None:
        self.rows, self.bytes, self.file_rows = int(saved["rows"]), int(saved["bytes"]), int(saved["file_rows"])
        self.backend = saved["backend"]
        self.resumed_from_row = self.rows

    def result(self, outcome: Outcome, seconds: float) -> ScoreResult:
        total = outcome.states["rows"]
        if total.count == 0:
            raise ValueError("no rows were scored: every file was empty or skipped")
        spectrum = total.spectrum()
        metrics = {name: spectrum.metric(name, self.options.eps) for name in self.options.metrics}
        intervals = interval_report(total, self.options)
        backend = next((part["backend"] for part in outcome.gathered if part["backend"]), None)
        assert total.dim is not None
        return ScoreResult(
            metrics, total.count, total.dim, sum(part["bytes"] for part in outcome.gathered), seconds, backend,
            outcome.processes, outcome.reports, self.resumed_from_row, sum(r.dropped for r in outcome.reports),
            intervals and intervals.estimates, intervals and intervals.growth,
        )  # fmt: skip
