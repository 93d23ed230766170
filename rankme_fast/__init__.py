"""rankme_fast: exact, streaming effective rank (RankMe) of embedding sets of any size."""

from rankme_fast import conventions, integrations, metrics
from rankme_fast._native import native as _C
from rankme_fast.accumulate import GramAccumulator
from rankme_fast.api import rankme, rankme_many, spectrum
from rankme_fast.backends import available_backends
from rankme_fast.spectrum import Spectrum

__version__ = "0.1.0"

__all__ = [
    "_C",
    "GramAccumulator",
    "Spectrum",
    "__version__",
    "available_backends",
    "conventions",
    "integrations",
    "metrics",
    "rankme",
    "rankme_many",
    "spectrum",
]
