"""Audio layer: I/O and log-mel features, pretrained-model adapters, generated labelled audio,
streaming embedding extraction into Gram accumulators, and probes. Pure Python."""

from rankme_fast._extras import require

require("rankme_fast.audio", "audio", "soundfile", "soxr", "tqdm")

from rankme_fast.audio import datasets
from rankme_fast.audio.datasets import Benchmark, Task, make_benchmark
from rankme_fast.audio.encoders import (
    AudioEncoder,
    CrepeEncoder,
    FcpeEncoder,
    FrameEmbeddings,
    HuggingFaceEncoder,
    LogMelEncoder,
    ModuleEncoder,
    ResemblyzerEncoder,
    SileroVadEncoder,
    SpeechEmbeddingEncoder,
    available_encoders,
    encoder_from_spec,
    load_encoder,
)
from rankme_fast.audio.extract import Extraction, extract
from rankme_fast.audio.features import MelConfig, MelSpectrogram, log_mel, mel_filterbank
from rankme_fast.audio.probe import ProbeResult, probe
from rankme_fast.audio.waves import SAMPLE_RATE, check_wave, fix_length, load_audio, resample, to_mono

__all__ = [
    "SAMPLE_RATE",
    "AudioEncoder",
    "Benchmark",
    "CrepeEncoder",
    "Extraction",
    "FcpeEncoder",
    "FrameEmbeddings",
    "HuggingFaceEncoder",
    "LogMelEncoder",
    "MelConfig",
    "MelSpectrogram",
    "ModuleEncoder",
    "ProbeResult",
    "ResemblyzerEncoder",
    "SileroVadEncoder",
    "SpeechEmbeddingEncoder",
    "Task",
    "available_encoders",
    "check_wave",
    "datasets",
    "encoder_from_spec",
    "extract",
    "fix_length",
    "load_audio",
    "load_encoder",
    "log_mel",
    "make_benchmark",
    "mel_filterbank",
    "probe",
    "resample",
    "to_mono",
]
