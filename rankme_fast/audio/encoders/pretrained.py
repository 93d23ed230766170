"""Adapters for pretrained audio models whose weights ship inside their pip packages:
resemblyzer (GE2E speaker encoder), torchfcpe (FCPE pitch model), the Google speech embedding
(ONNX, shipped in openwakeword 0.4.0) and silero-vad (ONNX). Each imports its package lazily;
`rankme_fast.audio.available_encoders()` says which are missing and why."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings
from pathlib import Path

import numpy as np
import torch

from rankme_fast.audio.encoders import _torchaudio
from rankme_fast.audio.encoders.encoder import AudioEncoder, FrameEmbeddings, count_parameters, frame_times
from rankme_fast.audio.waves import SAMPLE_RATE


def package_dir(module: str, pip_name: str) -> Path:
    """Directory of an installed package, or ModuleNotFoundError naming what to install."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"needs the pip package {pip_name}")
    return Path(spec.origin).parent


class ResemblyzerEncoder(AudioEncoder):
    """GE2E speaker embeddings (256-d, ReLU + L2-normalised) of 1.6 s partial utterances,
    `rate` partials per second; audio is volume-normalised as the package does (no VAD trim, so
    frames stay aligned with the clip)."""

    def __init__(self, *, rate: float = 4.0):
        package_dir("webrtcvad", "webrtcvad-wheels")
        package_dir("resemblyzer", "resemblyzer (pip install --no-deps resemblyzer webrtcvad-wheels)")
        with warnings.catch_warnings():  # it imports scipy.ndimage.morphology, deprecated in scipy
            warnings.simplefilter("ignore", DeprecationWarning)
            from resemblyzer import VoiceEncoder

        self.model = VoiceEncoder(device="cpu", verbose=False).eval()
        self.rate = float(rate)
        self.name, self.dim, self.frame_rate = "resemblyzer", 256, self.rate
        self.n_params = count_parameters(self.model)

    def _embed(self, wave: np.ndarray) -> FrameEmbeddings:
        from resemblyzer import normalize_volume

        wave = normalize_volume(wave.astype(np.float64), -30, increase_only=True).astype(np.float32)
        _, partials, slices = self.model.embed_utterance(wave, return_partials=True, rate=self.rate)
        times = torch.tensor([(s.start + s.stop) / 2 / SAMPLE_RATE for s in slices], dtype=torch.float64)
        return FrameEmbeddings(torch.from_numpy(np.asarray(partials, dtype=np.float32)), times)


class FcpeEncoder(AudioEncoder):
    """FCPE (torchfcpe's bundled model): the 512-d conformer output after its final LayerNorm,
    one frame per 10 ms of its 128-band mel spectrogram."""

    def __init__(self):
        package_dir("torchfcpe", "torchfcpe (pip install --no-deps torchfcpe einops local-attention)")
        with _torchaudio.standin():
            from torchfcpe import spawn_bundled_infer_model

        with contextlib.redirect_stdout(io.StringIO()):  # it prints its configuration
            self.model = spawn_bundled_infer_model(device="cpu").eval()
        mel = self.model.get_mel_config()
        self.sample_rate, self.hop = int(mel["sr"]), int(mel["hop_size"])
        self.name, self.dim, self.frame_rate = "fcpe", int(self.model.model.hidden_dims), self.sample_rate / self.hop
        self.n_params = count_parameters(self.model.model)
        self._captured: list[torch.Tensor] = []
        self.model.model.norm.register_forward_hook(lambda _m, _i, out: self._captured.append(out))

    def layer_module(self) -> torch.nn.Module:
        """The conformer (its six encoder layers are the stack)."""
        return self.model.model

    def _embed(self, wave: np.ndarray) -> FrameEmbeddings:
        self._captured.clear()
        mel = self.model.wav2mel(torch.from_numpy(wave)[None, :, None], self.sample_rate)
        self.model.model(mel)
        values = self._captured.pop()[0].float()
        return FrameEmbeddings(values, frame_times(len(values), self.hop / self.sample_rate))


class PestoEncoder(AudioEncoder):
    """PESTO (pesto-pitch's bundled mir-1k_g7 model): the 657 features its Toeplitz output layer
    reads (the flattened last convolution, before the pitch-bin projection and softmax), one
    frame per `step_ms` of its harmonic CQT. Its CQT pads by reflection 2048 samples each side,
    so a clip shorter than that is zero-padded to 4097 samples first."""

    minimum = 4097

    def __init__(self, step_ms: float = 10.0):
        package_dir("pesto", "pesto-pitch (pip install --no-deps pesto-pitch omegaconf)")
        with _torchaudio.standin():
            from pesto import load_model

        self.model = load_model("mir-1k_g7", step_size=step_ms, sampling_rate=SAMPLE_RATE).eval()
        self.name, self.frame_rate = "pesto", 1000.0 / step_ms
        self.n_params = count_parameters(self.model.encoder)  # learned weights (not the fixed CQT kernels)
        self._captured: list[torch.Tensor] = []
        self.model.encoder.fc.register_forward_pre_hook(lambda _module, inputs: self._captured.append(inputs[0]))
        with torch.inference_mode():
            self.dim = int(self._embed(np.zeros(SAMPLE_RATE, dtype=np.float32)).values.shape[1])

    def _embed(self, wave: np.ndarray) -> FrameEmbeddings:
        self._captured.clear()
        wave = np.pad(wave, (0, max(0, self.minimum - wave.size)))
        self.model(torch.from_numpy(wave), sr=self.sample_rate, return_activations=True)
        values = self._captured.pop().float()
        return FrameEmbeddings(values, frame_times(len(values), 1.0 / self.frame_rate))


class SpeechEmbeddingEncoder(AudioEncoder):
    """Google's speech_embedding (96-d every 80 ms over 76-frame, 775 ms, mel windows), as
    ONNX in openwakeword 0.4.0, run with onnxruntime. Clips shorter than one window are padded."""

    window, step, mel_hop, mel_window = 76, 8, 160, 560

    def __init__(self):
        models = package_dir("openwakeword", "openwakeword==0.4.0") / "resources" / "models"
        if not (models / "embedding_model.onnx").exists():
            raise ModuleNotFoundError(
                "openwakeword ships its ONNX models only in 0.4.0 (pip install openwakeword==0.4.0)"
            )
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = options.intra_op_num_threads = 1
        self.mel = onnxruntime.InferenceSession(str(models / "melspectrogram.onnx"), options)
        self.embedding = onnxruntime.InferenceSession(str(models / "embedding_model.onnx"), options)
        self.name, self.dim, self.frame_rate = "speech-embedding", 96, SAMPLE_RATE / (self.mel_hop * self.step)
        self.n_params = onnx_parameters(models / "melspectrogram.onnx") + onnx_parameters(
            models / "embedding_model.onnx"
        )

    def _embed(self, wave: np.ndarray) -> FrameEmbeddings:
        minimum = (self.window - 1) * self.mel_hop + self.mel_window
        pcm = np.round(np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.float32)  # the model takes int16 scale
        pcm = np.pad(pcm, (0, max(0, minimum - pcm.size)))
        spec = self.mel.run(None, {"input": pcm[None]})[0][0, 0] / 10.0 + 2.0  # openwakeword's scaling
        starts = range(0, spec.shape[0] - self.window + 1, self.step)
        windows = np.stack([spec[s : s + self.window] for s in starts])[..., None].astype(np.float32)
        values = self.embedding.run(None, {"input_1": windows})[0].reshape(len(windows), self.dim)
        centre = ((self.window - 1) * self.mel_hop + self.mel_window) / 2 / SAMPLE_RATE
        hop = self.step * self.mel_hop / SAMPLE_RATE
        return FrameEmbeddings(torch.from_numpy(values.copy()), frame_times(len(values), hop, centre))


class SileroVadEncoder(AudioEncoder):
    """silero-vad (ONNX): the 128-d LSTM state after each 32 ms chunk (512 samples plus the
    64-sample context the model expects), i.e. what its speech/non-speech decision reads."""

    chunk, context = 512, 64

    def __init__(self):
        path = package_dir("silero_vad", "silero-vad") / "data" / "silero_vad.onnx"
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = options.intra_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options)
        self.name, self.dim, self.frame_rate = "silero-vad", 128, SAMPLE_RATE / self.chunk
        self.n_params = onnx_parameters(path)

    def _embed(self, wave: np.ndarray) -> FrameEmbeddings:
        n = -(-wave.size // self.chunk)
        padded = np.pad(wave, (self.context, n * self.chunk - wave.size))
        state = np.zeros((2, 1, 128), dtype=np.float32)
        rate = np.array(SAMPLE_RATE, dtype=np.int64)
        values = np.empty((n, 128), dtype=np.float32)
        for i in range(n):
            piece = padded[i * self.chunk : (i + 1) * self.chunk + self.context][None]
            _, state = self.session.run(None, {"input": piece, "state": state, "sr": rate})
            values[i] = state[0, 0]
        hop = self.chunk / SAMPLE_RATE
        return FrameEmbeddings(torch.from_numpy(values), frame_times(n, hop, hop / 2))


def onnx_parameters(path: str | Path) -> int:
    """Number of stored weights in an ONNX graph: initializers and constant tensors, including
    those inside control-flow subgraphs (silero-vad keeps its weights in `If` branches)."""
    import onnx

    def count(graph) -> int:
        total = sum(int(np.prod(t.dims)) for t in graph.initializer)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.TENSOR and node.op_type == "Constant":
                    total += int(np.prod(attribute.t.dims))
                total += sum(count(g) for g in [attribute.g, *attribute.graphs] if g is not None and g.node)
        return total

    return count(onnx.load(str(path)).graph)
