"""Scaling-law fitting: power laws with irreducible loss, joint (N, D) laws, robust fits with
bootstrap confidence intervals, the compute-optimal split, quality as a law of RankMe, and the
test of whether a variable explains quality beyond RankMe."""

from rankme_fast._extras import require

require("rankme_fast.scaling", "fit", "scipy")

from rankme_fast.scaling.compute_and_quality import RankMeLaw, compute_optimal, rankme_law
from rankme_fast.scaling.fitting import Fit, fit
from rankme_fast.scaling.forms import FORMS, Form
from rankme_fast.scaling.nested import Added, unification_test

__all__ = ["FORMS", "Added", "Fit", "Form", "RankMeLaw", "compute_optimal", "fit", "rankme_law", "unification_test"]
