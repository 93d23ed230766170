"""rankme_fast: exact, streaming effective rank (RankMe) of embedding sets of any size.

The core (`rankme`, `spectrum`, `GramAccumulator`, the kernels) needs numpy, torch and
scipy-openblas32; the layers `rf.scaling` (extra `fit`), `rf.scoring` (`io`), `rf.audio`
(`audio`) and `rf.study` (`study`) load on first use and name their extra when it is missing.
"""

from rankme_fast import conventions, integrations, metrics
from rankme_fast._extras import lazy_attributes
from rankme_fast._native import native as _C  # noqa: F401  (rf._C: the compiled module, for tests and tools)
from rankme_fast.accumulate import GramAccumulator
from rankme_fast.api import block_spectra, compare, rankme, rankme_many, spectra_many, spectrum
from rankme_fast.backends import available_backends
from rankme_fast.spectrum import Spectrum

__version__ = "0.1.0"

__all__ = [
    "GramAccumulator",
    "Spectrum",
    "__version__",
    "available_backends",
    "block_spectra",
    "compare",
    "conventions",
    "integrations",
    "metrics",
    "rankme",
    "rankme_many",
    "spectra_many",
    "spectrum",
]

__getattr__ = lazy_attributes(__name__, {
    layer: f"rankme_fast.{layer}" for layer in ("scaling", "scoring", "audio", "study")
})  # fmt: skip
