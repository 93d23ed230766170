"""The `rankme-fast` command: `fit TABLE --x COL --y COL [--x2 COL] --form NAME --out DIR`,
`study --preset quick|full --out DIR`, `score PATH...` (rankme_fast.scoring.score_command) and
`audio ENCODER PATH...` (rankme_fast.audio.audio_command)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np


def _fit(args: argparse.Namespace) -> int:
    from rankme_fast import scaling
    from rankme_fast.scaling.fit_report import column, read_table, write_report

    table = read_table(args.table)
    x = column(table, args.x, args.table)
    if args.x2:
        x = np.column_stack([x, column(table, args.x2, args.table)])
    y = column(table, args.y, args.table)
    result = scaling.fit(args.form, x, y, loss=args.loss, delta=args.delta, bootstrap=args.bootstrap, seed=args.seed)
    paths = write_report(result, args.out, title=f"{args.y} vs {args.x}" + (f", {args.x2}" if args.x2 else ""))
    print(result.summary())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0 if result.converged else 2


def _study(args: argparse.Namespace) -> int:
    from rankme_fast.study import run_study

    seeds = tuple(int(s) for s in args.noise_seeds.split(",") if s.strip()) if args.noise_seeds else ()
    run_study(args.preset, args.out, ladder=not args.no_ladder, bootstrap=args.bootstrap, layers=args.layers,
              noise_seeds=seeds, noise_minutes=args.noise_minutes, trajectory=args.trajectory,
              trajectory_minutes=args.trajectory_minutes, predict=args.predict,
              extrapolate=args.extrapolate)  # fmt: skip
    return 0


def _add_audio_parser(commands: argparse._SubParsersAction) -> None:
    """`rankme-fast audio`, when the audio extra is installed (rankme_fast.audio.audio_command)."""
    try:
        from rankme_fast.audio.audio_command import add_parser
    except ImportError as error:
        missing = commands.add_parser("audio", help=f"unavailable: {error}")
        missing.set_defaults(run=lambda args, error=error: _unavailable(error))
        return
    add_parser(commands)


def _unavailable(error: ImportError) -> int:
    print(f"rankme-fast audio: {error}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rankme-fast", description="RankMe and scaling-law tools")
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="fit a scaling law to a CSV/JSON table and write a report")
    fit.add_argument("table", help="CSV with a header row, or JSON (records or columns)")
    fit.add_argument("--x", required=True, help="column of x (N for joint forms)")
    fit.add_argument("--x2", help="column of D, for the joint forms (droppo, kaplan, chinchilla)")
    fit.add_argument("--y", required=True, help="column of y (loss or quality)")
    fit.add_argument("--form", default="saturating", help="power, saturating, increasing_power, "
                     "increasing_power_offset, droppo, kaplan, chinchilla, broken")  # fmt: skip
    fit.add_argument("--loss", default="huber", choices=["huber", "squared"])
    fit.add_argument("--delta", type=float, default=1e-3, help="Huber threshold on log residuals")
    fit.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the CIs")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--out", default="report", help="directory for fit.json, fit.md, fit.png")
    fit.set_defaults(run=_fit)
    study = commands.add_parser("study", help="pre-train an audio encoder family, measure RankMe and probe "
                                "accuracy, fit the scaling laws, write a report (resumable)")  # fmt: skip
    study.add_argument("--preset", default="quick", choices=["micro", "quick", "full", "paper"],
                       help="micro: CI-sized; quick: ~10 min here (make demo); full: ~1 hour; paper: every run "
                       "trained to convergence, ~2 hours")  # fmt: skip
    study.add_argument("--out", default="study", help="directory for report.md, runs.csv, fits.json, plots")
    study.add_argument("--no-ladder", action="store_true", help="skip the pretrained-model ladder")
    study.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the CIs")
    study.add_argument("--layers", action="store_true",
                       help="also score every layer of the depth sweep's and the ladder's encoders (RankMe and "
                       "probe per layer; layers.json, layers.png)")  # fmt: skip
    study.add_argument("--noise-seeds", metavar="S,S",
                       help="also repeat the grid's corner cells and every sweep run with these training seeds, and "
                       "score untrained encoders (the noise floor; out/noise/)")  # fmt: skip
    study.add_argument("--noise-minutes", type=float, metavar="M",
                       help="start no new seed replicate after M minutes (0: report those done)")
    study.add_argument("--trajectory", action="store_true",
                       help="also train the grid again with early-stopping audio apart from the probe clips, "
                       "recording RankMe at every check and probe accuracy at sqrt(2)-spaced checkpoints "
                       "(choosing checkpoints and models without labels; out/trajectory/)")  # fmt: skip
    study.add_argument("--trajectory-minutes", type=float, metavar="M",
                       help="start no new trajectory run after M minutes")
    study.add_argument("--predict", action="store_true",
                       help="register the predicted losses of the preset's cells outside the grid "
                       "(out/extrapolation/predictions.json, written once; commit it before "
                       "--extrapolate)")  # fmt: skip
    study.add_argument("--extrapolate", action="store_true",
                       help="train the registered cells outside the grid (needs --predict's file)")
    study.set_defaults(run=_study)
    from rankme_fast.scoring.score_command import add_parser as add_score_parser

    add_score_parser(commands)
    _add_audio_parser(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:
        print(f"rankme-fast {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
