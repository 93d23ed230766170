"""RankMe over training: the study's (N, D) grid trained again with early-stopping audio that
shares nothing with the probe clips (a separate rendering of the pool's kind), recording clip
RankMe (raw and centred) of the probe audio at every validation check and the probes'
accuracy at √2-spaced checkpoints. Each run is one JSON file under `out/trajectory/runs/`; an
interrupted pre-training resumes from `out/trajectory/checkpoints/` with what it observed."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import rankme_fast as rf
from rankme_fast.audio import Benchmark, make_benchmark, probe
from rankme_fast.audio.features import MelConfig, MelSpectrogram
from rankme_fast.audio.models import AudioModel
from rankme_fast.audio.pretrain import FrameCorpus
from rankme_fast.study.presets import StudyPreset
from rankme_fast.study.runner import StudyData, run_resumable

VALIDATION_SEED = 1000  # the rendering the early-stopping audio comes from: no probe clip, no pool clip


def probe_steps(eval_every: int, cap: int) -> list[int]:
    """The validation checks at which the probes run: multiples of `eval_every` nearest to
    eval_every·2^(k/2), up to `cap` (√2-spaced: about 8 for a run of a few thousand steps)."""
    steps = {eval_every * max(1, round(2 ** (k / 2))) for k in range(2 * int(math.log2(max(cap / eval_every, 1))) + 2)}
    return sorted(step for step in steps if step <= cap)


class ProbeAudio:
    """The benchmark's clips as log-mel, computed once, embedded as clip means by a model in
    batches (the same vectors `extract` gives clip by clip), then RankMe and the probes."""

    def __init__(self, benchmark: Benchmark, mel: MelConfig = MelConfig()):  # noqa: B008
        features = MelSpectrogram(mel)
        self.benchmark = benchmark
        self.mel = torch.stack([features(torch.from_numpy(wave), log=True) for wave in benchmark.waves])

    @torch.no_grad()
    def clip_embeddings(self, model: AudioModel, batch: int = 256) -> np.ndarray:
        """(clips, emb_dim) float32: each clip's frame embeddings (in windows of
        `config.frames`, as `AudioModel.embed_frames`) averaged over time."""
        window = model.config.frames
        out = []
        for mel in self.mel.split(batch):
            frames = torch.cat([model(mel[:, start : start + window]) for start in range(0, mel.shape[1], window)], 1)
            out.append(frames.mean(dim=1))
        return torch.cat(out).float().numpy()

    def rankme(self, clips: np.ndarray) -> dict[str, float]:
        return {"clip_rankme": rf.rankme(clips), "clip_rankme_centered": rf.rankme(clips, centered=True)}

    def accuracies(self, clips: np.ndarray) -> dict[str, float]:
        """Linear-probe accuracy on every task of the benchmark, and their mean."""
        row = {}
        for name, task in self.benchmark.tasks.items():
            result = probe(clips[task.train], task.labels[task.train], clips[task.test], task.labels[task.test])
            row[f"accuracy_{name}"] = result.accuracy
        row["mean_accuracy"] = float(np.mean(list(row.values())))
        return row


@dataclasses.dataclass
class Observer:
    """What a trajectory run records at a validation check: clip RankMe always, the probes at
    `probe_at` steps (and the seconds both took, so the training time stays separable)."""

    audio: ProbeAudio
    probe_at: frozenset[int]

    def __call__(self, step: int, model: AudioModel) -> dict[str, Any]:
        started = time.perf_counter()
        clips = self.audio.clip_embeddings(model)
        row: dict[str, Any] = self.audio.rankme(clips)
        if step in self.probe_at:
            row |= self.audio.accuracies(clips)
        return row | {"observe_seconds": time.perf_counter() - started}


def clean_split(preset: StudyPreset, data: StudyData, progress: bool = False) -> StudyData:
    """The study's data with the early-stopping audio replaced by a separate rendering of the
    pool's kind (its held-out audio, on which the loss is reported, unchanged)."""
    waves = make_benchmark(preset.pool_preset, seed=VALIDATION_SEED, progress=progress).waves
    return dataclasses.replace(data, validation=FrameCorpus.from_waves(waves, data.benchmark.sr))


def run_trajectories(
    preset: StudyPreset, data: StudyData, out: Path, say: Any = print, minutes: float | None = None
) -> list[dict[str, Any]]:
    """Every grid run with the clean split and its trajectory (finished ones read back). With
    `minutes`, no new run starts after that long: the rest is left for a later call."""
    if preset.training.patience is None:
        raise ValueError(f"preset {preset.name!r} trains for a fixed number of steps: no checks to observe")
    observer = Observer(ProbeAudio(data.benchmark),
                        frozenset(probe_steps(preset.training.eval_every, preset.training.steps)))  # fmt: skip
    return run_resumable(preset.grid(), clean_split(preset, data), out / "trajectory", "trajectory", say,
                         minutes=minutes, observe=observer)  # fmt: skip
