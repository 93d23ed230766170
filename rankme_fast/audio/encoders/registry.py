"""Named encoders: which are usable here (and why not), and loading one by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rankme_fast.audio.encoders.base import AudioEncoder
from rankme_fast.audio.encoders.crepe import CAPACITIES, CrepeEncoder, weights_path
from rankme_fast.audio.encoders.generic import LogMelEncoder
from rankme_fast.audio.encoders.pretrained import (
    FcpeEncoder,
    ResemblyzerEncoder,
    SileroVadEncoder,
    SpeechEmbeddingEncoder,
    package_dir,
)

_Factory = Callable[..., AudioEncoder]


def _needs(*modules: tuple[str, str]) -> Callable[[], None]:
    def check() -> None:
        for module, pip_name in modules:
            package_dir(module, pip_name)

    return check


def _speech_embedding_check() -> None:
    models = package_dir("openwakeword", "openwakeword==0.4.0") / "resources" / "models"
    if not (models / "embedding_model.onnx").exists():
        raise ModuleNotFoundError("openwakeword ships its ONNX models only in 0.4.0")
    _needs(("onnxruntime", "onnxruntime"), ("onnx", "onnx"))()


ENCODERS: dict[str, tuple[_Factory, Callable[[], None]]] = {
    "log-mel": (LogMelEncoder, lambda: None),
    **{
        f"crepe-{c}": (
            (lambda c=c, **kw: CrepeEncoder(c, **kw)),
            (lambda c=c: (weights_path(c), _needs(("h5py", "h5py"))())),
        )
        for c in CAPACITIES
    },
    "resemblyzer": (
        ResemblyzerEncoder,
        _needs(("resemblyzer", "resemblyzer"), ("webrtcvad", "webrtcvad-wheels"), ("librosa", "librosa")),
    ),
    "fcpe": (
        FcpeEncoder,
        _needs(("torchfcpe", "torchfcpe"), ("einops", "einops"), ("local_attention", "local-attention")),
    ),
    "speech-embedding": (SpeechEmbeddingEncoder, _speech_embedding_check),
    "silero-vad": (
        SileroVadEncoder,
        _needs(("silero_vad", "silero-vad"), ("onnxruntime", "onnxruntime"), ("onnx", "onnx")),
    ),
}


# The pretrained ladder scored by bench/bench_audio.py and the study, cheapest first.
LADDER = ("log-mel", "speech-embedding", "silero-vad", "resemblyzer", "fcpe",
          *(f"crepe-{c}" for c in ("tiny", "small", "medium", "large", "full")))  # fmt: skip
# How the ladders run each encoder: CREPE at a 100 ms hop
# (10 frames/s instead of 100) so that thousands of clips fit this machine.
LADDER_OPTIONS: dict[str, dict[str, Any]] = {
    f"crepe-{c}": {"hop_length": 1600} for c in ("tiny", "small", "medium", "large", "full")
}


def available_encoders() -> dict[str, str | None]:
    """Encoder name → None when usable here, else the reason (what to install). Loads no weights."""
    reasons: dict[str, str | None] = {}
    for name, (_, check) in ENCODERS.items():
        try:
            check()
            reasons[name] = None
        except ModuleNotFoundError as error:
            reasons[name] = str(error)
    return reasons


def load_encoder(name: str, **options: Any) -> AudioEncoder:
    """Build the named encoder (see `ENCODERS`); options go to its constructor (e.g. hop_length)."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
    reason = available_encoders()[name]
    if reason is not None:
        raise ModuleNotFoundError(f"encoder {name!r} is not available: {reason}")
    return ENCODERS[name][0](**options)
