"""The error bars of a corpus job (`--ci`): each metric of a total state with its
delete-one-block jackknife estimate, the block spectra behind them (for paired comparisons of
two jobs on the same files), and, when asked, RankMe against N along the blocks."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass

from rankme_fast.accumulate import GramAccumulator
from rankme_fast.corpus.options import JobOptions
from rankme_fast.uncertainty import BlockSpectra, Estimate, Growth


@dataclass(frozen=True)
class Intervals:
    estimates: dict[str, Estimate]  # metric -> its jackknife estimate
    spectra: BlockSpectra
    growth: Growth | None  # RankMe against N, with `growth` in the options
    warnings: tuple[str, ...] = ()  # what the jackknife warned of (too few rows for D, or per block)


def interval_report(
    state: GramAccumulator, options: JobOptions, *, label: str = "", metrics: tuple[str, ...] | None = None
) -> Intervals | None:
    """Intervals of a blocked state, or None without `ci`, or with rows in fewer than 2 blocks
    (then a warning on stderr names `label`: with blocks by file, that is fewer than 2 files).
    The growth curve needs rows in 4 or more blocks."""
    if options.ci is None:
        return None
    held = sum(1 for count in state.block_counts if count)
    if held < 2:
        print(f"warning: no interval{f' for {label}' if label else ''}: the rows went to {held} of {state.blocks} "
              "blocks (an interval needs rows in 2 or more; with blocks by file, 2 or more files)",
              file=sys.stderr)  # fmt: skip
        return None
    spectra = state.block_spectra()
    wanted = options.metrics if metrics is None else metrics
    with warnings.catch_warnings(record=True) as caught:  # said once, on stderr, by the command
        warnings.simplefilter("always", RuntimeWarning)
        estimates = {name: spectra.estimate(name, ci=options.ci, eps=options.eps) for name in wanted}
        curve = None
        if options.growth and "rankme" in wanted and held >= 4:
            curve = state.growth("rankme", ci=options.ci, eps=options.eps)
    said = tuple(dict.fromkeys(str(w.message).partition(": ")[2] for w in caught))
    for message in said:
        print(f"warning{f' ({label})' if label else ''}: {message}", file=sys.stderr)
    return Intervals(estimates, spectra, curve, said)
