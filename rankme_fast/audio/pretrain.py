"""Self-supervised pre-training of the `models` family on unlabelled log-mel frames.

Objectives (both an L1 loss on per-band-normalised log-mel, so their values are comparable):
  apc  autoregressive predictive coding (Chung et al. 2019, the objective of Droppo & Elibol
       2021): a causal model predicts the frame `shift` steps ahead of each frame.
  mae  masked reconstruction: spans of input frames are zeroed and the model reconstructs them
       (the loss counts masked frames only).
Data size D is counted in audio seconds and frames; compute as C ≈ 6·N·tokens (Kaplan et al.),
tokens = steps × batch × frames. Two ways to train: a fixed number of steps on a cosine
schedule, or to convergence (`patience`): a constant rate after warm-up, the loss on
validation audio checked every `eval_every` steps, training stopped when it has not improved
for `patience` checks (or at the `steps` cap), and the best checkpoint kept and measured on
the held-out audio. Deterministic for a seed; checkpoints resume exactly."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from rankme_fast.audio.features import MelConfig, MelSpectrogram
from rankme_fast.audio.models import AudioModel, EncoderConfig
from rankme_fast.audio.waves import check_wave, resample

OBJECTIVES = ("apc", "mae")


class FrameCorpus:
    """Log-mel frames (frames, n_mels) float32 of clips joined end to end, and how many seconds
    of audio they are."""

    def __init__(self, frames: torch.Tensor, seconds: float, frame_rate: float = 100.0):
        if frames.ndim != 2 or len(frames) == 0:
            raise ValueError(f"a FrameCorpus needs (frames, n_mels) with frames > 0, got {tuple(frames.shape)}")
        self.frames, self.seconds, self.frame_rate = frames, float(seconds), float(frame_rate)

    @classmethod
    def from_waves(cls, waves: Sequence[np.ndarray] | np.ndarray, sr: int, mel: MelConfig = MelConfig()) -> FrameCorpus:  # noqa: B008
        """Log-mel of each clip (resampled from `sr` if needed), in the given order."""
        features = MelSpectrogram(mel)
        clips = [resample(check_wave(w, sr, f"clip {i}"), sr, mel.sr) for i, w in enumerate(waves)]
        with torch.inference_mode():
            frames = torch.cat([features(torch.from_numpy(c), log=True) for c in clips])
        return cls(frames.float(), sum(len(c) for c in clips) / mel.sr, features.frame_rate)

    def __len__(self) -> int:
        return len(self.frames)

    def take(self, seconds: float) -> FrameCorpus:
        """The first `seconds` of audio (at least one frame)."""
        if not seconds > 0:
            raise ValueError(f"seconds must be positive, got {seconds!r}")
        if seconds > self.seconds * (1 + 1e-9):
            raise ValueError(f"asked for {seconds:g} s of audio, the corpus has {self.seconds:g} s")
        count = max(1, round(len(self) * seconds / self.seconds))
        return FrameCorpus(self.frames[:count], seconds, self.frame_rate)

    def windows(self, count: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """(count, length, n_mels) windows at random offsets."""
        if length > len(self):
            raise ValueError(f"windows of {length} frames do not fit in a corpus of {len(self)} frames")
        starts = torch.randint(0, len(self) - length + 1, (count,), generator=generator)
        return self.frames[starts[:, None] + torch.arange(length)]


@dataclass(frozen=True)
class PretrainConfig:
    """How to pre-train: objective, steps, batch (windows per step), AdamW learning rate with
    linear warm-up and cosine decay to 10 %, APC `shift`, MAE masking (`mask_fraction` of the
    frames in spans of `mask_span`), seed, held-out windows for the final loss.

    With `patience`, training runs to convergence instead: the rate stays constant after
    warm-up, the loss on validation audio is checked every `eval_every` steps, and training stops after
    `patience` checks without a relative improvement of `min_improvement`; `steps` is then a cap."""

    objective: str = "apc"
    steps: int = 200
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 20
    shift: int = 3
    mask_fraction: float = 0.4
    mask_span: int = 5
    seed: int = 0
    eval_windows: int = 64
    patience: int | None = None
    eval_every: int = 100
    min_improvement: float = 1e-3

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        for name in ("steps", "batch_size", "shift", "mask_span", "eval_windows", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"PretrainConfig.{name} must be a positive int, got {value!r}")
        if self.patience is not None and (
            not isinstance(self.patience, int) or isinstance(self.patience, bool) or self.patience <= 0
        ):
            raise ValueError(f"PretrainConfig.patience must be None or a positive int, got {self.patience!r}")
        if not 0 <= self.min_improvement < 1:
            raise ValueError(f"min_improvement must be in [0, 1), got {self.min_improvement!r}")
        if not 0 < self.mask_fraction < 1:
            raise ValueError(f"mask_fraction must be in (0, 1), got {self.mask_fraction!r}")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup < 0:
            raise ValueError("lr must be positive, weight_decay and warmup non-negative")


@dataclass
class PretrainResult:
    """The trained model, per-step training losses, the held-out loss, and the scaling
    variables: N (encoder parameters), D (audio seconds and frames), tokens and C ≈ 6·N·tokens
    (of the steps up to the returned model). Trained to convergence, also the validation curve
    [(step, loss)], what `observe` returned at each check, the best step, how training stopped
    ("patience" or "cap") and the epochs of the training audio seen (up to the stop)."""

    model: AudioModel
    head: nn.Module
    losses: list[float]
    held_out_loss: float | None
    n_params: int
    data_seconds: float
    data_frames: int
    tokens: int
    seconds: float
    resumed_from: int = 0
    best_step: int = 0
    stopped_by: str = "steps"
    curve: list[tuple[int, float]] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    epochs: float = 0.0

    @property
    def compute(self) -> float:
        return 6.0 * self.n_params * self.tokens

    @property
    def train_loss(self) -> float:
        """Mean training loss over the last tenth of the steps."""
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return float(np.mean(tail))


def window_length(config: EncoderConfig, settings: PretrainConfig) -> int:
    """Frames per training window: the model's input length, plus the shift APC predicts ahead."""
    return config.frames + (settings.shift if settings.objective == "apc" else 0)


def _mask(batch: int, length: int, settings: PretrainConfig, generator: torch.Generator) -> torch.Tensor:
    spans = max(1, round(length * settings.mask_fraction / settings.mask_span))
    starts = torch.randint(0, max(1, length - settings.mask_span + 1), (batch, spans), generator=generator)
    covered = starts[..., None] + torch.arange(settings.mask_span)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    mask.scatter_(1, covered.reshape(batch, -1).clamp_max(length - 1), True)
    return mask


def objective_loss(
    model: AudioModel, head: nn.Module, x: torch.Tensor, settings: PretrainConfig, generator: torch.Generator
) -> torch.Tensor:
    """The objective's L1 loss on a batch of normalised log-mel windows (batch, frames, n_mels)."""
    if settings.objective == "apc":
        k = settings.shift
        return (head(model(x[:, :-k], normalised=True)) - x[:, k:]).abs().mean()
    mask = _mask(x.shape[0], x.shape[1], settings, generator)
    prediction = head(model(x.masked_fill(mask[..., None], 0.0), normalised=True))
    return (prediction - x).abs()[mask].mean()


def held_out_loss(model: AudioModel, head: nn.Module, corpus: FrameCorpus, settings: PretrainConfig) -> float:
    """The objective on `eval_windows` fixed windows of `corpus` (the same windows and masks
    for every model with the same input length, whatever its training seed)."""
    generator = torch.Generator().manual_seed(12345)
    windows = corpus.windows(settings.eval_windows, window_length(model.config, settings), generator)
    with torch.inference_mode():
        losses = [
            objective_loss(model, head, model.normalise(chunk), settings, generator).item()
            for chunk in windows.split(16)
        ]
    return float(np.mean(losses))


def pretrain(
    config: EncoderConfig,
    train: FrameCorpus,
    settings: PretrainConfig = PretrainConfig(),
    *,
    held_out: FrameCorpus | None = None,
    validation: FrameCorpus | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 50,
    observe: Callable[[int, AudioModel], dict[str, Any]] | None = None,
    progress: bool = False,
) -> PretrainResult:
    """Pre-train a fresh `AudioModel(config)` on `train` and measure the loss on `held_out`.

    With `settings.patience`, `validation` (audio apart from `held_out`) is required: it
    decides when to stop, and the best model's loss on `held_out` is the result. With `checkpoint`, the full
    training state (model, head, optimiser, schedule, data RNG, losses, the best model so far)
    is written there atomically every `checkpoint_every` steps and at the end; a run started
    again with the same path resumes from it and ends bit-identical to an uninterrupted one.
    With `observe`, `observe(step, model)` is called at every validation check (model in eval
    mode, validation loss already recorded); what it returns is kept, with the checkpoint, in
    the result's `observations`."""
    if settings.objective == "apc" and not config.causal:
        raise ValueError("APC predicts future frames: it needs EncoderConfig(causal=True)")
    length = window_length(config, settings)
    if length > len(train) or (held_out is not None and length > len(held_out)):
        raise ValueError(f"windows of {length} frames do not fit in the data ({len(train)} frames)")
    until_converged = settings.patience is not None
    if until_converged and validation is None:
        raise ValueError("training to convergence (patience) needs validation audio to watch")
    if validation is not None and length > len(validation):
        raise ValueError(f"windows of {length} frames do not fit in the validation audio ({len(validation)} frames)")
    torch.manual_seed(settings.seed)
    model = AudioModel(config)
    model.set_normalisation(train.frames)
    head = nn.Linear(config.emb_dim, config.n_mels)
    parameters = [*model.parameters(), *head.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)

    def rate(step: int) -> float:
        if step < settings.warmup:
            return (step + 1) / settings.warmup
        if until_converged:
            return 1.0
        progress_ = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress_)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, rate)
    generator = torch.Generator().manual_seed(settings.seed)
    losses: list[float] = []
    watch = _Watch()
    path = Path(checkpoint) if checkpoint is not None else None
    identity = {"config": config.to_dict(), "settings": asdict(settings), "data_frames": len(train)}
    if path is not None and path.exists():
        state = torch.load(path, weights_only=False)
        if state["identity"] != identity:
            raise ValueError(f"{path}: checkpoint of a different run ({state['identity']})")
        model.load_state_dict(state["model"])
        head.load_state_dict(state["head"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        losses = list(state["losses"])
        watch = state.get("watch", watch)
        watch.observations = getattr(watch, "observations", [])  # a checkpoint written before `observe`
    resumed_from = len(losses)

    def save() -> None:
        state = {
            "identity": identity,
            "model": model.state_dict(),
            "head": head.state_dict(),
            "optimiser": optimiser.state_dict(),
            "schedule": schedule.state_dict(),
            "generator": generator.get_state(),
            "losses": losses,
            "watch": watch,
        }
        temporary = path.with_name(path.name + ".tmp")
        with open(temporary, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)

    started = time.perf_counter()
    model.train()
    for step in tqdm(
        range(resumed_from, settings.steps), desc="pre-training", unit="step", disable=not progress, leave=False
    ):
        if watch.stopped:
            break
        x = model.normalise(train.windows(settings.batch_size, length, generator))
        loss = objective_loss(model, head, x, settings, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"pre-training diverged at step {step} (loss {losses[-1]})")
        done = step + 1
        if until_converged and (done % settings.eval_every == 0 or done == settings.steps):
            model.eval()
            watch.check(done, held_out_loss(model, head, validation, settings), model, head, settings)
            if observe is not None:
                watch.observations.append({"step": done, "validation_loss": watch.curve[-1][1], **observe(done, model)})
            model.train()
        if path is not None and (done % checkpoint_every == 0 or done == settings.steps or watch.stopped):
            save()
    model.eval()
    if until_converged and watch.best is not None:
        model.load_state_dict(watch.best["model"])
        head.load_state_dict(watch.best["head"])
    used = watch.best_step if until_converged else len(losses)
    held = held_out_loss(model, head, held_out, settings) if held_out is not None else None
    return PretrainResult(
        model=model,
        head=head,
        losses=losses,
        held_out_loss=held,
        n_params=model.n_params,
        data_seconds=train.seconds,
        data_frames=len(train),
        tokens=used * settings.batch_size * config.frames,
        seconds=time.perf_counter() - started,
        resumed_from=resumed_from,
        best_step=used,
        stopped_by=("patience" if watch.stopped else "cap") if until_converged else "steps",
        curve=list(watch.curve),
        observations=list(watch.observations),
        epochs=len(losses) * settings.batch_size * length / len(train),
    )


@dataclass
class _Watch:
    """Early stopping: the validation curve, the best loss, its step and model, and how many
    checks since it improved."""

    curve: list[tuple[int, float]] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    best: dict | None = None
    best_loss: float = math.inf
    best_step: int = 0
    since_best: int = 0
    stopped: bool = False

    def check(self, step: int, loss: float, model: AudioModel, head: nn.Module, settings: PretrainConfig) -> None:
        self.curve.append((step, loss))
        if loss < self.best_loss * (1 - settings.min_improvement):
            self.best_loss, self.best_step, self.since_best = loss, step, 0
            self.best = {"model": copy.deepcopy(model.state_dict()), "head": copy.deepcopy(head.state_dict())}
        else:
            self.since_best += 1
            self.stopped = self.since_best >= (settings.patience or 0)
