"""The study's encoders layer by layer: for the trained encoders of the depth sweep (from their
checkpoints) and each pretrained encoder of the ladder that shows inner layers, every layer's
clip and frame RankMe and linear-probe accuracy, from one pass over the labelled benchmark.
Per model: Spearman ρ across layers of clip RankMe against mean accuracy, the layer of highest
RankMe, the layer that probes best, and the accuracy lost by picking the layer by RankMe.
Each model's result is one JSON file under `out/layers/` (a study started again reads it back)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rankme_fast.audio import Benchmark, probe
from rankme_fast.audio.encoders import AudioEncoder, available_encoders, load_encoder
from rankme_fast.audio.encoders.registry import LADDER_OPTIONS
from rankme_fast.audio.models import AudioModel, EncoderConfig, ModelEncoder
from rankme_fast.integrations.layers import LayerStates
from rankme_fast.scaling.ranks import spearman
from rankme_fast.study.presets import StudyPreset
from rankme_fast.study.study_fits import sweep_rows


def evaluate_layers(encoder: AudioEncoder, benchmark: Benchmark) -> dict[str, Any]:
    """Every layer of `encoder` on the benchmark: RankMe (frames and clip means, raw and
    centred), probe accuracy per task and its mean, and the per-model summary."""
    started = time.perf_counter()
    names = encoder.layer_names("all")
    states = LayerStates()
    clips: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for wave in benchmark.waves:
        outputs = encoder.embed_layers(wave, benchmark.sr, "all")
        states.add(outputs)
        for name, frames in outputs.items():
            clips[name].append(frames.mean(dim=0, dtype=torch.float64))
    layers = []
    for depth, result in enumerate(states.results()):
        x = torch.stack(clips[result.name]).float().numpy()
        accuracy = {name: probe(x[task.train], task.labels[task.train], x[task.test], task.labels[task.test]).accuracy
                    for name, task in benchmark.tasks.items()}  # fmt: skip
        layers.append({"layer": result.name, "depth": depth, "dim": result.dim,
                       **{f"{label}_rankme": values["rankme"] for label, values in result.metrics.items()},
                       **{f"accuracy_{name}": value for name, value in accuracy.items()},
                       "mean_accuracy": float(np.mean(list(accuracy.values())))})  # fmt: skip
    return {"encoder": encoder.describe(), "layers": layers, **summarise(layers),
            "seconds": time.perf_counter() - started}  # fmt: skip


def summarise(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Spearman ρ across layers (clip RankMe against mean accuracy, with its exact p for few
    layers), the best layer by each, and what picking by RankMe costs."""
    rankme = [layer["clip_rankme"] for layer in layers]
    accuracy = [layer["mean_accuracy"] for layer in layers]
    by_rankme, by_probe = int(np.argmax(rankme)), int(np.argmax(accuracy))
    summary: dict[str, Any] = {
        "best_layer_by_rankme": layers[by_rankme]["layer"],
        "best_layer_by_probe": layers[by_probe]["layer"],
        "same_layer": by_rankme == by_probe,
        "accuracy_lost_picking_by_rankme": accuracy[by_probe] - accuracy[by_rankme],
        "accuracy_of_last_layer": accuracy[-1],
    }
    if len(layers) >= 3 and len(set(rankme)) > 1 and len(set(accuracy)) > 1:
        rho, p = spearman(rankme, accuracy)  # exact p for up to 8 layers
        summary |= {"spearman": rho, "spearman_p": p}
    return summary


def trained_encoder(out: Path, record: dict[str, Any]) -> ModelEncoder:
    """A trained run's encoder from its checkpoint (the best model when training stopped on the
    validation loss, else the last)."""
    path = out / "checkpoints" / f"{record['id']}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: the run's checkpoint is needed to score its layers (run the study here)")
    state = torch.load(path, weights_only=False)
    model = AudioModel(EncoderConfig(**state["identity"]["config"]))
    best = getattr(state.get("watch"), "best", None)
    model.load_state_dict(best["model"] if best else state["model"])
    return ModelEncoder(model, name=record["id"])


def run_layerwise(
    preset: StudyPreset, records: list[dict[str, Any]], benchmark: Benchmark, out: Path, say: Any = print
) -> dict[str, Any]:
    """The depth sweep's trained encoders and the ladder's encoders with inner layers, each
    read back from out/layers/<id>.json when done before."""
    (out / "layers").mkdir(parents=True, exist_ok=True)
    found: dict[str, Any] = {}
    depths = sorted(sweep_rows(records, preset, "depth"), key=lambda r: r["depth"])
    candidates: list[tuple[str, Any]] = [(r["id"], r) for r in depths]
    candidates += [(f"pretrained-{name}", name) for name in preset.ladder if available_encoders().get(name) is None]
    for key, what in candidates:
        path = out / "layers" / f"{key}.json"
        if path.exists():
            found[key] = json.loads(path.read_text())
            continue
        trained = isinstance(what, dict)
        encoder = trained_encoder(out, what) if trained else load_encoder(what, **LADDER_OPTIONS.get(what, {}))
        try:
            encoder.layer_names("all")
        except ValueError as error:  # no inner layers to show (ONNX models, an LSTM)
            say(f"[layers] {key}: skipped ({error})")
            continue
        result = evaluate_layers(encoder, benchmark) | {"family": "trained" if trained else "pretrained"}
        path.write_text(json.dumps(result, indent=1, default=float) + "\n")
        found[key] = result
        rho = result.get("spearman", math.nan)
        say(f"[layers] {key:50s} {len(result['layers'])} layers, ρ = {rho:.2f}, best by RankMe "
            f"{result['best_layer_by_rankme']}, by probe {result['best_layer_by_probe']}, lost "
            f"{result['accuracy_lost_picking_by_rankme']:.3f}  {result['seconds']:.0f} s")  # fmt: skip
    return found
