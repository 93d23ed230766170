"""Offline scoring of embedding corpora larger than memory (`rankme-fast score`)."""

from rankme_fast._extras import require

require("rankme_fast.scoring", "io", "tqdm")

from rankme_fast.corpus import FileReport
from rankme_fast.scoring.embedding_corpus import ScoreOptions, ScoreResult, score_files

__all__ = ["FileReport", "ScoreOptions", "ScoreResult", "score_files"]
