"""Labelled test audio generated on this machine (see `benchmark` for the tasks)."""

from rankme_fast.audio.datasets.benchmark import PRESETS, Benchmark, Task, cache_dir, make_benchmark
from rankme_fast.audio.datasets.synthesizers import missing as missing_synthesizers

__all__ = ["PRESETS", "Benchmark", "Task", "cache_dir", "make_benchmark", "missing_synthesizers"]
