"""`rankme-fast audio ENCODER[,ENCODER...] PATH...`: RankMe of audio encoders on your own
recordings, with a linear probe when labels are given and the quality a fitted RankMe law
predicts."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist

from rankme_fast._extras import require
from rankme_fast.audio.audio_corpus import AudioOptions, score_encoder
from rankme_fast.audio.encoders import available_encoders, encoder_from_spec
from rankme_fast.audio.probe import probe
from rankme_fast.corpus import add_job_arguments, job_arguments
from rankme_fast.distributed import join_from_environment
from rankme_fast.uncertainty import compare_blocks


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "audio",
        help="RankMe of audio encoders on audio files (wav, flac, ogg, mp3; dirs, globs)",
        description="Embed every file with each encoder (long files in windows), stream the frame embeddings "
        "into float64 Gram states (raw and centred), and print frame and clip RankMe. Under torchrun each "
        "process takes a disjoint set of files and the states are summed.",
    )
    parser.add_argument("encoders", metavar="ENCODER[,ENCODER...]",
                        help="built-in name (see --list), Hugging Face directory, .pt/.ts TorchScript, .onnx or "
                        "package.module:callable; several, comma-separated, are scored on the same audio")  # fmt: skip
    parser.add_argument("paths", nargs="*", metavar="PATH", help="audio files, directories (recursive) or globs")
    parser.add_argument("--list", action="store_true", help="list the built-in encoders and whether each is usable")
    parser.add_argument("--sr", type=int, help="sample rate of TorchScript/ONNX/callable models (default 16000)")
    parser.add_argument("--frame-rate", type=float, help="frames per second of such models (default: measured)")
    parser.add_argument("--option", action="append", default=[], metavar="[ENCODER:]KEY=VALUE",
                        help="constructor option of a built-in encoder (all of them without ENCODER:), "
                        "e.g. crepe-tiny:hop_length=1600")  # fmt: skip
    parser.add_argument("--window-seconds", type=float, default=10.0, help="long files are cut into such windows")
    parser.add_argument("--clip", choices=["file", "window"], default="file",
                        help="what one clip (one clip embedding: the mean of its frames) is")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="decoding processes (0: decode in this one)")
    parser.add_argument("--labels", help="CSV with a 'path' column (as given, or the file name) and labels")
    parser.add_argument("--label-column", help="the column of --labels to probe")
    parser.add_argument("--group-column", help="hold out whole groups of this column (e.g. speaker)")
    parser.add_argument("--law", help="fits.json of `rankme-fast study` or fit.json of `rankme-fast fit`")
    parser.add_argument("--task", default="mean", help="which task's law in a study's fits.json (default: mean)")
    parser.add_argument("--plot", help="write a figure of each encoder's RankMe (against probe accuracy with labels)")
    parser.add_argument("--layers", metavar="SPEC",
                        help="score the encoder's inner layers in one pass instead of its output: all, indices or "
                        "slices (-4:, 0,6,11), or name patterns (encoder.layers.*); a table per layer")  # fmt: skip
    add_job_arguments(parser, checkpoint="one file per encoder", unit="decoding tasks")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name, reason in available_encoders().items():
            print(f"{name:<18} {'usable' if reason is None else reason}")
        return 0
    if not args.paths:
        raise ValueError("give at least one audio file, directory or glob")
    if args.labels and not args.label_column:
        raise ValueError("--labels needs --label-column")
    labels = _read_labels(args.labels, args.label_column, args.group_column) if args.labels else None
    law = _read_law(args.law, args.task) if args.law else None
    joined = join_from_environment()
    try:
        results = [_score_one(spec, args, labels) for spec in args.encoders.split(",") if spec]
    finally:
        if joined:
            dist.destroy_process_group()
    if joined and int(os.environ.get("RANK", "0")) != 0:
        return 0
    rows = [_summary(spec, result, probe, law) for spec, result, probe in results]
    differences = _paired_differences(results) if args.ci is not None else []
    _print(rows, results, args.per_file)
    _print_differences(differences)
    if args.plot:
        _plot(rows, args.plot)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([row | {"result": result.to_json()} for row, (_, result, _) in zip(rows, results, strict=True)]
                      + ([{"paired_differences": differences}] if differences else []), handle, indent=2)  # fmt: skip
    return 0


def _score_one(spec: str, args: argparse.Namespace, labels: dict | None) -> tuple[str, Any, dict | None]:
    scoped = [item.split("=", 1)[0].partition(":") for item in args.option]
    options = dict(_option(item) for item, (_, colon, _) in zip(args.option, scoped, strict=True) if not colon)
    options |= dict(_option(item.split(":", 1)[1]) for item, (name, colon, _) in zip(args.option, scoped, strict=True)
                    if colon and name == spec)  # fmt: skip
    encoder = encoder_from_spec(spec, sample_rate=args.sr, frame_rate=args.frame_rate, options=options or None)
    checkpoint = None
    if args.checkpoint:
        checkpoint = args.checkpoint if "," not in args.encoders else _per_encoder(args.checkpoint, encoder.name)
    result = score_encoder(encoder, args.paths, AudioOptions(**(job_arguments(args) | dict(
        window_seconds=args.window_seconds, clip=args.clip, workers=args.workers, keep_clips=labels is not None,
        checkpoint=checkpoint, layers=args.layers,
    ))))  # fmt: skip
    if labels is None:
        return spec, result, None
    if result.layers:  # a probe per layer, keyed by layer name
        return spec, result, {layer: _probe_clips(result.layer_clips[layer], result.clip_files, labels)
                              for layer in result.layers}  # fmt: skip
    return spec, result, _probe(result, labels)


def _option(item: str) -> tuple[str, Any]:
    key, _, value = item.partition("=")
    if not key or not value:
        raise ValueError(f"--option takes KEY=VALUE, got {item!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _per_encoder(path: str, name: str) -> str:
    target = Path(path)
    return str(target.with_name(f"{target.stem}.{name}{target.suffix}"))


# -- labels and the probe -----------------------------------------------------------------------------


def _read_labels(path: str, label_column: str, group_column: str | None) -> dict[str, tuple[str, str | None]]:
    """path (as written, and its file name) -> (label, group)."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for needed in ("path", label_column, *([group_column] if group_column else [])):
            if needed not in columns:
                raise ValueError(f"{path}: no column {needed!r} (has: {', '.join(columns)})")
        table: dict[str, tuple[str, str | None]] = {}
        for row in reader:
            entry = (row[label_column], row[group_column] if group_column else None)
            table[row["path"]] = entry
            table.setdefault(Path(row["path"]).name, entry)
    return table


def _probe(result: Any, labels: dict[str, tuple[str, str | None]]) -> dict[str, Any]:
    """Linear-probe accuracy on a held-out fifth of the clips (whole groups when given)."""
    if result.clip_embeddings is None:
        raise ValueError("no clip embeddings were kept for the probe")
    return _probe_clips(result.clip_embeddings, result.clip_files, labels)


def _probe_clips(x: np.ndarray, files: list[str], labels: dict[str, tuple[str, str | None]]) -> dict[str, Any]:
    known = [(i, labels.get(f) or labels.get(Path(f).name)) for i, f in enumerate(files)]
    missing = sorted({files[i] for i, entry in known if entry is None})
    if missing:
        raise ValueError(f"no label for {len(missing)} files, e.g. {missing[0]}")
    classes = sorted({entry[0] for _, entry in known})
    y = np.array([classes.index(entry[0]) for _, entry in known])
    groups = [entry[1] if entry[1] is not None else files[i] for i, entry in known]
    unique = sorted(set(groups))
    held_out = set(np.random.default_rng(0).permutation(unique)[: max(1, len(unique) // 5)])
    test = np.array([g in held_out for g in groups])
    if test.all() or not test.any():
        raise ValueError("too few files (or groups) to hold out a test split")
    outcome = probe(x[~test], y[~test], x[test], y[test], kind="linear")
    grouped = any(entry[1] is not None for _, entry in known)
    return {"accuracy": outcome.accuracy, "macro_f1": outcome.macro_f1, "n_train": outcome.n_train,
            "n_test": outcome.n_test, "classes": len(classes), "grouped": grouped}  # fmt: skip


# -- a fitted RankMe law ------------------------------------------------------------------------------


def _read_law(path: str, task: str) -> dict[str, Any]:
    """The law quality = a·RankMe^b of a study's fits.json (the study's own encoders, task
    `task`, clip RankMe) or of a fit.json, with its family and what its x axis was."""
    data = json.loads(Path(path).read_text())
    if "quality_laws" in data:
        key = f"trained/clip_rankme/{task}"
        if key not in data["quality_laws"]:
            known = sorted({k.rsplit("/", 1)[-1] for k in data["quality_laws"]})
            raise ValueError(f"{path}: no law for task {task!r} (tasks: {', '.join(known)})")
        law = data["quality_laws"][key]
        family = "the study's APC-trained encoders (transformer, conv and LSTM), clip RankMe"
    else:
        law = data
        family = None
    if "params" not in law or not {"a", "b"} <= set(law["params"]):
        raise ValueError(f"{path}: not a RankMe law (expected params a and b of y = a·x^b)")
    return {"path": path, "task": task, "law": law, "family": family}


def _predict(law: dict[str, Any], rankme: float) -> dict[str, Any]:
    """a·RankMe^b, and the range the parameters' confidence intervals allow (their corners:
    a box, not a calibrated prediction interval)."""
    params, ci = law["law"]["params"], law["law"].get("ci", {})
    value = params["a"] * rankme ** params["b"]
    corners = [a * rankme**b for a in ci.get("a", [params["a"]]) for b in ci.get("b", [params["b"]])]
    return {"predicted": value, "interval": [min(corners), max(corners)], "level": law["law"].get("level")}


# -- output -----------------------------------------------------------------------------------------


def _summary(spec: str, result: Any, probe: dict | None, law: dict | None) -> dict[str, Any]:
    metrics = {f"{state}_{name}": value for state, values in result.metrics.items() for name, value in values.items()}
    for state, found in (result.intervals or {}).items():
        for name, estimate in found.estimates.items():
            metrics |= {f"{state}_{name}_se": estimate.standard_error, f"{state}_{name}_low": estimate.interval[0],
                        f"{state}_{name}_high": estimate.interval[1]}  # fmt: skip
    row = {"encoder": spec, "name": result.encoder["name"], "dim": result.encoder["dim"], **metrics,
           "frames": result.frames, "clips": result.clips, "hours": result.audio_seconds / 3600,
           "audio_s_per_s": result.audio_seconds_per_second}  # fmt: skip
    if result.layers:
        row["layers"] = _layer_rows(result, probe)
        row |= _best_layers(row["layers"])
    elif probe is not None:
        row["probe_accuracy"] = probe["accuracy"]
        row["probe"] = probe
    if law is not None and "clip" in result.metrics:
        row["law"] = _predict(law, result.metrics["clip"]["rankme"]) | {"task": law["task"], "file": law["path"]}
        row["law"]["warning"] = (
            "the law's exponent b ended at its bound (no positive power law): its prediction is the same whatever "
            "the RankMe; "
            if "b" in law["law"].get("pinned", [])
            else ""
        ) + (
            f"{result.encoder['name']} is not of the family the law was fitted on ({law['family']}); the study "
            "found no relation between RankMe and quality across families, so this is not a prediction for it"
            if law["family"]
            else "the fit does not record which encoders it was fitted on; across families RankMe did not predict "
            "quality in the study"
        )  # fmt: skip
    return row


def _layer_rows(result: Any, probes: dict[str, dict] | None) -> list[dict[str, Any]]:
    """One row per layer, in depth order: width, RankMe per state, probe accuracy."""
    rows = []
    for depth, layer in enumerate(result.layers):
        row: dict[str, Any] = {"layer": layer, "depth": depth, "dim": result.layer_dims[layer]}
        for label, values in result.metrics.items():
            state, _, of = label.partition("@")
            if of == layer:
                row |= {f"{state}_{name}": value for name, value in values.items()}
        if probes is not None:
            row["probe_accuracy"], row["probe"] = probes[layer]["accuracy"], probes[layer]
        rows.append(row)
    return rows


def _best_layers(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """The layer of highest clip RankMe (frame RankMe without clips) and, with a probe, the
    layer that probes best and what picking by RankMe costs in accuracy."""
    key = "clip_rankme" if all("clip_rankme" in row for row in layers) else "frame_rankme"
    by_rankme = max(layers, key=lambda row: row[key])
    best = {"best_layer_by_rankme": by_rankme["layer"], "best_layer_rankme_kind": key}
    if all("probe_accuracy" in row for row in layers):
        by_probe = max(layers, key=lambda row: row["probe_accuracy"])
        lost = by_probe["probe_accuracy"] - by_rankme["probe_accuracy"]
        best |= {"best_layer_by_probe": by_probe["layer"], "accuracy_lost_picking_by_rankme": lost}
    return best


def _print_layers(row: dict[str, Any]) -> None:
    states = ("frame", "frame_centered", "clip", "clip_centered")
    probed = all("probe_accuracy" in layer for layer in row["layers"])
    header = ["layer", "dim", *(f"{s} rankme" for s in states), *(["probe acc"] if probed else [])]
    print(f"{row['encoder']}: {len(row['layers'])} layers, {row['frames']:,} frames of the first, "
          f"{row['clips']:,} clips, {row['hours']:.3f} h")  # fmt: skip
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for layer in row["layers"]:
        cells = [layer["layer"], str(layer["dim"]), *(f"{layer.get(f'{s}_rankme', float('nan')):.4f}" for s in states)]
        cells += [f"{layer['probe_accuracy']:.3f}"] if probed else []
        print("| " + " | ".join(cells) + " |")
    kind = row["best_layer_rankme_kind"].replace("_rankme", " RankMe")
    line = f"best layer by {kind}: {row['best_layer_by_rankme']}"
    if "best_layer_by_probe" in row:
        line += (f"; by probe accuracy: {row['best_layer_by_probe']} (picking by RankMe loses "
                 f"{row['accuracy_lost_picking_by_rankme']:.3f} accuracy)")  # fmt: skip
    print(line)


def _print(rows: list[dict[str, Any]], results: list[Any], per_file: bool) -> None:
    for row in rows:
        if "layers" in row:
            _print_layers(row)
    rows_and_results = [(row, result) for row, result in zip(rows, results, strict=True) if "layers" not in row]
    if rows_and_results:
        _print_outputs([row for row, _ in rows_and_results], [result for _, result in rows_and_results])
    _print_timing(rows, results, per_file)


def _print_outputs(rows: list[dict[str, Any]], results: list[Any]) -> None:
    states = ("frame", "frame_centered", "clip", "clip_centered")
    header = ["encoder", "dim", *(f"{s} rankme" for s in states), "frames", "clips", "hours", "audio s/s"]
    if any("probe_accuracy" in row for row in rows):
        header.append("probe acc")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        values = (f"{row.get(f'{s}_rankme', float('nan')):.4f}"
                  + (f" ± {row[f'{s}_rankme_se']:.2g}" if f"{s}_rankme_se" in row else "") for s in states)  # fmt: skip
        cells = [row["encoder"], str(row["dim"]), *values, f"{row['frames']:,}", f"{row['clips']:,}",
                 f"{row['hours']:.3f}", f"{row['audio_s_per_s']:.1f}"]  # fmt: skip
        if "probe acc" in header:
            cells.append(f"{row['probe_accuracy']:.3f}" if "probe_accuracy" in row else "")
        print("| " + " | ".join(cells) + " |")


def _print_timing(rows: list[dict[str, Any]], results: list[Any], per_file: bool) -> None:
    for row, (_, result, _) in zip(rows, results, strict=True):
        total = max(result.wall_seconds, 1e-9)
        print(f"{row['encoder']}: {result.wall_seconds:.1f} s for {result.audio_seconds:.1f} s of audio; model "
              f"{result.model_seconds / total:.0%}, Gram {result.gram_seconds / total:.0%}, waiting for decoded audio "
              f"{result.wait_seconds / total:.0%} (decoding took {result.decode_seconds:.1f} CPU-s in the workers)"
              + (", resumed" if result.resumed else ""))  # fmt: skip
        if any(len(values) > 1 for values in result.metrics.values()):  # metrics beyond RankMe
            for state, values in result.metrics.items():
                print(f"  {state}: " + "  ".join(f"{k} {v:.4f}" for k, v in values.items()))
        if "law" in row:
            law = row["law"]
            print(f"  law ({law['task']}): predicted quality {law['predicted']:.3f} "
                  f"[{law['interval'][0]:.3f}, {law['interval'][1]:.3f}]  WARNING: {law['warning']}")  # fmt: skip
        skipped = [f for f in result.files if f.error]
        for report in skipped:
            print(f"  skipped {report.path}: {report.error}")
        if per_file:
            for report in result.files:
                if report.error is None and report.metrics:
                    shown = "  ".join(f"{k} {v:.4f}" for k, v in report.metrics.items())
                    print(f"  {report.path}  {report.seconds:.1f} s  {report.rows:,} frames  {shown}")
    sys.stdout.flush()


def _paired_differences(results: list[tuple[str, Any, Any]]) -> list[dict[str, Any]]:
    """RankMe of every pair of encoders, a − b per state, with the paired jackknife interval
    (the same files in the same blocks: each file's frames and clip in block file mod K)."""
    differences = []
    for i, (spec_a, a, _) in enumerate(results):
        for spec_b, b, _ in results[i + 1 :]:
            for state in ("frame", "frame_centered", "clip", "clip_centered"):
                if state not in (a.intervals or {}) or state not in (b.intervals or {}):
                    continue
                level = a.intervals[state].estimates["rankme"].level
                with warnings.catch_warnings():  # the same warnings as each state's own, said already
                    warnings.simplefilter("ignore", RuntimeWarning)
                    comparison = compare_blocks(a.intervals[state].spectra, b.intervals[state].spectra,
                                                metric="rankme", ci=level, eps=1e-7)  # fmt: skip
                difference = comparison.difference
                differences.append({"a": spec_a, "b": spec_b, "state": state, "difference": difference.value,
                                    "standard_error": difference.standard_error,
                                    "interval": list(difference.interval), "level": difference.level,
                                    "beyond_noise": difference.excludes(0.0)})  # fmt: skip
    return differences


def _print_differences(differences: list[dict[str, Any]]) -> None:
    if not differences:
        return
    states = list(dict.fromkeys(d["state"] for d in differences))
    level = f"{100 * differences[0]['level']:g} %"
    print(f"\nRankMe a − b on the same files ({level} paired intervals, blocks by file; * marks a difference "
          "beyond the noise of these files, the others could be either sign):")
    print("| a − b | " + " | ".join(states) + " |\n|" + "---|" * (len(states) + 1))
    pairs = list(dict.fromkeys((d["a"], d["b"]) for d in differences))
    for a, b in pairs:
        found = {d["state"]: d for d in differences if (d["a"], d["b"]) == (a, b)}
        cells = [_difference_cell(found[state]) if state in found else "" for state in states]
        print(f"| {a} − {b} | " + " | ".join(cells) + " |")


def _difference_cell(d: dict[str, Any]) -> str:
    low, high = d["interval"]
    return f"{d['difference']:+.4g} [{low:+.4g}, {high:+.4g}]" + (" *" if d["beyond_noise"] else "")


def _plot(rows: list[dict[str, Any]], path: str) -> None:
    require("--plot", "fit", "matplotlib")
    from matplotlib.figure import Figure  # no pyplot: the user's backend is left alone

    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    if any("layers" in row for row in rows):
        _plot_layers(ax, [row for row in rows if "layers" in row])
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        return
    names = [row["encoder"] for row in rows]
    values = [row.get("clip_rankme", row["frame_rankme"]) for row in rows]
    if all("probe_accuracy" in row for row in rows):
        ax.scatter(values, [row["probe_accuracy"] for row in rows])
        for name, x, y in zip(names, values, [row["probe_accuracy"] for row in rows], strict=True):
            ax.annotate(name, (x, y), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("clip RankMe")
        ax.set_ylabel("linear-probe accuracy")
    else:
        ax.bar(names, values)
        ax.set_ylabel("clip RankMe" if all("clip_rankme" in row for row in rows) else "frame RankMe")
        ax.tick_params(axis="x", rotation=30)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _plot_layers(ax: Any, rows: list[dict[str, Any]]) -> None:
    """RankMe (clip: solid, frame: dashed) against depth, and probe accuracy on a second axis."""
    accuracy = ax.twinx() if any("probe_accuracy" in layer for row in rows for layer in row["layers"]) else None
    for index, row in enumerate(rows):
        depth = [layer["depth"] for layer in row["layers"]]
        colour = f"C{index}"
        for key, style in (("clip_rankme", "-"), ("frame_rankme", "--")):
            if all(key in layer for layer in row["layers"]):
                ax.plot(depth, [layer[key] for layer in row["layers"]], style, color=colour, marker="o", ms=3,
                        label=f"{row['encoder']} {key.replace('_rankme', '')} RankMe")  # fmt: skip
        if accuracy is not None and all("probe_accuracy" in layer for layer in row["layers"]):
            accuracy.plot(depth, [layer["probe_accuracy"] for layer in row["layers"]], ":", color=colour, marker="s",
                          ms=3, label=f"{row['encoder']} probe accuracy")  # fmt: skip
    ax.set_xlabel("layer (depth)")
    ax.set_ylabel("RankMe")
    ax.legend(fontsize=7, loc="upper left")
    if accuracy is not None:
        accuracy.set_ylabel("linear-probe accuracy")
        accuracy.legend(fontsize=7, loc="lower right")
