"""Log-mel features in torch (`torch.stft` + a Slaney mel filterbank), equal to
`librosa.feature.melspectrogram` with the same settings to float rounding (tested at 1e-5).
No torchaudio: it has no CPU build here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rankme_fast.audio.waves import SAMPLE_RATE


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's default, htk=False)."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of `hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), mel * (200.0 / 3))


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the Slaney mel scale, area-normalised
    (librosa's `norm="slaney"`)."""
    fmax = sr / 2.0 if fmax is None else fmax
    fft_hz = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


@dataclass(frozen=True)
class MelConfig:
    """STFT and mel settings. Defaults: 25 ms Hann windows every 10 ms, 64 bands to 8 kHz."""

    sr: int = SAMPLE_RATE
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = None
    power: float = 2.0
    log_floor: float = 1e-6


class MelSpectrogram(torch.nn.Module):
    """(..., samples) → (..., frames, n_mels) power mel spectrogram; `log=True` gives log-mel.

    Frames are centred (padded by n_fft // 2 with zeros, as librosa ≥ 0.10), so frame t is at
    t · hop_length / sr seconds."""

    def __init__(self, config: MelConfig = MelConfig()):
        super().__init__()
        self.config = config
        bank = mel_filterbank(config.sr, config.n_fft, config.n_mels, config.fmin, config.fmax)
        self.register_buffer("filterbank", torch.from_numpy(bank.T.copy()), persistent=False)
        self.register_buffer(
            "window", torch.hann_window(config.n_fft, periodic=True, dtype=torch.float64), persistent=False
        )

    @property
    def frame_rate(self) -> float:
        return self.config.sr / self.config.hop_length

    def forward(self, wave: torch.Tensor, log: bool = False) -> torch.Tensor:
        c = self.config
        dtype = wave.dtype if wave.dtype == torch.float64 else torch.float32
        shape = wave.shape[:-1]
        flat = wave.reshape(-1, wave.shape[-1]).to(dtype)
        spec = torch.stft(
            flat,
            c.n_fft,
            c.hop_length,
            window=self.window.to(flat.device, dtype),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.abs() ** c.power if c.power != 2.0 else spec.real.square() + spec.imag.square()
        mel = power.transpose(-1, -2) @ self.filterbank.to(flat.device, dtype)
        if log:
            mel = torch.log(mel + c.log_floor)
        return mel.reshape(*shape, mel.shape[-2], mel.shape[-1])


def log_mel(wave: np.ndarray | torch.Tensor, config: MelConfig = MelConfig()) -> torch.Tensor:
    """Log-mel frames (frames, n_mels) of one clip."""
    wave = torch.as_tensor(wave)
    return MelSpectrogram(config)(wave, log=True)
