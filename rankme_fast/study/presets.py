"""What a study runs: an (N, D) grid of pre-training runs and one-at-a-time sweeps of embedding
dimension, depth, input length, architecture and objective around a base model, plus the
pretrained-model ladder. Presets size it for this machine (2 CPU cores)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from rankme_fast.audio.encoders.registry import LADDER
from rankme_fast.audio.models import EncoderConfig
from rankme_fast.audio.pretrain import PretrainConfig

SWEEPS = ("emb_dim", "depth", "frames", "arch", "objective")


@dataclass(frozen=True)
class RunSpec:
    """One pre-training run: the model, how it is trained, and on how many seconds of audio."""

    encoder: EncoderConfig
    training: PretrainConfig
    data_seconds: float

    @property
    def id(self) -> str:
        e, t = self.encoder, self.training
        steps = f"steps{t.steps}" if t.patience is None else f"converged-p{t.patience}x{t.eval_every}-cap{t.steps}"
        return (
            f"{e.arch}-w{e.width}-l{e.depth}-e{e.emb_dim}-f{e.frames}-{t.objective}"
            f"-D{self.data_seconds:g}s-{steps}-seed{t.seed}"
        )

    def variables(self) -> dict[str, object]:
        """The swept variables as flat columns."""
        e, t = self.encoder, self.training
        return {
            "arch": e.arch,
            "width": e.width,
            "depth": e.depth,
            "emb_dim": e.emb_dim,
            "frames": e.frames,
            "objective": t.objective,
            "data_seconds": self.data_seconds,
        }


@dataclass(frozen=True)
class StudyPreset:
    """A study: labelled audio to evaluate on (`eval_preset`, seed 0; its audio also gives the
    held-out pre-training loss), unlabelled pre-training audio (`pool_preset` rendered with
    `pool_seeds`, so other voices, words and notes), the base model and training, the grid
    (`widths` × `data_seconds`), the sweeps and the pretrained encoders of the ladder; and the
    (width, seconds) cells outside the grid whose loss is predicted before they are trained
    (`extrapolation`, on the pool extended by renderings with `extrapolation_pool_seeds`)."""

    name: str
    eval_preset: str
    pool_preset: str
    pool_seeds: tuple[int, ...]
    base: EncoderConfig
    training: PretrainConfig
    widths: tuple[int, ...]
    data_seconds: tuple[float, ...]
    sweeps: dict[str, tuple] = field(default_factory=dict)
    ladder: tuple[str, ...] = ()
    extrapolation: tuple[tuple[int, float], ...] = ()
    extrapolation_pool_seeds: tuple[int, ...] = ()

    def grid(self) -> list[RunSpec]:
        """The (width × data) grid, smallest first."""
        return [RunSpec(dataclasses.replace(self.base, width=w), self.training, d)
                for w in self.widths for d in self.data_seconds]  # fmt: skip

    def runs(self) -> list[RunSpec]:
        """Grid first (small to large), then each sweep at the base width and the most data;
        a configuration that two parts share is run once."""
        specs: dict[str, RunSpec] = {spec.id: spec for spec in self.grid()}
        most = max(self.data_seconds)
        for variable, values in self.sweeps.items():
            if variable not in SWEEPS:
                raise ValueError(f"cannot sweep {variable!r}; sweeps are {SWEEPS}")
            for value in values:
                if variable == "objective":
                    encoder = dataclasses.replace(self.base, causal=value == "apc")
                    training = dataclasses.replace(self.training, objective=value)
                else:
                    encoder, training = dataclasses.replace(self.base, **{variable: value}), self.training
                spec = RunSpec(encoder, training, most)
                specs.setdefault(spec.id, spec)
        return list(specs.values())

    def noise_runs(self, seeds: tuple[int, ...]) -> list[RunSpec]:
        """The runs repeated with other training seeds to measure the noise floor: the grid's
        corner cells (its three largest widths × its three largest amounts of data) and every
        sweep run, each with each of `seeds`."""
        widths, seconds = sorted(self.widths)[-3:], sorted(self.data_seconds)[-3:]
        grid = {spec.id for spec in self.grid()}
        corner = lambda s: s.encoder.width in widths and s.data_seconds in seconds  # noqa: E731
        chosen = [s for s in self.runs() if s.id not in grid or corner(s)]
        return [RunSpec(s.encoder, dataclasses.replace(s.training, seed=seed), s.data_seconds)
                for seed in seeds for s in chosen]  # fmt: skip



# The one-variable sweeps and the ladder of the presets evaluated on the "small" set. CREPE
# large/full are left out of the ladder for time; bench/bench_audio.py's ladder scores them on
# the same set with the same probes.
_SMALL_SET_SWEEPS = {
    "emb_dim": (16, 32, 128, 256),
    "depth": (1, 3, 4),
    "frames": (25, 50, 200),
    "arch": ("conv", "lstm"),
    "objective": ("mae",),
}
_SMALL_SET_LADDER = tuple(name for name in LADDER if name not in ("crepe-large", "crepe-full"))

PRESETS = {
    # CI: a 2×2 grid of a few steps on the tiny set, which is also the pre-training audio.
    "micro": StudyPreset(
        name="micro",
        eval_preset="tiny",
        pool_preset="tiny",
        pool_seeds=(0,),
        base=EncoderConfig(width=16, depth=1, emb_dim=16, frames=50),
        training=PretrainConfig(steps=8, batch_size=4, warmup=2, eval_windows=8),
        widths=(8, 16),
        data_seconds=(60, 200),
        sweeps={"arch": ("conv",)},
        ladder=("log-mel",),
    ),
    # make demo: about 10 minutes here.
    "quick": StudyPreset(
        name="quick",
        eval_preset="mini",
        pool_preset="mini",
        pool_seeds=(1,),
        base=EncoderConfig(width=64, depth=2, emb_dim=64, frames=100),
        training=PretrainConfig(steps=150, batch_size=16, warmup=15),
        widths=(16, 32, 64),
        data_seconds=(25, 100, 900),
        sweeps={
            "emb_dim": (16, 128),
            "depth": (1, 4),
            "frames": (25, 50),
            "arch": ("conv", "lstm"),
            "objective": ("mae",),
        },
        ladder=("log-mel", "speech-embedding", "silero-vad", "crepe-tiny", "crepe-small"),
    ),
    # bench/results/study-full: about an hour here.
    "full": StudyPreset(
        name="full",
        eval_preset="small",
        pool_preset="small",
        pool_seeds=(1,),
        base=EncoderConfig(width=64, depth=2, emb_dim=64, frames=100),
        training=PretrainConfig(steps=400, batch_size=16, warmup=40),
        widths=(16, 32, 64, 128),
        data_seconds=(25, 100, 400, 1600),
        sweeps=_SMALL_SET_SWEEPS,
        ladder=_SMALL_SET_LADDER,
    ),
    # bench/results/study-paper: every run trained to convergence (early stopping on validation
    # audio), N over 2 decades (widths 8…128: 3.9 k–430 k parameters) and D over 2.4 (16…4096 s),
    # a 5 × 5 grid plus the sweeps at width 64 on 4096 s; about 2 hours here, resumable.
    "paper": StudyPreset(
        name="paper",
        eval_preset="small",
        pool_preset="small",
        pool_seeds=(1,),
        base=EncoderConfig(width=64, depth=2, emb_dim=64, frames=100),
        training=PretrainConfig(steps=20000, batch_size=16, warmup=40, eval_windows=256, patience=5, eval_every=100),
        widths=(8, 16, 32, 64, 128),
        data_seconds=(16, 64, 256, 1024, 4096),
        sweeps=_SMALL_SET_SWEEPS,
        ladder=_SMALL_SET_LADDER,
        extrapolation=((32, 16384), (64, 16384), (128, 16384), (256, 4096), (256, 16384)),
        extrapolation_pool_seeds=(2, 3, 4, 5),
    ),
}


def get_preset(name: str) -> StudyPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown study preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
