"""Audio encoders behind one interface (`AudioEncoder`)."""

from rankme_fast.audio.encoders.crepe import CrepeEncoder
from rankme_fast.audio.encoders.encoder import AudioEncoder, FrameEmbeddings
from rankme_fast.audio.encoders.generic import HuggingFaceEncoder, LogMelEncoder, ModuleEncoder
from rankme_fast.audio.encoders.pretrained import (
    FcpeEncoder,
    PestoEncoder,
    ResemblyzerEncoder,
    SileroVadEncoder,
    SpeechEmbeddingEncoder,
)
from rankme_fast.audio.encoders.registry import ENCODERS, available_encoders, encoder_from_spec, load_encoder

__all__ = [
    "ENCODERS",
    "AudioEncoder",
    "CrepeEncoder",
    "FcpeEncoder",
    "FrameEmbeddings",
    "HuggingFaceEncoder",
    "LogMelEncoder",
    "ModuleEncoder",
    "PestoEncoder",
    "ResemblyzerEncoder",
    "SileroVadEncoder",
    "SpeechEmbeddingEncoder",
    "available_encoders",
    "encoder_from_spec",
    "load_encoder",
]
