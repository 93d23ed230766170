"""A minimal `torchaudio` stand-in (file loading with soundfile, resampling with soxr).

torchcrepe and torchfcpe import torchaudio only to load and resample files; there is no CPU
build of torchaudio here. Used only while importing them, and only when the real package
cannot be imported."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Iterator

import numpy as np
import soundfile
import torch

from rankme_fast.audio.waves import resample


class _Resample(torch.nn.Module):
    def __init__(self, orig_freq: int = 16000, new_freq: int = 16000, *args, **kwargs):
        super().__init__()
        self.orig_freq, self.new_freq = int(orig_freq), int(new_freq)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return _resample(wave, self.orig_freq, self.new_freq)


def _resample(wave: torch.Tensor, orig_freq: int, new_freq: int, *args, **kwargs) -> torch.Tensor:
    if orig_freq == new_freq:
        return wave
    flat = wave.detach().cpu().reshape(-1, wave.shape[-1]).numpy()
    out = np.stack([resample(row, int(orig_freq), int(new_freq)) for row in flat])
    return torch.from_numpy(out).reshape(*wave.shape[:-1], -1).to(wave.device, wave.dtype)


def _load(path, *args, **kwargs) -> tuple[torch.Tensor, int]:
    wave, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(wave.T.copy()), sr


@contextlib.contextmanager
def standin() -> Iterator[None]:
    """Within the block, `import torchaudio` gives the stand-in (unless a real torchaudio is
    importable). The entries are removed afterwards: a lingering fake would mislead other
    packages' checks (transformers probes for torchaudio), while modules imported inside the
    block keep the functions they bound."""
    if "torchaudio" in sys.modules or importlib.util.find_spec("torchaudio") is not None:
        yield
        return
    module = types.ModuleType("torchaudio")
    module.__doc__ = "rankme_fast stand-in: load (soundfile) and resample (soxr) only"
    module.load = _load
    transforms = types.ModuleType("torchaudio.transforms")
    transforms.Resample = _Resample
    functional = types.ModuleType("torchaudio.functional")
    functional.resample = _resample
    module.transforms, module.functional = transforms, functional
    added = {"torchaudio": module, "torchaudio.transforms": transforms, "torchaudio.functional": functional}
    sys.modules.update(added)
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)
