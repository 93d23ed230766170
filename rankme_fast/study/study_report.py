"""The study's outputs: runs.csv, fits.json, the PNG plots and report.md (tables, figures and
findings stated from the numbers, including where RankMe did not predict quality)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from rankme_fast.study.decision_report import (
    decision_findings,
    extrapolation_section,
    plot_extrapolation,
    plot_trajectory,
    trajectory_section,
)
from rankme_fast.study.presets import StudyPreset
from rankme_fast.study.study_fits import compute_curve, grid_rows, sweep_rows

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
    "clip_rankme_se",
    "steps_run",
    "best_step",
    "stopped_by",
    "epochs",
    "pretrain_seconds",
    "eval_seconds",
]


def write_runs_csv(records: list[dict], tasks: list[str], path: Path) -> None:
    columns = [*COLUMNS, *(f"accuracy_{t}" for t in tasks), "mean_accuracy"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow({c: record.get(c, "") for c in columns})


def _figure(width: float, height: float, panels: int = 1, rows: int = 1):
    figure = Figure(figsize=(width, height))
    columns = -(-panels // rows)
    axes = figure.subplots(rows, columns, squeeze=False).reshape(-1)
    for extra in axes[panels:]:
        extra.set_visible(False)
    return figure, axes[:panels]


def plot_loss(records: list[dict], fits: dict, preset: StudyPreset, path: Path) -> None:
    """Held-out pre-training loss vs N at each D, with the fitted Droppo law."""
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


def plot_curves(records: list[dict], preset: StudyPreset, path: Path) -> None:
    """Each grid run's validation loss against training steps, one panel per width, the best
    checkpoint marked (●) and the step cap drawn: a run stopped by the cap would end on it."""
    rows = grid_rows(records, preset)
    widths = sorted({r["width"] for r in rows})
    figure, axes = _figure(3.0 * len(widths), 2.9, len(widths))
    for ax, width in zip(axes, widths, strict=True):
        for i, seconds in enumerate(sorted(preset.data_seconds)):
            for r in (r for r in rows if r["width"] == width and r["data_seconds"] == seconds):
                curve = r.get("validation_curve") or []
                if curve:
                    steps, losses = zip(*curve, strict=True)
                    ax.plot(steps, losses, color=f"C{i}", lw=1, label=f"D = {seconds:g} s")
                    best = dict(curve).get(r.get("best_step"))
                    if best is not None:
                        ax.plot([r["best_step"]], [best], "o", color=f"C{i}", ms=4)
        ax.axvline(preset.training.steps, color="k", ls=":", lw=1)
        ax.set(xscale="log", xlabel="step", title=f"width {width}")
        ax.title.set_fontsize(9)
    if len(axes):
        axes[0].set_ylabel("validation loss")
        axes[0].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def plot_compute(records: list[dict], fits: dict, preset: StudyPreset, path: Path) -> None:
    """Validation loss along every grid run against compute with the frontier; each run's final
    clip RankMe and mean accuracy against its compute."""
    rows = grid_rows(records, preset)
    widths = sorted({r["width"] for r in rows})
    figure, axes = _figure(12, 3.6, 3)
    for r in rows:
        colour = f"C{widths.index(r['width']) % 10}"
        compute, loss = zip(*compute_curve(r), strict=True)
        axes[0].plot(compute, loss, color=colour, lw=0.7, alpha=0.6)
        axes[1].plot([r["compute"]], [r["clip_rankme"]], "o", color=colour, ms=4)
        axes[2].plot([r["compute"]], [r["mean_accuracy"]], "o", color=colour, ms=4)
    frontier = fits.get("compute", {}).get("frontier", [])
    if frontier:
        axes[0].plot([p["compute"] for p in frontier], [p["loss"] for p in frontier], "k-", lw=2, label="frontier")
    for width in widths:
        axes[1].plot([], [], "o", color=f"C{widths.index(width) % 10}", label=f"width {width}")
    axes[0].set(xscale="log", yscale="log", xlabel="compute C ≈ 6·N·tokens", ylabel="validation loss")
    axes[1].set(xscale="log", yscale="log", xlabel="compute at the best step", ylabel="RankMe (clip)")
    axes[2].set(xscale="log", xlabel="compute at the best step", ylabel="mean linear-probe accuracy")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _groups(records: list[dict], preset: StudyPreset) -> dict[str, list[dict]]:
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
    sweeps = fits["sweeps"]
    rows = 1 if len(sweeps) <= 4 else 2
    columns = -(-len(sweeps) // rows)
    figure, axes = _figure(3.0 * columns, 2.8 * rows, len(sweeps), rows)
    for ax, (variable, entry) in zip(axes, sweeps.items(), strict=True):
        values = entry["values"]
        numeric = all(isinstance(v, (int, float)) for v in values)
        positions = values if numeric else list(range(len(values)))
        errors = entry.get("clip_rankme_se", [])
        if errors and all(e is not None for e in errors):  # ±1.96 standard errors: the 95 % intervals
            ax.errorbar(positions, entry["clip_rankme"], yerr=1.96 * np.asarray(errors), fmt="o-", color="C0",
                        capsize=2)  # fmt: skip
        else:
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
    """A parameter with its CI, or what it is when the fit put it at a bound."""
    if name in law.get("pinned", []):
        return f"at its bound ({law['params'][name]:.2g}): not estimated"
    low, high = law["ci"][name]
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{law['params'][name]:.3g} (no CI)"
    wide = " (not identified)" if low > 0 and high > 100 * low else ""  # a positive parameter's CI over 2 decades
    return f"{law['params'][name]:.3g} [{low:.3g}, {high:.3g}]{wide}"


def _equals(law: dict, name: str, label: str) -> str:
    if name in law.get("pinned", []):
        return f"{label} at its bound ({law['params'][name]:.2g})"
    return f"{label} = {_ci(law, name)}"


def _quality_b(law: dict) -> str:
    if "b" in law.get("pinned", []):
        return "no positive power law (b at its bound)"
    return _ci(law, "b")


def _plus_minus(record: dict) -> str:
    return f" ± {record['clip_rankme_se']:.2g}" if record.get("clip_rankme_se") is not None else ""


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def findings(fits: dict, tasks: list[str], records: list[dict] | None = None) -> list[str]:
    """Plain statements from the numbers: the loss law and its rival, how training stopped,
    compute, where RankMe ranked quality and where not, and what RankMe did not unify."""
    lines = []
    law = fits["loss_law"]
    if "params" in law:
        e_n, e_d = law.get("extrapolation") or {}, law.get("extrapolation_d") or {}
        pinned = law.get("pinned", [])
        lines.append(
            f"Pre-training loss follows L(N, D) with {_equals(law, 'alpha_N', 'α_N')}, "
            f"{_equals(law, 'alpha_D', 'α_D')}, "
            + ("no irreducible term (L_∞ at 0)" if "L_inf" in pinned else f"L_∞ = {_ci(law, 'L_inf')}")
            + f" (R² in log space {law['r2_log']:.3f}; predicting the largest-N row from "
            f"the others: {_percent(e_n.get('relative_error'))} mean error, the largest-D column: "
            f"{_percent(e_d.get('relative_error'))})."
            + (f" **Not identified**: {', '.join(pinned)} at a bound." if pinned else "")
        )
        for name in ("alpha_N", "alpha_D"):
            low, high = law["ci"][name]
            if name not in pinned and not high < 100 * low:  # NaN bounds included
                lines.append(f"The CI of {name} spans [{low:.2g}, {high:.2g}], over two orders of magnitude: the "
                             "exponent is **not identified** by these runs.")  # fmt: skip
    else:
        lines.append(f"The L(N, D) fit failed: {law.get('error')}.")
    comparison = fits.get("loss_law_comparison", {}).get("table", {})
    if {"droppo", "kaplan"} <= set(comparison):
        d, k = comparison["droppo"], comparison["kaplan"]
        lines.append(
            f"Against Kaplan's form without L_∞: AIC {d['aic']:.1f} (Droppo) vs {k['aic']:.1f} (Kaplan), "
            f"largest-N error {_percent(d['held_out_largest_N'])} vs {_percent(k['held_out_largest_N'])}, "
            f"largest-D error {_percent(d['held_out_largest_D'])} vs {_percent(k['held_out_largest_D'])}: "
            + ("the irreducible term earns its parameter." if d["aic"] < k["aic"] - 2
               else "the irreducible term is **not** supported by AIC.")
        )  # fmt: skip
    trained = [r for r in records or [] if r["family"] == "trained" and r.get("stopped_by") in ("patience", "cap")]
    if trained:
        capped = [r["id"] for r in trained if r["stopped_by"] == "cap"]
        epochs = [r["epochs"] for r in trained]
        cap = f"; **{len(capped)} reached the step cap** ({', '.join(capped)})" if capped else ", none by the step cap"
        lines.append(
            f"Training: {len(trained)} runs trained to convergence, {len(trained) - len(capped)} stopped by patience"
            + cap
            + f"; {min(epochs):.1f}–{max(epochs):.0f} epochs of their audio seen."
        )
    compute = fits.get("compute", {})
    frontier_law = compute.get("frontier_law", {})
    if "params" in frontier_law:
        lines.append(
            f"Compute-optimal frontier: validation loss = a·C^(−b) + c with b = {_ci(frontier_law, 'b')}, "
            f"c = {frontier_law['params']['c']:.3g}; the frontier passes through widths "
            f"{sorted({p['width'] for p in compute['frontier']})}."
        )
    for column, label in (("clip_rankme", "RankMe"), ("mean_accuracy", "mean accuracy")):
        rho = compute.get(f"spearman_{column}")
        if rho:
            lines.append(f"Over the grid, {label} against compute: Spearman ρ = {rho['rho']:.2f} (p = {rho['p']:.2g}).")
    for family in ("trained", "pretrained"):
        held, failed = [], []
        for task in [*tasks, "mean"]:
            law = fits["quality_laws"].get(f"{family}/clip_rankme/{task}")
            if not law or "spearman" not in law:
                continue
            b = "b at its bound" if "b" in law.get("pinned", []) else f"b = {law['params']['b']:.2f}"
            text = f"{task} (ρ = {law['spearman']:.2f}, {b})"
            (held if law["spearman"] > 0 and law["spearman_p"] < 0.05 else failed).append(text)
        if held or failed:
            lines.append(
                f"{family.capitalize()} models: RankMe ranked accuracy significantly (Spearman p < 0.05, "
                f"positive) for {', '.join(held) or 'no task'}; it did **not** for "
                f"{', '.join(failed) or 'any other task'}."
            )
    outer = fits.get("outer_cells", {})
    if "cells" in outer:
        lines.append(f"Fitted on the grid's {outer['inner']} inner cells, L(N, D) predicts the {outer['outer']} outer "
                     f"cells (the largest width and the most data) with {_percent(outer['law_error'])} mean error; "
                     f"copying each one's nearest inner neighbour gives {_percent(outer['copy_error'])}"
                     + (": the law extrapolates better than the copy." if outer["law_error"] < outer["copy_error"]
                        else ": the law does **not** beat the copy."))  # fmt: skip
    lines += _ranking_findings(fits.get("ranking", {}), fits.get("quality_forms", {}))
    lines += _unification_findings(fits.get("unification", {}))
    lines += _noise_findings(fits.get("noise", {}))
    lines += decision_findings(fits)
    return lines


def _ranking_findings(ranking: dict, forms: dict) -> list[str]:
    """RankMe against the pre-training loss as rankers of accuracy, and the best quality form."""
    lines = []
    if ranking:
        r, loss = ranking["rankme"], ranking["negative_loss"]
        lines.append(f"Over the grid ({ranking['points']} runs), clip RankMe ranks mean accuracy with "
                     f"ρ = {r['rho']:.2f} (p = {r['p']:.2g}); the pre-training loss (lower is better) with "
                     f"ρ = {loss['rho']:.2f} (p = {loss['p']:.2g}).")  # fmt: skip
    for family in ("trained", "pretrained"):
        fitted = {key.split("/")[1]: f for key, f in forms.items() if key.startswith(f"{family}/") and "aic" in f}
        if len(fitted) < 2:
            continue
        best = min(fitted, key=lambda name: fitted[name]["aic"])
        others = ", ".join(f"{name} {f['aic']:.1f}" for name, f in fitted.items() if name != best)
        lines.append(f"{family.capitalize()} models, mean accuracy against clip RankMe: the best form by AIC is {best} "
                     f"({fitted[best]['formula']}, AIC {fitted[best]['aic']:.1f}; {others}).")  # fmt: skip
    return lines


def _forms_table(forms: dict) -> list[str]:
    md = ["| family | form | AIC | R² (log) | largest-RankMe held-out error | leave-one-out error |",
          "|---|---|---|---|---|---|"]  # fmt: skip
    for key, f in forms.items():
        if "aic" not in f:
            continue
        family, name = key.split("/")
        md.append(f"| {family} | {name}: {f['formula']} | {f['aic']:.1f} | {f['r2_log']:.3f} | "
                  f"{_percent(f['largest_held_out_error'])} | {_percent(f['leave_one_out_error'])} |")  # fmt: skip
    return md if len(md) > 2 else []


def _noise_findings(noise: dict) -> list[str]:
    """How many adjacent RankMe differences of the ladder and of each sweep are beyond noise,
    naming the pairs that are not."""
    lines = []
    for label, calls in [("pretrained ladder (by clip RankMe)", noise.get("ladder", [])),
                         *((f"{name} sweep", c) for name, c in noise.get("groups", {}).items())]:  # fmt: skip
        if not calls:
            continue
        within = [f"{c['a']} vs {c['b']} ({c['difference']:+.3g} [{c['interval'][0]:+.3g}, {c['interval'][1]:+.3g}])"
                  for c in calls if not c["beyond_noise"]]  # fmt: skip
        beyond = len(calls) - len(within)
        lines.append(f"Clip RankMe, {label}: {beyond} of {len(calls)} neighbouring differences are beyond the "
                     f"{100 * noise['level']:g} % paired interval"
                     + (f"; **within noise** (no order can be claimed): {'; '.join(within)}" if within else "")
                     + ".")  # fmt: skip
    return lines


def _noise_table(noise: dict) -> list[str]:
    md = ["| group | a | b | clip RankMe a − b [95 % paired interval] | beyond noise |", "|---|---|---|---|---|"]
    for label, calls in [("pretrained ladder", noise.get("ladder", [])), *noise.get("groups", {}).items()]:
        for c in calls:
            low, high = c["interval"]
            md.append(f"| {label} | {c['a']} | {c['b']} | {c['difference']:+.3g} [{low:+.3g}, {high:+.3g}] | "
                      f"{'yes' if c['beyond_noise'] else '**no**'} |")  # fmt: skip
    return md if len(md) > 2 else []


def _unification_findings(result: dict) -> list[str]:
    tasks = result.get("tasks", {})
    if not tasks:
        return [f"Unification test: {result['error']}."] if "error" in result else []
    unified, not_unified, untested = [], [], []
    for variable in result["variables"]:
        entries = {t: e.get(variable) for t, e in tasks.items() if isinstance(e, dict) and "error" not in e}
        tested = {t: e for t, e in entries.items() if isinstance(e, dict)}
        if not tested:
            untested.append(variable)
            continue
        flagged = [t for t, e in tested.items() if e["p_holm"] < 0.05]
        (not_unified if flagged else unified).append(f"{variable} ({', '.join(flagged)})" if flagged else variable)
    untestable = f"; not testable here (constant or collinear): {', '.join(untested)}" if untested else ""
    head = (f"Unification test ({result['runs']} trained runs, nested F-tests on log accuracy beyond log RankMe, "
            "Holm-corrected per task): ")  # fmt: skip
    finding = (f"RankMe unifies {', '.join(unified)} (no evidence they add anything beyond it)" if unified
               else "RankMe unifies none of the variables")  # fmt: skip
    finding += (f"; it does **not** unify {', '.join(not_unified)} (tasks where the variable adds explanation at "
                "p < 0.05)" if not_unified else "; no variable adds explanation at p < 0.05")  # fmt: skip
    return [head + finding + untestable + ". No evidence is not proof of none: the partial correlations' CIs below "
            "say how large an effect the data leave room for."]  # fmt: skip


def _unification_table(result: dict, power: bool = False) -> list[str]:
    tasks = [t for t, e in result.get("tasks", {}).items() if "error" not in e]
    if not tasks:
        return []
    md = ["| variable | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for variable in result["variables"]:
        cells = []
        for task in tasks:
            entry = result["tasks"][task].get(variable)
            if not isinstance(entry, dict):
                cells.append("not testable")
                continue
            low, high = entry["partial_r_ci"]
            r = (f"r = {entry['partial_r']:.2f} [{low:.2f}, {high:.2f}]" if entry["partial_r"] == entry["partial_r"]
                 else f"partial R² = {entry['partial_r2']:.2f}")  # fmt: skip
            mark = " **✗**" if entry["p_holm"] < 0.05 else ""
            detectable = f"; {entry['detectable_r2']:.2f}" if power and "detectable_r2" in entry else ""
            cells.append(f"p = {entry['p_holm']:.2g}{mark}; {r}{detectable}")
        md.append(f"| {variable} | " + " | ".join(cells) + " |")
    return md


def _training(preset: StudyPreset) -> str:
    t = preset.training
    if t.patience is None:
        return f"{t.steps} steps of {t.batch_size} windows, {t.objective.upper()}, cosine schedule"
    return (
        f"{t.objective.upper()} to convergence: batches of {t.batch_size} windows, a constant rate after "
        f"{t.warmup} warm-up steps, the loss on validation audio (half of the labelled benchmark's clips) "
        f"checked every {t.eval_every} steps on {t.eval_windows} windows, stopped after {t.patience} checks "
        f"without a {100 * t.min_improvement:g} % improvement or at the cap of {t.steps} steps; L is the best "
        "checkpoint's loss on the other half"
    )


def plot_layers(layerwise: dict[str, Any], path: Path) -> None:
    """Clip RankMe (solid) and mean probe accuracy (dotted, right axis) against depth, a panel
    per model."""
    models = list(layerwise.items())
    columns = min(4, len(models))
    rows = -(-len(models) // columns)
    figure, axes = _figure(3.0 * columns, 2.6 * rows, len(models), rows)
    for ax, (key, result) in zip(axes, models, strict=True):
        depth = [layer["depth"] for layer in result["layers"]]
        ax.plot(depth, [layer["clip_rankme"] for layer in result["layers"]], "o-", color="C0", ms=3)
        accuracy = ax.twinx()
        accuracy.plot(depth, [layer["mean_accuracy"] for layer in result["layers"]], "s:", color="C1", ms=3)
        rho = f"  ρ={result['spearman']:.2f}" if "spearman" in result else ""
        label = key.removeprefix("pretrained-") if result["family"] == "pretrained" else f"trained, {len(depth)} blocks"
        ax.set_title(label + rho, fontsize=8)
        ax.set_xlabel("layer", fontsize=8)
        ax.set_ylabel("clip RankMe", fontsize=8, color="C0")
        accuracy.set_ylabel("mean accuracy", fontsize=8, color="C1")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


MEASURES = ("held_out_loss", "clip_rankme", "mean_accuracy")


def _noise_floor_section(floor: dict) -> list[str]:
    """Mean ± SD over training seeds per repeated configuration, and the untrained encoders."""
    if not floor.get("cells") and not floor.get("untrained"):
        return []
    md = ["", "## Noise floor: training seeds", ""]
    if floor.get("cells"):
        sd = floor["median_sd"]
        md += [f"Configurations repeated with other training seeds (the grid's corner cells and the sweep runs): "
               f"mean ± standard deviation over the seeds. Median SD: held-out loss {sd['held_out_loss']:.4f}, clip "
               f"RankMe {sd['clip_rankme']:.2f}, mean accuracy {sd['mean_accuracy']:.4f}. A difference between two "
               "runs smaller than about twice these is within the noise of training itself.", "",
               "| configuration | seeds | held-out loss | clip RankMe | mean accuracy |",
               "|---|---|---|---|---|"]  # fmt: skip
        for config, cell in floor["cells"].items():
            cells = " | ".join(f"{cell[m]['mean']:.4g} ± {cell[m]['sd']:.2g}" for m in MEASURES)
            md.append(f"| {config} | {', '.join(map(str, cell['seeds']))} | {cells} |")
    judged = [c for c in floor.get("neighbours", []) if "beyond" in c["mean_accuracy"]]
    if judged:
        md += ["", "Neighbouring runs of each sweep and grid axis where both ends were repeated: the difference "
               "(b − a) and whether it exceeds twice the seed noise of a difference, 2·√(SD_a² + SD_b²).", "",
               "| group | a → b | Δ held-out loss | Δ clip RankMe | Δ mean accuracy |",
               "|---|---|---|---|---|"]  # fmt: skip
        for call in judged:
            cells = [f"{call[m]['difference']:+.3g} ({'beyond' if call[m]['beyond'] else '**within**'} "
                     f"±{call[m]['twice_seed_sd']:.2g})" for m in MEASURES]
            md.append(f"| {call['group']} | {call['a']} → {call['b']} | " + " | ".join(cells) + " |")
    on_means = floor.get("unification_on_means", {})
    if on_means.get("tasks"):
        md += ["", f"The unification test again on seed means ({on_means['runs']} configurations, "
               f"{on_means['averaged']} of them averaged over their seeds). Each cell: p (Holm); the partial "
               "correlation with its CI; the partial R² the test detects four times in five at p < 0.05 (its "
               "power: an effect smaller than that can hide in a 'unified' verdict).", "",
               *_unification_table(on_means, power=True)]  # fmt: skip
    if floor.get("untrained"):
        md += ["", "Untrained encoders (initial weights, seed 0): "
               + "; ".join(f"width {u['width']}: clip RankMe {u['clip_rankme']:.1f}, mean accuracy "
                           f"{u['mean_accuracy']:.3f}" for u in floor["untrained"]) + "."]  # fmt: skip
    return md


def _layers_section(layerwise: dict[str, Any]) -> list[str]:
    md = ["", "## Layer by layer", "", "![layers](layers.png)", "",
          "Every layer of the depth sweep's trained encoders and of the ladder's encoders with inner layers, from "
          "one pass over the benchmark (clip RankMe of each layer's clip means; linear probes on them, mean over "
          "tasks). ρ: Spearman across the model's layers of clip RankMe against mean accuracy (exact p for up to "
          "8 layers). \"Lost\": mean accuracy of the best-probing layer minus that of the highest-RankMe layer.", "",
          "| model | layers | ρ (p) | best by RankMe | best by probe | lost | last layer's accuracy |",
          "|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, result in layerwise.items():
        rho = f"{result['spearman']:.2f} ({result['spearman_p']:.2g})" if "spearman" in result else "—"
        lost, last = result["accuracy_lost_picking_by_rankme"], result["accuracy_of_last_layer"]
        md.append(f"| {key.removeprefix('pretrained-')} | {len(result['layers'])} | {rho} | "
                  f"{result['best_layer_by_rankme']} | {result['best_layer_by_probe']} | {lost:.3f} | {last:.3f} |")
    same = sum(result["same_layer"] for result in layerwise.values())
    lost = [result["accuracy_lost_picking_by_rankme"] for result in layerwise.values()]
    md += ["", f"The layer of highest RankMe was the best-probing layer for {same} of {len(layerwise)} models; "
           f"picking the layer by RankMe lost {np.median(lost):.3f} mean accuracy at the median (at most "
           f"{max(lost):.3f})."]  # fmt: skip
    return md


def write_report(
    records: list[dict], fits: dict, preset: StudyPreset, tasks: list[str], out: Path, meta: dict[str, Any],
    layerwise: dict[str, Any] | None = None, trajectories: list[dict[str, Any]] | None = None,
) -> dict[str, Path]:
    """runs.csv, fits.json, the figures and report.md (and layers.json, layers.png with
    `layerwise`; trajectory.png with the trajectory runs; extrapolation.png with registered
    predictions)."""
    names = ("runs.csv", "fits.json", "loss_vs_n.png", "loss_curves.png", "compute.png", "quality_vs_rankme.png",
             "rankme_vs_variables.png", "report.md")  # fmt: skip
    curves = any(r.get("validation_curve") for r in records)  # runs of a fixed step count have none
    paths = {name: out / name for name in names if curves or name != "loss_curves.png"}
    write_runs_csv(records, tasks, paths["runs.csv"])
    paths["fits.json"].write_text(json.dumps({**fits, "meta": meta}, indent=1, default=float) + "\n")
    plot_loss(records, fits, preset, paths["loss_vs_n.png"])
    if curves:
        plot_curves(records, preset, paths["loss_curves.png"])
    plot_compute(records, fits, preset, paths["compute.png"])
    plot_quality(records, fits, preset, paths["quality_vs_rankme.png"])
    plot_sweeps(fits, paths["rankme_vs_variables.png"])
    if layerwise:
        paths["layers.json"], paths["layers.png"] = out / "layers.json", out / "layers.png"
        paths["layers.json"].write_text(json.dumps(layerwise, indent=1, default=float) + "\n")
        plot_layers(layerwise, paths["layers.png"])
    decided = trajectories and "early" in fits.get("trajectory", {})
    if decided:
        paths["trajectory.png"] = out / "trajectory.png"
        plot_trajectory(trajectories, paths["trajectory.png"])
    if "extrapolation" in fits:
        paths["extrapolation.png"] = out / "extrapolation.png"
        plot_extrapolation(fits["extrapolation"], paths["extrapolation.png"])

    md = [
        f"# RankMe scaling study — preset `{preset.name}`",
        "",
        f"{meta['runs']} pre-training runs and {meta['pretrained']} pretrained encoders: "
        f"{meta['run_minutes']:.1f} minutes of pre-training and evaluation (the runs' own wall times; this "
        f"invocation, which reads finished runs back: {meta['minutes']:.1f} minutes). "
        f"Machine: {meta['machine']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
        + ".",
        "",
        f"Evaluation: the `{preset.eval_preset}` labelled benchmark "
        f"({meta['eval_clips']} clips, {meta['synthesizers']} synthesizers); pre-training audio: "
        f"`{preset.pool_preset}` rendered with seeds {list(preset.pool_seeds)} ({meta['pool_seconds']:.0f} s), "
        f"labels unused. Base model: {preset.base.to_dict()}; training: {_training(preset)}.",
        "",
        "## Findings",
        "",
    ]
    md += [f"- {line}" for line in findings(fits, tasks, records)]
    md += ["", "## Pre-training loss: L(N, D)", "", "![loss vs N](loss_vs_n.png)", ""]
    law = fits["loss_law"]
    if "params" in law:
        md += ["95 % bootstrap CIs, taken in log space (all parameters are positive).", "",
               "| parameter | value [95% CI] |", "|---|---|"]  # fmt: skip
        md += [f"| {k} | {_ci(law, k)} |" for k in law["params"]]
    comparison = fits.get("loss_law_comparison", {}).get("table", {})
    if comparison:
        md += ["", "Droppo's form against Kaplan's (no L_∞): held-out errors predict the largest-N row (or the "
               "largest-D column) from a fit to the others.", "",
               "| form | parameters | AIC | R² (log) | largest-N error | largest-D error |",
               "|---|---|---|---|---|---|"]
        md += [f"| {name} | {row['parameters']} | {row['aic']:.1f} | {row['r2_log']:.3f} | "
               f"{_percent(row['held_out_largest_N'])} | {_percent(row['held_out_largest_D'])} |"
               for name, row in comparison.items()]  # fmt: skip
    seed_sd = fits.get("noise_floor", {}).get("median_sd", {})
    if comparison and seed_sd:
        typical = float(np.median([r["held_out_loss"] for r in grid_rows(records, preset)]))
        md += ["", f"For scale: training seeds alone move a cell's held-out loss by a median SD of "
               f"{seed_sd['held_out_loss']:.4f} ({seed_sd['held_out_loss'] / typical:.1%} of the grid's median loss), "
               "so a held-out error below about twice that is at the noise floor."]  # fmt: skip
    if curves:
        md += ["", "## Training curves", "", "![loss curves](loss_curves.png)"]
    md += ["", "## Compute", "", "![compute](compute.png)", "",
           "## Quality vs RankMe", "", "![quality vs RankMe](quality_vs_rankme.png)", "",
           "accuracy = a·RankMe^b, clip-embedding RankMe; ρ: Spearman, τ: Kendall. A fit whose exponent went to "
           "its bound (0) is reported as no positive power law, not as a number.", "",
           "| family | task | points | b [95% CI] | R² (log) | ρ (p) | τ |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, law in fits["quality_laws"].items():
        family, kind, task = key.split("/")
        if kind != "clip_rankme" or "params" not in law:
            continue
        md.append(
            f"| {family} | {task} | {law['points']} | {_quality_b(law)} | {law['r2_log']:.3f} | "
            f"{law['spearman']:.2f} ({law['spearman_p']:.2g}) | {law['kendall']:.2f} |"
        )
    forms_table = _forms_table(fits.get("quality_forms", {}))
    if forms_table:
        md += ["", "Mean accuracy against clip RankMe in three forms (least squares on log accuracy, no bootstrap): "
               "AIC, and relative errors predicting the largest-RankMe run from the others and each run from the "
               "rest (leave one out).", "", *forms_table]  # fmt: skip
    unification = fits.get("unification", {})
    if unification.get("tasks"):
        md += ["", "## Does RankMe unify the variables?", "",
               "All trained runs pooled. For each variable and task, log accuracy = a + b·log RankMe + c·variable "
               "against the model without the variable: the F-test's p (Holm-corrected over the variables of the "
               "task; **✗**: the variable explains accuracy beyond RankMe, p < 0.05) and the variable's partial "
               "correlation with log accuracy given log RankMe, with its 95 % CI (partial R² for architectures). "
               "Numbers enter on a log scale, depth as is.", ""]  # fmt: skip
        md += _unification_table(unification)
    noise_table = _noise_table(fits.get("noise", {}))
    without = [r for r in records if not r.get("clip_rankme_left_out")]
    if without:
        noise_table += ["", f"{len(without)} of {len(records)} runs were evaluated before the block values were "
                        "recorded (their embeddings are not kept): their differences are not called here."]  # fmt: skip
    if noise_table:
        md += ["", "## Which RankMe differences are beyond noise", "",
               "Each run's clip RankMe has a delete-one-block jackknife interval (10 blocks, clip i in block i mod "
               "10). Every run is scored on the same clips in the same blocks, so two runs' difference has a "
               "paired interval, far narrower than either interval alone. Neighbours are compared: the pretrained "
               "ladder in order of clip RankMe, each sweep and each axis of the grid in order of its variable. "
               "A difference whose interval holds 0 is within noise: its sign is not established. Intervals rest "
               "on the clips at hand: where they are fewer than 2·D (marked capped), they are conservative.",
               "", *noise_table]  # fmt: skip
    md += _layers_section(layerwise) if layerwise else []
    md += _noise_floor_section(fits.get("noise_floor", {}))
    accuracy_sd = fits.get("noise_floor", {}).get("median_sd", {}).get("mean_accuracy")
    md += trajectory_section(fits["trajectory"], accuracy_sd) if decided else []
    md += extrapolation_section(fits["extrapolation"]) if "extrapolation" in fits else []
    md += ["", "## RankMe vs each variable", "", "![RankMe vs variables](rankme_vs_variables.png)", "",
           "## Runs", "",
           "| run | N | D (s) | held-out loss | best step / run (stop) | epochs | wall s | RankMe clip | RankMe frame "
           "| mean acc |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in records:
        loss = f"{r['held_out_loss']:.4f}" if r.get("held_out_loss") is not None else ""
        steps = f"{r['best_step']} / {r['steps_run']} ({r['stopped_by']})" if "best_step" in r else ""
        epochs = f"{r['epochs']:.1f}" if "epochs" in r else ""
        wall = f"{r.get('pretrain_seconds', 0.0) + r['eval_seconds']:.0f}"
        md.append(
            f"| {r['name']} | {r['n_params']:,} | {r.get('data_seconds', '')} | {loss} | {steps} | {epochs} | {wall} "
            f"| {r['clip_rankme']:.1f}{_plus_minus(r)}{' (capped)' if r['clip_rankme_capped'] else ''} | "
            f"{r['frame_rankme']:.1f} | "
            f"{r['mean_accuracy']:.3f} |"
        )
    md += [
        "",
        "Files: `runs.csv` (one row per run), `fits.json` (every fit with CIs), `runs/*.json` (each run, "
        "with its loss curves).",
    ]
    paths["report.md"].write_text("\n".join(md) + "\n")
    return paths
