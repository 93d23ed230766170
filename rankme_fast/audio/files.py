"""Audio files for `rankme-fast audio`: files, directories and globs of wav/flac/ogg/mp3, each
read as mono windows at a model's sample rate, a window at a time (an hour-long file never
sits in memory whole), with errors that name the file."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from rankme_fast.audio.waves import resample, to_mono
from rankme_fast.corpus import BadFileError, expand_paths

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


class BadAudioError(BadFileError):
    """An audio file that cannot be scored: unreadable, corrupt, empty."""


def expand_audio_paths(paths: Sequence[str | Path]) -> list[str]:
    """Files named, the audio files under directories (recursive, sorted) and glob matches
    (sorted), in the order given, each once; ValueError for a path that matches nothing."""
    return expand_paths(paths, AUDIO_SUFFIXES, kind="audio")


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    def windows(self, window_seconds: float) -> int:
        """How many windows of `window_seconds` the file is cut into (a shorter file: one)."""
        return max(1, -(-self.frames // self.window_frames(window_seconds)))

    def window_frames(self, window_seconds: float) -> int:
        return max(1, round(window_seconds * self.sample_rate))


def audio_info(path: str) -> AudioInfo:
    """Rate, channels and length of an audio file; BadAudioError when it cannot be read or
    holds no samples."""
    try:
        info = soundfile.info(path)
    except Exception as error:  # libsndfile raises RuntimeError/LibsndfileError/TypeError
        raise BadAudioError(path, f"not a readable audio file ({error})") from error
    if info.frames <= 0 or info.samplerate <= 0:
        raise BadAudioError(path, "holds no audio samples")
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames))


def read_windows(
    info: AudioInfo, sample_rate: int, window_seconds: float, first: int = 0, count: int | None = None
) -> Iterator[np.ndarray]:
    """Windows [first, first + count) of the file as mono float32 at `sample_rate`: each read,
    downmixed and resampled on its own (the last window may be shorter)."""
    step = info.window_frames(window_seconds)
    last = info.windows(window_seconds) if count is None else min(info.windows(window_seconds), first + count)
    try:
        with soundfile.SoundFile(info.path) as handle:
            if first:
                handle.seek(first * step)
            for _ in range(first, last):
                block = handle.read(step, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    raise BadAudioError(info.path, f"ends before its header says ({info.frames} frames)")
                wave = resample(to_mono(block), info.sample_rate, sample_rate)
                if not np.isfinite(wave).all():
                    raise BadAudioError(info.path, "holds NaN or infinite samples")
                yield np.ascontiguousarray(wave, dtype=np.float32)
    except BadAudioError:
        raise
    except Exception as error:  # a corrupt stream surfaces from libsndfile mid-read
        raise BadAudioError(info.path, f"could not be decoded ({error})") from error
