"""`rankme-fast study`: pre-train a family of audio encoders over an (N, D) grid and one-at-a-time
sweeps, measure each one's RankMe and probe accuracy, fit the scaling laws and write a report."""

from rankme_fast._extras import require

require("rankme_fast.study", "study", "scipy", "matplotlib", "soundfile", "soxr", "tqdm")

from rankme_fast.study.pipeline import StudyResult, run_study
from rankme_fast.study.presets import PRESETS, RunSpec, StudyPreset, get_preset

__all__ = ["PRESETS", "RunSpec", "StudyPreset", "StudyResult", "get_preset", "run_study"]
