"""The study's outputs: runs.csv, fits.json, the PNG plots and report.md (tables, figures and
findings stated from the numbers, including where RankMe did not predict quality)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from rankme_fast.study.presets import StudyPreset

COLUMNS = [
    "id",
    "family",
    "name",
    "arch",
    "width",
    "depth",
    "emb_dim",
    "frames",
    "objective",
    "data_seconds",
    "n_params",
    "tokens",
    "compute",
    "train_loss",
    "held_out_loss",
    "dim",
    "clip_rankme",
    "clip_rankme_centered",
    "frame_rankme",
    "frame_rankme_centered",
    "clip_rankme_capped",
]


def write_runs_csv(records: list[dict], tasks: list[str], path: Path) -> None:
    columns = [*COLUMNS, *(f"accuracy_{t}" for t in tasks), "mean_accuracy"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow({c: record.get(c, "") for c in columns})


def _figure(width: float, height: float, panels: int = 1, rows: int = 1):
    from matplotlib.figure import Figure  # no pyplot: the user's backend is left alone

    figure = Figure(figsize=(width, height))
    columns = -(-panels // rows)
    axes = figure.subplots(rows, columns, squeeze=False).reshape(-1)
    for extra in axes[panels:]:
        extra.set_visible(False)
    return figure, axes[:panels]


def plot_loss(records: list[dict], fits: dict, preset: StudyPreset, path: Path) -> None:
    """Held-out pre-training loss vs N at each D, with the fitted Droppo law."""
    from rankme_fast.study.analysis import grid_rows

    figure, (ax,) = _figure(6, 4.2)
    rows = grid_rows(records, preset)
    law = fits["loss_law"]
    for i, seconds in enumerate(sorted({r["data_seconds"] for r in rows})):
        at = sorted((r for r in rows if r["data_seconds"] == seconds), key=lambda r: r["n_params"])
        n = np.array([r["n_params"] for r in at], dtype=np.float64)
        ax.scatter(n, [r["held_out_loss"] for r in at], color=f"C{i}", zorder=3, label=f"D = {seconds:g} s")
        if "params" in law:
            p = law["params"]
            grid = np.geomspace(n.min() / 1.5, n.max() * 1.5, 100)
            curve = ((p["N_c"] / grid) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / seconds) ** p["alpha_D"]
            ax.plot(grid, curve + p["L_inf"], color=f"C{i}")
    ax.set(xscale="log", yscale="log", xlabel="N (encoder parameters)", ylabel="held-out APC loss (L1)")
    ax.set_title("pre-training loss vs model size, lines: fitted L(N, D)", fontsize=9)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _groups(records: list[dict], preset: StudyPreset) -> dict[str, list[dict]]:
    from rankme_fast.study.analysis import grid_rows, sweep_rows

    groups = {"N × D grid": grid_rows(records, preset)}
    groups.update({f"{v} sweep": sweep_rows(records, preset, v) for v in preset.sweeps})
    groups["pretrained ladder"] = [r for r in records if r["family"] == "pretrained"]
    return groups


def plot_quality(records: list[dict], fits: dict, preset: StudyPreset, path: Path) -> None:
    """Mean probe accuracy vs clip RankMe (log–log), coloured by swept variable, with the
    fitted power law of each family."""
    figure, (ax,) = _figure(6.5, 4.6)
    for i, (group, rows) in enumerate(_groups(records, preset).items()):
        if rows:
            ax.scatter(
                [r["clip_rankme"] for r in rows],
                [r["mean_accuracy"] for r in rows],
                color=f"C{i}",
                marker="*" if group == "pretrained ladder" else "o",
                s=40,
                alpha=0.8,
                label=group,
            )
    for family, style in (("trained", "-"), ("pretrained", "--")):
        law = fits["quality_laws"].get(f"{family}/clip_rankme/mean", {})
        if "params" in law:
            x = np.array([r["clip_rankme"] for r in records if r["family"] == family])
            grid = np.geomspace(x.min() / 1.2, x.max() * 1.2, 50)
            ax.plot(
                grid,
                law["params"]["a"] * grid ** law["params"]["b"],
                "k" + style,
                lw=1,
                label=f"{family}: acc ∝ RankMe^{law['params']['b']:.2f}",
            )
    ax.set(xscale="log", yscale="log", xlabel="RankMe (clip embeddings)", ylabel="mean linear-probe accuracy")
    ax.set_title("downstream quality vs RankMe", fontsize=9)
    ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_sweeps(fits: dict, path: Path) -> None:
    """Clip RankMe against each swept variable."""
    from matplotlib.ticker import NullFormatter

    sweeps = fits["sweeps"]
    rows = 1 if len(sweeps) <= 4 else 2
    columns = -(-len(sweeps) // rows)
    figure, axes = _figure(3.0 * columns, 2.8 * rows, len(sweeps), rows)
    for ax, (variable, entry) in zip(axes, sweeps.items(), strict=True):
        values = entry["values"]
        numeric = all(isinstance(v, (int, float)) for v in values)
        positions = values if numeric else list(range(len(values)))
        ax.plot(positions, entry["clip_rankme"], "o-", color="C0")
        if numeric and values and min(values) > 0:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_xticks(positions, [str(v) for v in values])
        title = variable + (f"  ρ={entry['spearman_rankme']:.2f}" if "spearman_rankme" in entry else "")
        ax.set(xlabel=entry["column"], title=title)
        ax.title.set_fontsize(9)
        ax.set_ylabel("RankMe (clip)", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _ci(law: dict, name: str) -> str:
    low, high = law["ci"][name]
    return f"{law['params'][name]:.3g} [{low:.3g}, {high:.3g}]"


def findings(fits: dict, tasks: list[str]) -> list[str]:
    """Plain statements from the numbers: the loss law, where RankMe ranked quality and where not."""
    lines = []
    law = fits["loss_law"]
    if "params" in law:
        extrapolation = law.get("extrapolation") or {}
        lines.append(
            f"Pre-training loss follows L(N, D) with α_N = {_ci(law, 'alpha_N')}, α_D = {_ci(law, 'alpha_D')}"
            f", L_∞ = {_ci(law, 'L_inf')} (R² in log space {law['r2_log']:.3f}"
            + (
                f"; predicting the largest N from the others: {100 * extrapolation['relative_error']:.1f} % mean error)"
                if "relative_error" in extrapolation
                else ")"
            )
            + "."
        )
    else:
        lines.append(f"The L(N, D) fit failed: {law.get('error')}.")
    for family in ("trained", "pretrained"):
        held, failed = [], []
        for task in [*tasks, "mean"]:
            law = fits["quality_laws"].get(f"{family}/clip_rankme/{task}")
            if not law or "spearman" not in law:
                continue
            text = f"{task} (ρ = {law['spearman']:.2f}, b = {law['params']['b']:.2f})"
            (held if law["spearman"] > 0 and law["spearman_p"] < 0.05 else failed).append(text)
        if held or failed:
            lines.append(
                f"{family.capitalize()} models: RankMe ranked accuracy significantly (Spearman p < 0.05, "
                f"positive) for {', '.join(held) or 'no task'}; it did **not** for "
                f"{', '.join(failed) or 'any other task'}."
            )
    return lines


def write_report(
    records: list[dict], fits: dict, preset: StudyPreset, tasks: list[str], out: Path, meta: dict[str, Any]
) -> dict[str, Path]:
    """runs.csv, fits.json, loss_vs_n.png, quality_vs_rankme.png, rankme_vs_variables.png, report.md."""
    paths = {
        name: out / name
        for name in (
            "runs.csv",
            "fits.json",
            "loss_vs_n.png",
            "quality_vs_rankme.png",
            "rankme_vs_variables.png",
            "report.md",
        )
    }
    write_runs_csv(records, tasks, paths["runs.csv"])
    paths["fits.json"].write_text(json.dumps({**fits, "meta": meta}, indent=1, default=float) + "\n")
    plot_loss(records, fits, preset, paths["loss_vs_n.png"])
    plot_quality(records, fits, preset, paths["quality_vs_rankme.png"])
    plot_sweeps(fits, paths["rankme_vs_variables.png"])

    md = [
        f"# RankMe scaling study — preset `{preset.name}`",
        "",
        f"{meta['runs']} pre-training runs and {meta['pretrained']} pretrained encoders: "
        f"{meta['run_minutes']:.1f} minutes of pre-training and evaluation on {meta['machine']} (this "
        f"invocation, which reads finished runs back: {meta['minutes']:.1f} minutes). "
        f"Evaluation: the `{preset.eval_preset}` labelled benchmark "
        f"({meta['eval_clips']} clips, {meta['synthesizers']} synthesizers); pre-training audio: "
        f"`{preset.pool_preset}` rendered with seeds {list(preset.pool_seeds)} ({meta['pool_seconds']:.0f} s), "
        f"labels unused. Base model: {preset.base.to_dict()}; training: {preset.training.steps} steps of "
        f"{preset.training.batch_size} windows, {preset.training.objective.upper()}.",
        "",
        "## Findings",
        "",
    ]
    md += [f"- {line}" for line in findings(fits, tasks)]
    md += ["", "## Pre-training loss: L(N, D)", "", "![loss vs N](loss_vs_n.png)", ""]
    law = fits["loss_law"]
    if "params" in law:
        md += ["| parameter | value | 95% CI |", "|---|---|---|"]
        md += [f"| {k} | {v:.4g} | [{law['ci'][k][0]:.4g}, {law['ci'][k][1]:.4g}] |" for k, v in law["params"].items()]
    md += [
        "",
        "## Quality vs RankMe",
        "",
        "![quality vs RankMe](quality_vs_rankme.png)",
        "",
        "accuracy = a·RankMe^b, clip-embedding RankMe; ρ: Spearman, τ: Kendall.",
        "",
        "| family | task | points | b [95% CI] | R² (log) | ρ (p) | τ |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, law in fits["quality_laws"].items():
        family, kind, task = key.split("/")
        if kind != "clip_rankme" or "params" not in law:
            continue
        md.append(
            f"| {family} | {task} | {law['points']} | {_ci(law, 'b')} | {law['r2_log']:.3f} | "
            f"{law['spearman']:.2f} ({law['spearman_p']:.2g}) | {law['kendall']:.2f} |"
        )
    md += [
        "",
        "## RankMe vs each variable",
        "",
        "![RankMe vs variables](rankme_vs_variables.png)",
        "",
        "## Runs",
        "",
        "| run | N | D (s) | held-out loss | RankMe clip | RankMe frame | mean acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        loss = f"{r['held_out_loss']:.4f}" if r.get("held_out_loss") is not None else ""
        md.append(
            f"| {r['name']} | {r['n_params']:,} | {r.get('data_seconds', '')} | {loss} | "
            f"{r['clip_rankme']:.1f}{' (capped)' if r['clip_rankme_capped'] else ''} | {r['frame_rankme']:.1f} | "
            f"{r['mean_accuracy']:.3f} |"
        )
    md += [
        "",
        "Files: `runs.csv` (one row per run), `fits.json` (every fit with CIs), `runs/*.json` (each run, "
        "with its loss curve).",
    ]
    paths["report.md"].write_text("\n".join(md) + "\n")
    return paths
