"""A family of audio encoders over log-mel frames whose size, depth, width, embedding dimension,
architecture and input length can each be swept on its own (the variables of the RankMe and
acoustic scaling-law papers), and the `AudioEncoder` that embeds audio with a trained one.

Layout: per-band input normalisation → causal conv front-end (n_mels → width) → `depth` blocks
of the chosen architecture → LayerNorm → linear projection to `emb_dim` (the embedding). The
pre-training head that sits on the embedding is not part of the encoder (see `pretrain`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from rankme_fast.audio.encoders.encoder import AudioEncoder, FrameEmbeddings, count_parameters, frame_times
from rankme_fast.audio.features import MelConfig, MelSpectrogram

ARCHS = ("transformer", "conv", "lstm")


@dataclass(frozen=True)
class EncoderConfig:
    """What a model of the family is: `width` (channels), `depth` (blocks), `emb_dim` (the
    embedding), `arch` ("transformer", "conv" or "lstm"), `frames` (input length in 10 ms
    frames: the context it is trained on and embeds with), `causal` (APC needs it), `n_mels`."""

    width: int = 64
    depth: int = 2
    emb_dim: int = 64
    arch: str = "transformer"
    frames: int = 100
    causal: bool = True
    n_mels: int = 64
    head_dim: int = 32

    def __post_init__(self) -> None:
        for name in ("width", "depth", "emb_dim", "frames", "n_mels", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"EncoderConfig.{name} must be a positive int, got {value!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"EncoderConfig.arch must be one of {ARCHS}, got {self.arch!r}")
        if self.arch == "lstm" and not self.causal and self.width % 2:
            raise ValueError(f"a bidirectional lstm needs an even width, got {self.width}")
        if self.frames < 2:
            raise ValueError(f"EncoderConfig.frames must be at least 2, got {self.frames}")

    @property
    def heads(self) -> int:
        """Attention heads: width / head_dim when it divides, else one."""
        return self.width // self.head_dim if self.width % self.head_dim == 0 else 1

    def to_dict(self) -> dict:
        return asdict(self)


class CausalConv(nn.Module):
    """Conv1d over (batch, channels, time) padded so that output t sees inputs ≤ t (causal) or
    a centred window (not causal); the length is kept."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, dilation: int, causal: bool):
        super().__init__()
        self.conv = nn.Conv1d(channels_in, channels_out, kernel, dilation=dilation)
        total = dilation * (kernel - 1)
        self.pad = (total, 0) if causal else (total // 2, total - total // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.pad(x, self.pad))


class ConvBlock(nn.Module):
    """Pre-norm residual block: LayerNorm → dilated conv (kernel 3) → GELU → 1×1 conv."""

    def __init__(self, width: int, dilation: int, causal: bool):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.conv = CausalConv(width, width, 3, dilation, causal)
        self.mix = nn.Conv1d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, time, width)
        y = self.conv(self.norm(x).transpose(1, 2))
        return x + self.mix(nn.functional.gelu(y)).transpose(1, 2)


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """(length, width) fixed sinusoidal position codes (no parameters, any length)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    codes = torch.zeros(length, width)
    codes[:, 0::2] = torch.sin(position * rate)
    codes[:, 1::2] = torch.cos(position * rate[: width // 2])
    return codes


class AudioModel(nn.Module):
    """(batch, frames, n_mels) log-mel → (batch, frames, emb_dim) embeddings."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = c = config
        self.register_buffer("mean", torch.zeros(c.n_mels))
        self.register_buffer("std", torch.ones(c.n_mels))
        self.front = CausalConv(c.n_mels, c.width, 3, 1, c.causal)
        if c.arch == "transformer":
            layer = dict(dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
            self.blocks = nn.ModuleList(
                nn.TransformerEncoderLayer(c.width, c.heads, 4 * c.width, **layer) for _ in range(c.depth)
            )
        elif c.arch == "conv":
            self.blocks = nn.ModuleList(ConvBlock(c.width, 2 ** (i % 4), c.causal) for i in range(c.depth))
        else:
            hidden = c.width if c.causal else c.width // 2
            self.lstm = nn.LSTM(c.width, hidden, num_layers=c.depth, batch_first=True, bidirectional=not c.causal)
        self.norm = nn.LayerNorm(c.width)
        self.project = nn.Linear(c.width, c.emb_dim)

    def set_normalisation(self, frames: torch.Tensor) -> None:
        """Per-band mean and std of (frames, n_mels) training log-mel, kept as buffers."""
        self.mean.copy_(frames.mean(dim=0))
        self.std.copy_(frames.std(dim=0).clamp_min(1e-3))

    def normalise(self, mel: torch.Tensor) -> torch.Tensor:
        return (mel - self.mean) / self.std

    def forward(self, mel: torch.Tensor, *, normalised: bool = False) -> torch.Tensor:
        x = mel if normalised else self.normalise(mel)
        x = nn.functional.gelu(self.front(x.transpose(1, 2)).transpose(1, 2))
        c = self.config
        if c.arch == "transformer":
            x = x + sinusoidal_positions(x.shape[1], c.width).to(x)
            mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1]).to(x) if c.causal else None
            for block in self.blocks:
                x = block(x, src_mask=mask, is_causal=c.causal)
        elif c.arch == "conv":
            for block in self.blocks:
                x = block(x)
        else:
            x = self.lstm(x)[0]
        return self.project(self.norm(x))

    @property
    def n_params(self) -> int:
        return count_parameters(self)

    def embed_frames(self, mel: torch.Tensor) -> torch.Tensor:
        """(frames, n_mels) → (frames, emb_dim), in windows of `config.frames` as in training."""
        window = self.config.frames
        chunks = [self(mel[start : start + window][None])[0] for start in range(0, len(mel), window)]
        return torch.cat(chunks)


class ModelEncoder(AudioEncoder):
    """Embeds audio with a (trained) `AudioModel`: 16 kHz log-mel at 100 frames/s, one
    emb_dim-vector per frame."""

    def __init__(self, model: AudioModel, *, name: str = "model", mel: MelConfig = MelConfig()):  # noqa: B008
        if mel.n_mels != model.config.n_mels:
            raise ValueError(f"model expects {model.config.n_mels} mel bands, the MelConfig gives {mel.n_mels}")
        self.model = model.eval()
        self.features = MelSpectrogram(mel)
        self.sample_rate = mel.sr
        self.name, self.dim, self.frame_rate = name, model.config.emb_dim, self.features.frame_rate
        self.n_params = model.n_params

    def _embed(self, wave: np.ndarray) -> FrameEmbeddings:
        values = self.model.embed_frames(self.features(torch.from_numpy(wave), log=True))
        return FrameEmbeddings(values.float(), frame_times(len(values), 1.0 / self.frame_rate))

    def layer_module(self) -> torch.nn.Module:
        """The model: its blocks are the stack of layers (an LSTM model has none to show)."""
        return self.model
