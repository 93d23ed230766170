"""Named encoders: which are usable here (and why not), and loading one by name."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rankme_fast.audio.encoders.crepe import CAPACITIES, CrepeEncoder, weights_path
from rankme_fast.audio.encoders.encoder import AudioEncoder
from rankme_fast.audio.encoders.generic import HuggingFaceEncoder, LogMelEncoder, ModuleEncoder
from rankme_fast.audio.encoders.pretrained import (
    FcpeEncoder,
    PestoEncoder,
    ResemblyzerEncoder,
    SileroVadEncoder,
    SpeechEmbeddingEncoder,
    package_dir,
)
from rankme_fast.audio.waves import SAMPLE_RATE

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
    "pesto": (PestoEncoder, _needs(("pesto", "pesto-pitch"), ("omegaconf", "omegaconf"))),
    "speech-embedding": (SpeechEmbeddingEncoder, _speech_embedding_check),
    "silero-vad": (
        SileroVadEncoder,
        _needs(("silero_vad", "silero-vad"), ("onnxruntime", "onnxruntime"), ("onnx", "onnx")),
    ),
}


# The pretrained ladder scored by bench/bench_audio.py and the study, cheapest first.
LADDER = ("log-mel", "speech-embedding", "silero-vad", "pesto", "resemblyzer", "fcpe",
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


def encoder_from_spec(
    spec: str,
    *,
    sample_rate: int | None = None,
    frame_rate: float | None = None,
    options: dict[str, Any] | None = None,
) -> AudioEncoder:
    """An encoder from what a user names on the command line: a built-in name
    (`available_encoders()`; `options` go to its constructor), a local Hugging Face directory
    (with config.json), a TorchScript file (.pt, .ts, .jit), an ONNX file (.onnx), or
    `package.module:callable` returning an AudioEncoder, a torch.nn.Module or a callable.
    Models that do not say so themselves run at `sample_rate` (default 16 kHz); their D and
    frame rate are read off one second of silence unless `frame_rate` is given."""
    rate = int(sample_rate or SAMPLE_RATE)
    if spec in ENCODERS:
        return load_encoder(spec, **(options or {}))
    path = Path(spec)
    if path.is_dir():
        return HuggingFaceEncoder(path)
    if path.suffix in (".pt", ".ts", ".jit") and path.is_file():
        return ModuleEncoder(torch.jit.load(str(path), map_location="cpu"), name=path.stem, sample_rate=rate,
                             frame_rate=frame_rate)  # fmt: skip
    if path.suffix == ".onnx" and path.is_file():
        return ModuleEncoder(_onnx_model(path), name=path.stem, sample_rate=rate, frame_rate=frame_rate)
    if ":" in spec and not path.exists():
        module_name, _, attribute = spec.partition(":")
        try:
            made = getattr(importlib.import_module(module_name), attribute)()
        except (ImportError, AttributeError) as error:
            raise ValueError(f"encoder {spec!r}: cannot import {module_name}:{attribute} ({error})") from error
        if isinstance(made, AudioEncoder):
            return made
        return ModuleEncoder(made, name=attribute, sample_rate=rate, frame_rate=frame_rate)
    raise ValueError(
        f"encoder {spec!r} is none of: a built-in name ({', '.join(ENCODERS)}), a Hugging Face directory, "
        "a .pt/.ts/.jit TorchScript file, an .onnx file, or package.module:callable"
    )


def _onnx_model(path: Any) -> Callable[[Any], Any]:
    """An ONNX model as a callable on a (1, samples) float32 tensor (onnxruntime, CPU)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(wave: Any) -> Any:
        return session.run(None, {name: np.asarray(wave, dtype=np.float32)})[0]

    return run
