"""The corpus-job engine that `rankme-fast score` and `rankme-fast audio` run on."""

from rankme_fast.corpus.engine import Corpus, Outcome, Unit, run_job
from rankme_fast.corpus.intervals import Intervals, interval_report
from rankme_fast.corpus.options import BadFileError, FileReport, JobOptions, add_job_arguments, job_arguments
from rankme_fast.corpus.paths import expand_paths

__all__ = [
    "BadFileError",
    "Corpus",
    "FileReport",
    "Intervals",
    "JobOptions",
    "Outcome",
    "Unit",
    "add_job_arguments",
    "expand_paths",
    "interval_report",
    "job_arguments",
    "run_job",
]
