"""Stream an encoder's embeddings of a dataset straight into Gram accumulators: frame-level
embeddings of hours of audio are never held, only (optionally) one vector per clip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rankme_fast.accumulate import GramAccumulator
from rankme_fast.audio.encoders.encoder import AudioEncoder


@dataclass
class Extraction:
    """What `extract` produced: the accumulators (updated only if every clip succeeded), the
    kept clip embeddings (clips, dim) or None, and how many clips and frames were embedded."""

    accumulators: list[GramAccumulator]
    clip_embeddings: np.ndarray | None
    clips: int
    frames: int
    seconds: float

    @property
    def accumulator(self) -> GramAccumulator:
        return self.accumulators[0]


def extract(
    encoder: AudioEncoder,
    dataset: Any,
    *,
    level: str = "clip",
    accumulator: GramAccumulator | Sequence[GramAccumulator] | None = None,
    batch_size: int = 64,
    keep_clips: bool = True,
    indices: Sequence[int] | np.ndarray | None = None,
    sr: int | None = None,
    progress: bool = True,
) -> Extraction:
    """Embed every clip of `dataset` (a `Benchmark`, or a sequence of 1-D waves with `sr=`) and
    feed `level="clip"` means or every `level="frame"` embedding into `accumulator` (default: a
    new exact `GramAccumulator`; pass several, e.g. raw and centred, to fill them in one pass).

    Rows reach the accumulators every `batch_size` clips, through fresh accumulators merged into
    the given ones only at the end: a clip that fails raises an error naming it and leaves the
    caller's accumulators untouched."""
    if level not in ("clip", "frame"):
        raise ValueError(f"level must be 'clip' or 'frame', got {level!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    waves, names, sr = _clips(dataset, sr)
    order = np.arange(len(waves)) if indices is None else np.asarray(indices, dtype=np.int64)
    targets = _targets(accumulator, encoder.dim)
    scratch = [
        GramAccumulator(encoder.dim, centered=a.centered, precision=a.precision, backend=a.backend) for a in targets
    ]
    kept = np.empty((len(order), encoder.dim), dtype=np.float32) if keep_clips else None
    pending: list[torch.Tensor] = []
    frames = 0
    seconds = 0.0
    bar = _progress(len(order), progress, encoder.name)
    for position, index in enumerate(order):
        embedded = encoder.embed(waves[index], sr, name=names[index])
        frames += len(embedded)
        seconds += len(waves[index]) / sr
        clip = embedded.values.mean(dim=0)
        if kept is not None:
            kept[position] = clip.numpy()
        pending.append(embedded.values if level == "frame" else clip[None])
        if len(pending) == batch_size or position == len(order) - 1:
            rows = torch.cat(pending)
            for acc in scratch:
                acc.update(rows)
            pending.clear()
        bar.update(1)
    bar.close()
    for target, acc in zip(targets, scratch, strict=True):
        if acc.count:
            target.merge(acc)
    return Extraction(targets, kept, len(order), frames, seconds)


def _clips(dataset: Any, sr: int | None) -> tuple[Sequence, list[str], int]:
    if hasattr(dataset, "waves") and hasattr(dataset, "sr"):
        names = list(getattr(dataset, "names", [f"clip {i}" for i in range(len(dataset.waves))]))
        return dataset.waves, names, int(dataset.sr)
    if sr is None:
        raise TypeError("extract: a plain sequence of waves needs sr=")
    if isinstance(dataset, (str, bytes)) or not isinstance(dataset, (Sequence, np.ndarray)):
        raise TypeError(f"extract: dataset must be a Benchmark or a sequence of waves, got {type(dataset).__name__}")
    return dataset, [f"clip {i}" for i in range(len(dataset))], sr


def _targets(accumulator: Any, dim: int) -> list[GramAccumulator]:
    if accumulator is None:
        return [GramAccumulator(dim)]
    targets = [accumulator] if isinstance(accumulator, GramAccumulator) else list(accumulator)
    for target in targets:
        if not isinstance(target, GramAccumulator):
            raise TypeError(f"accumulator must be a GramAccumulator, got {type(target).__name__}")
        if target.dim is not None and target.dim != dim:
            raise ValueError(f"accumulator has dim={target.dim} but the encoder gives {dim}")
    return targets


def _progress(total: int, enabled: bool, name: str):
    return tqdm(total=total, desc=f"embedding with {name}", unit="clip", disable=not enabled)
