"""Scaling-law fitting: power laws with irreducible loss, joint (N, D) laws, robust fits with
bootstrap confidence intervals, the compute-optimal split, and quality as a law of RankMe."""

from rankme_fast._extras import require

require("rankme_fast.scaling", "fit", "scipy")

from rankme_fast.scaling.analysis import RankMeLaw, compute_optimal, rankme_law
from rankme_fast.scaling.fitting import Fit, fit
from rankme_fast.scaling.forms import FORMS, Form

__all__ = ["FORMS", "Fit", "Form", "RankMeLaw", "compute_optimal", "fit", "rankme_law"]
