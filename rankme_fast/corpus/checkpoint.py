"""Atomic checkpoints of a corpus job: written to a temporary file beside the target, fsynced,
then renamed over it, so a kill at any moment leaves either the old checkpoint or the new one,
never a torn file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

FORMAT = "rankme_fast.corpus-checkpoint"
VERSION = 1
EARLIER_FORMATS = ("rankme_fast.score-checkpoint",)  # written before score and audio shared one engine


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        torch.save({"format": FORMAT, "version": VERSION, **state}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by `save_atomic` (plain tensors and Python values only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a readable scoring checkpoint ({error})") from error
    if isinstance(state, dict) and state.get("format") in EARLIER_FORMATS:
        raise ValueError(f"{path}: a checkpoint of an earlier version of rankme-fast, which cannot be resumed; "
                         "start again without --resume")  # fmt: skip
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION:
        raise ValueError(f"{path}: not a rankme-fast checkpoint")
    return state


def for_rank(path: str | Path, rank: int, world: int) -> Path:
    """One checkpoint per process: state.pt -> state.rank1.pt when several processes run."""
    path = Path(path)
    return path if world == 1 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")
