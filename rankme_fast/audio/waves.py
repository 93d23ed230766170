"""Audio I/O: read files with soundfile, resample with soxr, mono, fixed-length crops, and the
checks every clip passes before an encoder sees it (so a bad clip is named, not half-processed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import soxr
import torch

SAMPLE_RATE = 16_000
"""The rate every encoder and the benchmark audio use."""


def check_wave(wave: Any, sr: Any, name: str = "audio") -> np.ndarray:
    """Validate one clip and return it as a 1-D float32 array.

    Accepts a 1-D numpy array or torch tensor of floats, or (channels, samples)/(samples,
    channels) only through `to_mono`, never silently: stereo here is an error naming the clip."""
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)):
        raise TypeError(f"{name}: sample rate must be an int (Hz), got {type(sr).__name__}")
    if sr <= 0:
        raise ValueError(f"{name}: sample rate must be positive, got {sr}")
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().numpy()
    if not isinstance(wave, np.ndarray):
        raise TypeError(f"{name}: audio must be a numpy array or torch tensor, got {type(wave).__name__}")
    if not np.issubdtype(wave.dtype, np.floating):
        raise TypeError(f"{name}: audio must be floating point in [-1, 1], got dtype {wave.dtype}")
    if wave.ndim != 1:
        raise ValueError(f"{name}: audio must be mono, shape (samples,); got shape {wave.shape} (use to_mono)")
    if wave.size == 0:
        raise ValueError(f"{name}: audio is empty (zero samples)")
    if not np.isfinite(wave).all():
        raise ValueError(f"{name}: audio contains NaN or infinite samples")
    return np.ascontiguousarray(wave, dtype=np.float32)


def to_mono(wave: np.ndarray, channels_last: bool = True) -> np.ndarray:
    """Average the channels of (samples, channels) (or (channels, samples)) audio."""
    wave = np.asarray(wave)
    if wave.ndim == 1:
        return wave
    if wave.ndim != 2:
        raise ValueError(f"audio must be 1-D or 2-D, got shape {wave.shape}")
    if not np.issubdtype(wave.dtype, np.floating):
        wave = wave.astype(np.float64)  # as numpy's mean would average integers
    channels = list(wave.T if channels_last else wave)
    if len(channels) == 1:
        return channels[0]
    # Column by column, in the order numpy's mean adds them (same bits), several times faster
    # than a reduction over the short strided axis.
    total = channels[0] + channels[1]
    for channel in channels[2:]:
        total += channel
    return total / len(channels)


def resample(wave: np.ndarray, sr_from: int, sr_to: int = SAMPLE_RATE) -> np.ndarray:
    """High-quality resampling with soxr (float32 out)."""
    if sr_from == sr_to:
        return np.asarray(wave, dtype=np.float32)
    return soxr.resample(np.asarray(wave, dtype=np.float32), sr_from, sr_to, quality="HQ").astype(np.float32)


def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read a file as mono float32 at `sr` Hz. Errors name the file."""
    try:
        wave, file_sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, soundfile.LibsndfileError) as error:
        raise ValueError(f"{path}: cannot read audio ({error})") from error
    return check_wave(resample(to_mono(wave), file_sr, sr), sr, str(path))


def fix_length(wave: np.ndarray, length: int, *, offset: int = 0) -> np.ndarray:
    """Crop `wave` to `length` samples from `offset`, or zero-pad it at the end."""
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    piece = wave[offset : offset + length]
    if piece.shape[0] < length:
        piece = np.pad(piece, (0, length - piece.shape[0]))
    return piece
