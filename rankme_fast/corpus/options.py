"""What every corpus job shares: its options (and their command-line flags), the report of one
file, and the error that marks a file as bad."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from rankme_fast._checks import check_positive_int
from rankme_fast.backends import check_choice
from rankme_fast.spectrum import METRIC_NAMES
from rankme_fast.uncertainty import check_level


class BadFileError(ValueError):
    """A file that cannot be scored: unreadable, corrupt, empty, wrong key/column or D."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem

    def __reduce__(self) -> tuple:  # crosses from worker processes intact
        return (type(self), (self.path, self.problem))


@dataclass(frozen=True)
class JobOptions:
    """Options of every corpus job; each command's options extend this type."""

    precision: str = "exact"
    backend: str = "auto"
    metrics: tuple[str, ...] = ("rankme",)
    eps: float = 1e-7
    per_file: bool = False  # metrics of each file too
    skip_bad: bool = False  # report and skip bad files instead of stopping
    checkpoint: str | None = None  # save the state and the position here (atomically)
    checkpoint_every: int = 20  # units (batches, decoding tasks) between checkpoints
    resume: bool = False  # continue from `checkpoint` if it exists
    progress: bool = True
    ci: float | None = None  # a confidence level: each metric with its jackknife interval too
    blocks: int = 10  # block states for `ci` (how rows go to them is each command's own)
    growth: bool = False  # with ci: RankMe against N along the blocks, and its fitted plateau (~K² eigensolves)

    @property
    def state_blocks(self) -> int:
        """Blocks of each state: `blocks` with an interval, else one."""
        return self.blocks if self.ci is not None else 1

    def check(self) -> None:
        """ValueError naming the first option that is wrong."""
        check_choice(self.backend, self.precision)
        unknown = [m for m in self.metrics if m not in METRIC_NAMES]
        if unknown or not self.metrics:
            raise ValueError(f"metrics must be among {', '.join(METRIC_NAMES)}; got {list(self.metrics)}")
        check_positive_int(self.checkpoint_every, "checkpoint_every")
        if self.resume and self.checkpoint is None:
            raise ValueError("resume needs a checkpoint path")
        if self.ci is not None:
            check_level(self.ci)
            check_positive_int(self.blocks, "blocks")
            if self.blocks < 2:
                raise ValueError(f"an interval needs blocks >= 2 (default 10), got blocks={self.blocks}")
        elif self.growth:
            raise ValueError("growth needs ci (the curve's plateau comes with an interval)")
        if self.checkpoint is not None and not Path(self.checkpoint).parent.is_dir():
            raise ValueError(f"checkpoint directory {Path(self.checkpoint).parent} does not exist")


def add_job_arguments(parser: argparse.ArgumentParser, *, checkpoint: str, unit: str) -> None:
    """The command-line flags of JobOptions. `checkpoint` says when or where saves go, `unit`
    what --checkpoint-every counts."""
    parser.add_argument("--precision", default="exact", choices=["exact", "fast"])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--metrics", default="rankme", help=f"comma-separated, of {', '.join(METRIC_NAMES)}")
    parser.add_argument("--eps", type=float, default=1e-7, help="RankMe's epsilon")
    parser.add_argument("--json", help="also write the result to this JSON file")
    parser.add_argument("--per-file", action="store_true", help="metrics of each file too")
    parser.add_argument("--skip-bad", action="store_true", help="report and skip bad files instead of stopping")
    parser.add_argument("--checkpoint", help=f"save state and position here (atomically), {checkpoint}")
    parser.add_argument("--checkpoint-every", type=int, default=20, metavar="K", help=f"{unit} between checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--ci", type=float, nargs="?", const=0.95, metavar="LEVEL",
                        help="each metric with its standard error and confidence interval (delete-one-block "
                        "jackknife; LEVEL default 0.95)")  # fmt: skip
    parser.add_argument("--blocks", type=int, default=10, metavar="K", help="block states for --ci (default 10)")
    parser.add_argument("--growth", action="store_true",
                        help="with --ci: RankMe at N/K, 2N/K, ..., N and its fitted plateau (~K² eigensolves)")


def job_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """JobOptions' fields from flags added by `add_job_arguments`."""
    values = {field.name: getattr(args, field.name) for field in fields(JobOptions) if hasattr(args, field.name)}
    values["metrics"] = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    values["progress"] = not args.no_progress
    return values


@dataclass
class FileReport:
    """What one file gave: rows added (embeddings; frames, for audio), its shape and dtype
    where it has one, its length in seconds and windows read (audio), per-file metrics, the
    error that made it skipped, and rows left out for NaN/Inf."""

    path: str
    rows: int = 0
    dim: int | None = None
    dtype: str | None = None
    seconds: float | None = None
    windows: int = 0
    metrics: dict[str, float] | None = None
    error: str | None = None
    dropped: int = 0
