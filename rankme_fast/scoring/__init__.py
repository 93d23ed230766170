"""Offline scoring of embedding corpora larger than memory (`rankme-fast score`)."""

from rankme_fast._extras import require

require("rankme_fast.scoring", "io", "tqdm")

from rankme_fast.scoring.job import FileReport, ScoreOptions, ScoreResult, init_distributed_from_env, score_files

__all__ = ["FileReport", "ScoreOptions", "ScoreResult", "init_distributed_from_env", "score_files"]
