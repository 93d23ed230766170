"""Score a corpus of embedding files: stream every row into a float64 Gram state with a
reader thread running ahead, checkpoint the exact position atomically, resume after a crash
with no row lost or counted twice, and, under torch.distributed (torchrun), give each process
a disjoint set of files and sum the states with one all_reduce.

Each file is accumulated on its own and merged into the total when it ends, so a file that
turns out to be bad part-way through (with `skip_bad`) leaves nothing behind, and per-file
metrics come for free.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from rankme_fast._checks import check_positive_int
from rankme_fast._inputs import torch_dtype
from rankme_fast.accumulate import GramAccumulator
from rankme_fast.backends import check_choice
from rankme_fast.capping import local_share
from rankme_fast.distributed import world
from rankme_fast.io import BadFileError, Source, expand_paths, open_source
from rankme_fast.scoring import checkpoint
from rankme_fast.scoring.prefetch import BadFile, Prefetcher
from rankme_fast.spectrum import METRIC_NAMES
from rankme_fast.state import NonFiniteRowsError
from rankme_fast.update import check_nonfinite

BATCH_BYTES = 16 << 20  # default batch: 16 MiB of input rows (up to 4 are in flight: read, queued, used)


@dataclass(frozen=True)
class ScoreOptions:
    key: str | None = None
    column: str | None = None
    centered: bool = False
    precision: str = "exact"
    backend: str = "auto"
    nonfinite: str = "raise"  # or "drop": rows with NaN/Inf are skipped and counted
    batch_rows: int | None = None  # None: 16 MiB of rows
    max_rows: int | None = None  # over all processes, the first rows in file order
    metrics: tuple[str, ...] = ("rankme",)
    eps: float = 1e-7
    per_file: bool = False
    skip_bad: bool = False
    checkpoint: str | None = None
    checkpoint_every: int = 20  # batches
    resume: bool = False
    progress: bool = True


@dataclass
class FileReport:
    path: str
    rows: int
    dim: int | None
    dtype: str | None
    metrics: dict[str, float] | None = None
    error: str | None = None
    dropped: int = 0  # rows holding NaN or Inf, skipped under nonfinite="drop"


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

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"rows_per_second": self.rows_per_second}


def score_files(paths: list[str], options: ScoreOptions = ScoreOptions()) -> ScoreResult:
    """Score every row of every file (files, directories, globs). Collective under
    torch.distributed: every process calls it and gets the same result."""
    _check(options)
    rank, processes = world()
    everything = expand_paths(paths)
    mine = everything[rank::processes]
    reports = _survey(mine, options)
    good = [r for r in reports if r.error is None]
    row_bytes = max((r.dim * torch_dtype(r.dtype).itemsize for r in good), default=1)
    batch_rows = options.batch_rows or max(1, BATCH_BYTES // row_bytes)
    job = _Job(mine, reports, options, batch_rows, rank, processes)
    started = time.perf_counter()
    job.run()
    return job.finish(time.perf_counter() - started)


class _Job:
    def __init__(
        self, files: list[str], reports: list[FileReport], options: ScoreOptions, batch_rows: int, rank: int, world: int
    ) -> None:
        self.files, self.reports, self.options, self.batch_rows = files, reports, options, batch_rows
        self.rank, self.world = rank, world
        self.cap = local_share(options.max_rows)
        self.new_accumulator = functools.partial(
            GramAccumulator,
            centered=options.centered,
            precision=options.precision,
            backend=options.backend,
            nonfinite=options.nonfinite,
        )
        self.total, self.current = self.new_accumulator(), self.new_accumulator()
        self.position = (0, 0)  # (file, row): everything before it is in total + current
        self.rows = 0
        self.bytes = 0
        self.resumed_from_row = 0
        self.backend: str | None = None
        self.path = None if options.checkpoint is None else checkpoint.for_rank(options.checkpoint, rank, world)
        if options.resume and self.path is not None and self.path.exists():
            self._restore(checkpoint.load(self.path))

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        if self._full() or all(r.error is not None for r in self.reports[self.position[0] :]):
            self._finish_file(self.position[0])
            return
        progress = self._progress_bar()
        reader = Prefetcher(
            lambda i: open_source(self.files[i], key=self.options.key, column=self.options.column),
            len(self.files),
            self.position,
            self.batch_rows,
            keep_going=self.options.skip_bad,
        )
        batches = 0
        try:
            for item in reader:
                if self.reports[item.file].error is not None:  # bad at the survey: skipped
                    continue
                if item.file != self.position[0]:
                    self._finish_file(self.position[0])
                    self.position = (item.file, 0)
                if isinstance(item, BadFile):
                    self._skip(item.file, item.error)
                    continue
                self._add(item.file, item.first, item.rows, item.source)
                progress.update(len(item.rows))
                batches += 1
                if self.path is not None and batches % self.options.checkpoint_every == 0:
                    self._save()
                if self._full():
                    break
        finally:
            reader.close()
            progress.close()
        self._finish_file(self.position[0])
        if self.path is not None:
            self._save()

    def _add(self, file: int, first: int, rows: Any, source: Source) -> None:
        take = len(rows) if self.cap is None else min(len(rows), self.cap - self.rows)
        rows = rows[:take]
        before = self.current.count
        try:
            self.current.update(rows)
        except ValueError as error:  # non-finite rows (under nonfinite="raise"): the file is bad
            problem = str(error)
            if isinstance(error, NonFiniteRowsError):
                problem = (f"{error.bad} of {error.rows} rows hold NaN or Inf; nothing of this file was added "
                           "(--nonfinite drop skips such rows)")  # fmt: skip
            bad = BadFileError(self.files[file], f"rows {first}..{first + take - 1}: {problem}")
            if not self.options.skip_bad:
                raise bad from error
            self._skip(file, bad)
            return
        self.reports[file].dropped += take - (self.current.count - before)
        self.backend = self.current.last_backend
        self.rows += take
        self.bytes += take * source.dim * source.itemsize
        self.position = (file, first + take)

    def _skip(self, file: int, error: BadFileError) -> None:
        """Forget a file found bad while reading: nothing of it stays in the state."""
        self.rows -= self.current.count + self.reports[file].dropped
        self.current = self.new_accumulator()
        self.reports[file].dropped = 0
        self.reports[file].error = error.problem
        self.reports[file].metrics = None
        _warn(f"skipped {error}")

    def _finish_file(self, file: int) -> None:
        if self.current.count == 0:
            return
        if self.options.per_file:
            spectrum = self.current.spectrum()
            eps = self.options.eps
            self.reports[file].metrics = {name: spectrum.metric(name, eps) for name in self.options.metrics}
        self.reports[file].rows = self.current.count
        self.total.merge(self.current)
        self.current = self.new_accumulator()

    def _full(self) -> bool:
        return self.cap is not None and self.rows >= self.cap

    # -- checkpoints -----------------------------------------------------------------------------

    def _fingerprint(self) -> dict[str, Any]:
        o = self.options
        files = [(path, os.stat(path).st_size) for path in self.files]
        return {
            "files": files, "key": o.key, "column": o.column, "centered": o.centered, "precision": o.precision,
            "nonfinite": o.nonfinite, "batch_rows": self.batch_rows, "max_rows": o.max_rows, "rank": self.rank,
            "world": self.world,
        }

    def _save(self) -> None:
        assert self.path is not None
        checkpoint.save_atomic(
            {
                "job": self._fingerprint(),
                "position": list(self.position),
                "rows": self.rows,
                "bytes": self.bytes,
                "total": self.total.state_dict(),
                "current": self.current.state_dict(),
                "reports": [asdict(r) for r in self.reports],
            },
            self.path,
        )

    def _restore(self, state: dict[str, Any]) -> None:
        expected, found = self._fingerprint(), state.get("job", {})
        differing = [name for name in expected if found.get(name) != expected[name] and name != "files"]
        if [tuple(f) for f in found.get("files", [])] != [tuple(f) for f in expected["files"]]:
            differing.insert(0, "files (paths or sizes)")
        if differing:
            raise ValueError(f"{self.path}: this checkpoint is for a different job ({', '.join(differing)} differ)")
        self.total = GramAccumulator.from_state_dict(state["total"], backend=self.options.backend)
        self.current = GramAccumulator.from_state_dict(state["current"], backend=self.options.backend)
        self.position, self.rows, self.bytes = tuple(state["position"]), int(state["rows"]), int(state["bytes"])
        self.reports = [FileReport(**r) for r in state["reports"]]
        self.resumed_from_row = self.rows

    # -- the end ---------------------------------------------------------------------------------

    def finish(self, seconds: float) -> ScoreResult:
        reports, scored_bytes = self.reports, self.bytes
        if self.world > 1:
            self.total.all_reduce()
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, (reports, scored_bytes, self.backend))
            reports = [r for part in gathered for r in part[0]]
            scored_bytes = sum(part[1] for part in gathered)
            self.backend = next((part[2] for part in gathered if part[2]), None)
        if self.total.count == 0:
            raise ValueError("no rows were scored: every file was empty or skipped")
        spectrum = self.total.spectrum()
        metrics = {name: spectrum.metric(name, self.options.eps) for name in self.options.metrics}
        assert self.total.dim is not None
        return ScoreResult(
            metrics, self.total.count, self.total.dim, scored_bytes, seconds, self.backend, self.world,
            reports, self.resumed_from_row, sum(r.dropped for r in reports),
        )

    def _progress_bar(self) -> Any:
        from tqdm import tqdm

        total = sum(r.rows for r in self.reports if r.error is None)
        if self.cap is not None:
            total = min(total, self.cap)
        return tqdm(
            total=total, initial=self.rows, unit="rows", unit_scale=True, desc="scoring",
            disable=not self.options.progress or self.rank != 0, dynamic_ncols=True,
        )


def _survey(files: list[str], options: ScoreOptions) -> list[FileReport]:
    """Open every file once (headers only) to check it and learn its rows, D and dtype."""
    reports = []
    dim, first = None, None
    for path in files:
        try:
            source = open_source(path, key=options.key, column=options.column)
            source.close()
            if dim is not None and source.dim != dim:
                raise BadFileError(path, f"D={source.dim} but {first} has D={dim}")
            dim, first = dim or source.dim, first or path
            reports.append(FileReport(path, source.rows, source.dim, source.dtype))
        except BadFileError as error:
            if not options.skip_bad:
                raise
            _warn(f"skipped {error}")
            reports.append(FileReport(path, 0, None, None, error=error.problem))
    return reports


def _check(options: ScoreOptions) -> None:
    check_choice(options.backend, options.precision)
    check_nonfinite(options.nonfinite)
    unknown = [m for m in options.metrics if m not in METRIC_NAMES]
    if unknown or not options.metrics:
        raise ValueError(f"metrics must be among {', '.join(METRIC_NAMES)}; got {list(options.metrics)}")
    if "nesum" in options.metrics and not options.centered:
        raise ValueError("nesum is defined on the covariance spectrum: pass --centered")
    for name in ("batch_rows", "max_rows", "checkpoint_every"):
        check_positive_int(getattr(options, name), name, optional=True)
    if options.resume and options.checkpoint is None:
        raise ValueError("resume needs a checkpoint path")
    if options.checkpoint is not None and not Path(options.checkpoint).parent.is_dir():
        raise ValueError(f"checkpoint directory {Path(options.checkpoint).parent} does not exist")


def _warn(message: str) -> None:
    print(f"rankme-fast score: {message}", file=sys.stderr)


def init_distributed_from_env() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); True when it did."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True
