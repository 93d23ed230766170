"""Encoders that wrap what the user brings: the log-mel features themselves (the baseline),
any `torch.nn.Module` or callable, and Hugging Face `transformers` audio models loaded from a
local directory (never from the hub at run time)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rankme_fast.audio.encoders.encoder import AudioEncoder, FrameEmbeddings, count_parameters, frame_times
from rankme_fast.audio.features import MelConfig, MelSpectrogram
from rankme_fast.audio.waves import SAMPLE_RATE
from rankme_fast.integrations.layers import LayerSpec, choose


class LogMelEncoder(AudioEncoder):
    """Log-mel frames as embeddings: the no-learning baseline (64-d every 10 ms by default)."""

    def __init__(self, config: MelConfig = MelConfig()):  # noqa: B008 - frozen dataclass
        self.features = MelSpectrogram(config)
        self.sample_rate = config.sr
        self.name, self.dim, self.frame_rate, self.n_params = "log-mel", config.n_mels, self.features.frame_rate, 0

    def _embed(self, wave: np.ndarray) -> FrameEmbeddings:
        values = self.features(torch.from_numpy(wave), log=True)
        return FrameEmbeddings(values, frame_times(len(values), 1.0 / self.frame_rate))


class ModuleEncoder(AudioEncoder):
    """Any `torch.nn.Module` or callable mapping a (1, samples) float32 tensor to (frames, D),
    (1, frames, D) or (D,) (one frame). `dim` and `frame_rate` are read off one second of
    silence unless given."""

    def __init__(
        self,
        model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
        *,
        name: str | None = None,
        sample_rate: int = SAMPLE_RATE,
        dim: int | None = None,
        frame_rate: float | None = None,
    ):
        if not callable(model):
            raise TypeError(f"model must be a torch.nn.Module or a callable, got {type(model).__name__}")
        self.model, self.sample_rate = model, int(sample_rate)
        self.name = name or getattr(model, "name", None) or type(model).__name__
        self.n_params = count_parameters(model) if isinstance(model, torch.nn.Module) else 0
        if isinstance(model, torch.nn.Module):
            model.eval()
        if dim is None or frame_rate is None:
            with torch.inference_mode():
                probe = self._frames(np.zeros(self.sample_rate, dtype=np.float32))
            dim = probe.shape[1] if dim is None else dim
            frame_rate = float(probe.shape[0]) if frame_rate is None else frame_rate
        self.dim, self.frame_rate = int(dim), float(frame_rate)

    def _frames(self, wave: np.ndarray) -> torch.Tensor:
        out = self.model(torch.from_numpy(wave)[None])
        out = out[0] if isinstance(out, (tuple, list)) else out
        out = torch.as_tensor(out).detach().float().cpu()
        if out.ndim == 3 and out.shape[0] == 1:
            out = out[0]
        if out.ndim == 1:
            out = out[None]
        if out.ndim != 2:
            raise ValueError(f"{self.name} must return (frames, D), (1, frames, D) or (D,), got {tuple(out.shape)}")
        return out

    def _embed(self, wave: np.ndarray) -> FrameEmbeddings:
        values = self._frames(wave)
        return FrameEmbeddings(values, frame_times(len(values), 1.0 / self.frame_rate, 0.5 / self.frame_rate))

    def layer_module(self) -> torch.nn.Module | None:
        hookable = isinstance(self.model, torch.nn.Module) and not isinstance(self.model, torch.jit.ScriptModule)
        return self.model if hookable else None

    def layer_names(self, layers: LayerSpec = "all") -> list[str]:
        if self.layer_module() is not None:
            return super().layer_names(layers)
        return choose(self._output_names(np.zeros(self.sample_rate, dtype=np.float32)), layers, what=self.name)

    def _embed_layers(self, wave: np.ndarray, layers: LayerSpec) -> dict[str, torch.Tensor]:
        """Hooks on a module; a TorchScript module or callable instead returns its layers'
        outputs, a tuple or list of tensors: output.0, output.1, …"""
        if self.layer_module() is not None:
            return super()._embed_layers(wave, layers)
        outputs = self._outputs(wave)
        names = [f"output.{i}" for i in range(len(outputs))]
        chosen = choose(names, layers, what=self.name)
        return {name: _as_frames(outputs[names.index(name)], self.name) for name in chosen}

    def _outputs(self, wave: np.ndarray) -> list[torch.Tensor]:
        out = self.model(torch.from_numpy(wave)[None])
        if not isinstance(out, (tuple, list)) or not all(isinstance(t, torch.Tensor) for t in out):
            raise ValueError(f"{self.name}: a TorchScript module or callable shows its layers by returning a tuple or "
                             "list of tensors, one per layer; it returned "
                             f"{type(out).__name__}")  # fmt: skip
        return list(out)

    def _output_names(self, wave: np.ndarray) -> list[str]:
        with torch.inference_mode():
            return [f"output.{i}" for i in range(len(self._outputs(wave)))]


def _as_frames(output: torch.Tensor, name: str) -> torch.Tensor:
    """A layer's output as (frames, D) float32: (1, frames, D) or (frames, D)."""
    out = output.detach().float().cpu()
    if out.ndim == 3 and out.shape[0] == 1:
        out = out[0]
    if out.ndim != 2:
        raise ValueError(f"{name}: a layer's output must be (frames, D) or (1, frames, D), got {tuple(out.shape)}")
    return out


class HuggingFaceEncoder(AudioEncoder):
    """A `transformers` audio model (wav2vec2, HuBERT, WavLM, Whisper encoder, AST, …) from a
    local directory written by `save_pretrained`; frames are the hidden states of `layer`
    (-1: the last). Loaded with `local_files_only=True`: nothing is downloaded."""

    def __init__(self, path: str | Path, *, layer: int = -1):
        path = Path(path)
        if not (path / "config.json").exists():
            raise ValueError(f"{path}: not a saved transformers model (no config.json)")
        try:
            import transformers
        except ImportError as error:
            raise ModuleNotFoundError("Hugging Face models need the pip package transformers") from error
        self.extractor = transformers.AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
        self.model = transformers.AutoModel.from_pretrained(path, local_files_only=True).eval()
        if hasattr(self.model, "get_encoder") and self.model.config.is_encoder_decoder:
            self.model = self.model.get_encoder()
        self.sample_rate = int(getattr(self.extractor, "sampling_rate", SAMPLE_RATE))
        self.layer = layer
        self.name = f"hf-{path.name}"
        self.n_params = count_parameters(self.model)
        probe = self._hidden(np.zeros(self.sample_rate, dtype=np.float32))
        self.dim, self.frame_rate = probe.shape[1], float(probe.shape[0])

    def _hidden(self, wave: np.ndarray) -> torch.Tensor:
        inputs = self.extractor(wave, sampling_rate=self.sample_rate, return_tensors="pt")
        output = self.model(**inputs, output_hidden_states=True)
        return output.hidden_states[self.layer][0].float()

    def _embed(self, wave: np.ndarray) -> FrameEmbeddings:
        values = self._hidden(wave)
        return FrameEmbeddings(values, frame_times(len(values), 1.0 / self.frame_rate, 0.5 / self.frame_rate))

    def layer_names(self, layers: LayerSpec = "all") -> list[str]:
        """hidden_states.0 (the input embedding) to hidden_states.L (the last layer)."""
        count = self.model.config.num_hidden_layers + 1
        return choose([f"hidden_states.{i}" for i in range(count)], layers, what=self.name)

    def _embed_layers(self, wave: np.ndarray, layers: LayerSpec) -> dict[str, torch.Tensor]:
        inputs = self.extractor(wave, sampling_rate=self.sample_rate, return_tensors="pt")
        hidden = self.model(**inputs, output_hidden_states=True).hidden_states
        return {name: hidden[int(name.rsplit(".", 1)[1])][0].float() for name in self.layer_names(layers)}
