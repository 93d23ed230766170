"""The one engine every command that scores a corpus of files runs on (`rankme-fast score`,
`rankme-fast audio`): files → units (batches of rows, decoded windows) → per-file float64
states, merged into the totals when a file ends; atomic checkpoints of the exact position and
exact resume; per-file reports; bad files stopping the job or skipped (`skip_bad`) leaving
nothing behind; under torch.distributed (torchrun) every W-th file per process and the states
summed; a progress bar.

A command supplies only what is its own, as a `Corpus`: how a file is surveyed, how its units
are read and added to the states, and what a file's end adds.
"""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch.distributed as dist

from rankme_fast.accumulate import GramAccumulator
from rankme_fast.corpus import checkpoint
from rankme_fast.corpus.options import BadFileError, FileReport, JobOptions
from rankme_fast.distributed import world


@dataclass
class Unit:
    """A piece of one file ready to add: file index, first position in the file (row or window)
    and how many positions it covers, its payload, or the error that stopped reading it."""

    file: int
    first: int
    count: int
    payload: Any = None
    error: BadFileError | None = None


class Corpus(ABC):
    """What a command supplies to the engine. `files` are this process's files."""

    label: str  # in messages, e.g. "rankme-fast score"
    progress_unit: str = "rows"

    def __init__(self, files: list[str], options: JobOptions) -> None:
        self.files, self.options = files, options

    @abstractmethod
    def survey(self, path: str) -> FileReport:
        """Check a file without reading it all (BadFileError if it cannot be scored)."""

    @abstractmethod
    def new_states(self) -> dict[str, GramAccumulator]:
        """Fresh states for one file (and, merged, for the totals)."""

    @abstractmethod
    def units(self, reports: list[FileReport], start: tuple[int, int]) -> AbstractContextManager[Iterator[Unit]]:
        """Every unit from position `start` on, in order (files whose survey failed are skipped)."""

    @abstractmethod
    def add(self, unit: Unit, states: dict[str, GramAccumulator], report: FileReport) -> float:
        """Add a unit to the file's states; how far the progress bar moves. BadFileError marks
        the file bad (all of it is then forgotten). A corpus that takes only part of a unit (a
        row cap reached) lowers `unit.count` to what it took."""

    def end_file(self, states: dict[str, GramAccumulator], report: FileReport) -> None:
        """A file ended well, before its states join the totals (per-file metrics, say)."""
        return None  # nothing of its own by default

    def keep_file(self, report: FileReport) -> None:
        """The file's states joined the totals: keep what else the corpus gathered for it."""
        return None  # nothing of its own by default

    def forget_file(self) -> None:
        """The file was bad or empty: drop what else the corpus gathered for it."""
        return None  # nothing of its own by default

    def full(self) -> bool:
        """True when the job should stop early (a row cap reached)."""
        return False

    def progress_total(self, reports: list[FileReport]) -> float:
        return sum(r.rows for r in reports if r.error is None)

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must have been written with to be resumed (besides the files)."""
        return {}

    def saved(self) -> dict[str, Any]:
        """The corpus's own part of a checkpoint (tensors and plain values)."""
        return {}

    def restore(self, saved: dict[str, Any]) -> None:
        """Take back `saved()` of a checkpoint."""
        return None  # nothing of its own by default


@dataclass
class Outcome:
    """A finished job: the total states (all processes'), every process's file reports, the
    corpus's own parts gathered from every process, and whether it resumed a checkpoint."""

    states: dict[str, GramAccumulator]
    reports: list[FileReport]
    gathered: list[dict[str, Any]] = field(default_factory=list)
    resumed: bool = False
    processes: int = 1


def run_job(corpus: Corpus, everything: list[str], options: JobOptions) -> Outcome:
    """Run `corpus` over this process's share of `everything` (a collective under
    torch.distributed: every process calls it and gets the same outcome)."""
    rank, processes = world()
    job = _Job(corpus, options, rank, processes)
    job.run()
    return job.finish()


class _Job:
    def __init__(self, corpus: Corpus, options: JobOptions, rank: int, processes: int) -> None:
        self.corpus, self.options, self.rank, self.processes = corpus, options, rank, processes
        self.files = corpus.files
        self.reports = [self._survey(path) for path in self.files]
        self.total, self.current = corpus.new_states(), corpus.new_states()
        self.position = (0, 0)  # (file, position in it): everything before is in total + current
        self.resumed = False
        self.path = None if options.checkpoint is None else checkpoint.for_rank(options.checkpoint, rank, processes)
        if options.resume and self.path is not None and self.path.exists():
            self._restore(checkpoint.load(self.path))

    def _survey(self, path: str) -> FileReport:
        try:
            return self.corpus.survey(path)
        except BadFileError as error:
            if not self.options.skip_bad:
                raise
            self._warn(f"skipped {error}")
            return FileReport(path, error=error.problem)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        progress = self._progress_bar()
        done = 0
        try:
            with self.corpus.units(self.reports, self.position) as units:
                for unit in units:
                    if self.corpus.full():
                        break
                    if unit.file != self.position[0]:
                        self._end_file(self.position[0])
                        self.position = (unit.file, 0)
                    if self.reports[unit.file].error is not None:  # found bad earlier: the rest is skipped
                        continue
                    try:
                        if unit.error is not None:
                            raise unit.error
                        progress.update(self.corpus.add(unit, self.current, self.reports[unit.file]))
                    except BadFileError as error:
                        if not self.options.skip_bad:
                            raise
                        self._skip(unit.file, error)
                        continue
                    self.position = (unit.file, unit.first + unit.count)
                    done += 1
                    if self.path is not None and done % self.options.checkpoint_every == 0:
                        self._save()
        finally:
            progress.close()
        self._end_file(self.position[0])
        if self.path is not None:
            self._save()

    def _end_file(self, file: int) -> None:
        states = self.current
        if file < len(self.files) and self.reports[file].error is None and any(s.count for s in states.values()):
            self.corpus.end_file(states, self.reports[file])
            for name, state in states.items():
                self.total[name].merge(state)
            self.corpus.keep_file(self.reports[file])
        else:
            self.corpus.forget_file()
        self.current = self.corpus.new_states()

    def _skip(self, file: int, error: BadFileError) -> None:
        """Forget a file found bad while reading it: nothing of it stays in the states."""
        report = self.reports[file]
        report.rows = report.windows = report.dropped = 0
        report.metrics, report.error = None, error.problem
        self.current = self.corpus.new_states()
        self.corpus.forget_file()
        self._warn(f"skipped {error}")

    def _warn(self, message: str) -> None:
        print(f"{self.corpus.label}: {message}", file=sys.stderr, flush=True)

    # -- checkpoints ------------------------------------------------------------------------------

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "files": [[path, os.stat(path).st_size] for path in self.files],
            "rank": self.rank,
            "processes": self.processes,
            "precision": self.options.precision,
            "blocks": self.options.state_blocks,
            **self.corpus.fingerprint(),
        }

    def _save(self) -> None:
        assert self.path is not None
        checkpoint.save_atomic(
            {
                "job": self._fingerprint(),
                "position": list(self.position),
                "total": {name: state.state_dict() for name, state in self.total.items()},
                "current": {name: state.state_dict() for name, state in self.current.items()},
                "reports": [asdict(r) for r in self.reports],
                "corpus": self.corpus.saved(),
            },
            self.path,
        )

    def _restore(self, saved: dict[str, Any]) -> None:
        expected, found = self._fingerprint(), saved.get("job", {})
        differing = [name for name in expected if name != "files" and found.get(name) != expected[name]]
        if [list(f) for f in found.get("files", [])] != expected["files"]:
            differing.insert(0, "files (paths or sizes)")
        if differing:
            raise ValueError(f"{self.path}: this checkpoint is for a different job ({', '.join(differing)} differ)")
        backend = self.options.backend
        self.total = {n: GramAccumulator.from_state_dict(s, backend=backend) for n, s in saved["total"].items()}
        self.current = {n: GramAccumulator.from_state_dict(s, backend=backend) for n, s in saved["current"].items()}
        self.position = tuple(saved["position"])
        self.reports = [FileReport(**r) for r in saved["reports"]]
        self.corpus.restore(saved["corpus"])
        self.resumed = True

    # -- the end ----------------------------------------------------------------------------------

    def finish(self) -> Outcome:
        reports, gathered = self.reports, [self.corpus.saved()]
        if self.processes > 1:
            for state in self.total.values():
                state.all_reduce()
            parts: list[Any] = [None] * self.processes
            dist.all_gather_object(parts, (reports, gathered[0]))
            reports = [r for part in parts for r in part[0]]
            gathered = [part[1] for part in parts]
        return Outcome(self.total, reports, gathered, self.resumed, self.processes)

    def _progress_bar(self) -> Any:
        from tqdm import tqdm

        total = self.corpus.progress_total(self.reports)
        return tqdm(total=round(total, 1), unit=self.corpus.progress_unit, unit_scale=True, desc=self.corpus.label,
                    disable=not self.options.progress or self.rank != 0, dynamic_ncols=True)  # fmt: skip
