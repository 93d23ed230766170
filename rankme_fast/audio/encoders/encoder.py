"""The one interface every audio model is used through: frame embeddings with timestamps, a
clip embedding (the mean over frames, as HEAR scene embeddings), and what the model is."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rankme_fast.audio.waves import SAMPLE_RATE, check_wave, resample
from rankme_fast.integrations.layers import LayerSpec, capture_layers, resolve_layers


@dataclass(frozen=True)
class FrameEmbeddings:
    """`values` (frames, dim) float32 and `times` (frames,) in seconds (the frame centres)."""

    values: torch.Tensor
    times: torch.Tensor

    def __len__(self) -> int:
        return self.values.shape[0]


class AudioEncoder(ABC):
    """Maps mono audio to frame-level embeddings.

    Subclasses set `name`, `dim`, `frame_rate` (frames per second), `n_params` and
    `sample_rate`, and implement `_embed` on validated float32 audio at `sample_rate`."""

    name: str
    dim: int
    frame_rate: float
    n_params: int
    sample_rate: int = SAMPLE_RATE

    @abstractmethod
    def _embed(self, wave: np.ndarray) -> FrameEmbeddings:
        """Frame embeddings of one clip already checked and at `sample_rate`."""

    def embed(self, wave: Any, sr: int, *, name: str = "audio") -> FrameEmbeddings:
        """Frame embeddings (frames, dim) of one mono clip at `sr` Hz (resampled as needed)."""
        wave = resample(check_wave(wave, sr, name), sr, self.sample_rate)
        with torch.inference_mode():
            result = self._embed(wave)
        if result.values.ndim != 2 or result.values.shape[1] != self.dim:
            raise RuntimeError(
                f"{self.name} returned shape {tuple(result.values.shape)}, expected (frames, {self.dim})"
            )
        return result

    # -- inner layers ---------------------------------------------------------------------------

    def layer_module(self) -> torch.nn.Module | None:
        """The module whose layers `embed_layers` hooks (None: the encoder has no inner layers
        it can show, unless it overrides `layer_names` and `_embed_layers`)."""
        return None

    def layer_names(self, layers: LayerSpec = "all") -> list[str]:
        """The names of the layers `layers` picks (rankme_fast.integrations.layers specs)."""
        module = self.layer_module()
        if module is None:
            raise ValueError(f"{self.name} has no inner layers to choose from")
        return [name for name, _ in resolve_layers(module, layers)]

    def embed_layers(
        self, wave: Any, sr: int, layers: LayerSpec = "all", *, name: str = "audio"
    ) -> dict[str, torch.Tensor]:
        """(frames, D_l) float32 of each chosen layer for one mono clip, from one pass."""
        wave = resample(check_wave(wave, sr, name), sr, self.sample_rate)
        with torch.inference_mode():
            return self._embed_layers(wave, layers)

    def _embed_layers(self, wave: np.ndarray, layers: LayerSpec) -> dict[str, torch.Tensor]:
        """Hooks on `layer_module()` while `_embed` runs; a clip that takes several forwards
        (windows) gets its frames joined in time."""
        module = self.layer_module()
        if module is None:
            raise ValueError(f"{self.name} has no inner layers to choose from")
        seen: dict[str, list[torch.Tensor]] = {}

        def keep(outputs: dict[str, torch.Tensor]) -> None:
            for layer, output in outputs.items():
                seen.setdefault(layer, []).append(output.reshape(-1, output.shape[-1]).float())

        with capture_layers(module, layers, keep) as names:
            self._embed(wave)
        return {layer: torch.cat(seen[layer]) for layer in names if layer in seen}

    def embed_clip(self, wave: Any, sr: int, *, name: str = "audio") -> torch.Tensor:
        """One (dim,) vector per clip: the mean of its frame embeddings."""
        return self.embed(wave, sr, name=name).values.mean(dim=0)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "frame_rate": self.frame_rate, "n_params": self.n_params}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, n_params={self.n_params:,})"


def frame_times(n_frames: int, hop_seconds: float, offset: float = 0.0) -> torch.Tensor:
    """Centre times of `n_frames` frames every `hop_seconds`, the first at `offset`."""
    return offset + hop_seconds * torch.arange(n_frames, dtype=torch.float64)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
