"""Running a study: render its audio, pre-train and evaluate each run, score the pretrained
ladder. Every finished run is one JSON file under `out/runs/`; a study started again skips
those, and an interrupted pre-training resumes from its checkpoint under `out/checkpoints/`."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import rankme_fast as rf
from rankme_fast.audio import Benchmark, extract, make_benchmark, probe
from rankme_fast.audio.encoders import AudioEncoder, available_encoders, load_encoder
from rankme_fast.audio.encoders.registry import LADDER_OPTIONS
from rankme_fast.audio.models import AudioModel, ModelEncoder
from rankme_fast.audio.pretrain import FrameCorpus, pretrain
from rankme_fast.study.presets import RunSpec, StudyPreset


@dataclass
class StudyData:
    """The labelled evaluation benchmark, its audio as held-out frames, and the shuffled
    pre-training pool. Presets that train to convergence split the benchmark's clips (seeded)
    into validation audio, which decides when to stop, and the held-out audio the loss is
    reported on."""

    benchmark: Benchmark
    held_out: FrameCorpus
    pool: FrameCorpus
    validation: FrameCorpus | None = None

    @classmethod
    def prepare(cls, preset: StudyPreset, progress: bool = False) -> StudyData:
        benchmark = make_benchmark(preset.eval_preset, seed=0, progress=progress)
        pool_waves = [make_benchmark(preset.pool_preset, seed=s, progress=progress).waves for s in preset.pool_seeds]
        waves = np.concatenate(pool_waves)
        order = np.random.default_rng(0).permutation(len(waves))  # small D gets a mix of speech and notes
        pool = FrameCorpus.from_waves(waves[order], benchmark.sr)
        if max(preset.data_seconds) > pool.seconds:
            raise ValueError(
                f"preset {preset.name!r} asks for {max(preset.data_seconds):g} s of pre-training "
                f"audio; its pool has {pool.seconds:g} s"
            )
        clips = list(benchmark.waves)
        if preset.training.patience is None:
            return cls(benchmark, FrameCorpus.from_waves(clips, benchmark.sr), pool)
        split = np.random.default_rng(1).permutation(len(clips))
        validation = FrameCorpus.from_waves([clips[i] for i in split[::2]], benchmark.sr)
        held_out = FrameCorpus.from_waves([clips[i] for i in split[1::2]], benchmark.sr)
        return cls(benchmark, held_out, pool, validation)


def evaluate(encoder: AudioEncoder, benchmark: Benchmark) -> dict[str, Any]:
    """RankMe of frame embeddings (streamed, exact, raw and centred) and of clip embeddings,
    and linear-probe accuracy on every task of the benchmark (and their mean)."""
    raw, centred = rf.GramAccumulator(encoder.dim), rf.GramAccumulator(encoder.dim, centered=True)
    started = time.perf_counter()
    extraction = extract(encoder, benchmark, level="frame", accumulator=[raw, centred], progress=False)
    clips = extraction.clip_embeddings
    with warnings.catch_warnings(record=True) as caught:  # few clips for D: said in the record instead
        warnings.simplefilter("always", RuntimeWarning)
        interval = rf.rankme(clips, ci=0.95, groups=np.arange(len(clips)))  # clip i in block i mod 10
    row: dict[str, Any] = {
        "dim": encoder.dim,
        "frame_rankme": raw.rankme(),
        "frame_rankme_centered": centred.rankme(),
        "clip_rankme": rf.rankme(clips),
        "clip_rankme_centered": rf.rankme(clips, centered=True),
        "clip_rankme_capped": bool(len(clips) < 4 * encoder.dim),
        "clip_rankme_se": interval.standard_error,
        "clip_rankme_interval": list(interval.interval),
        "clip_rankme_left_out": list(interval.left_out),  # with another run's: a paired difference
        "clip_rankme_still_rising": interval.still_rising,
        "clip_rankme_count": len(clips),
        "clip_rankme_interval_warning": "; ".join(dict.fromkeys(str(w.message) for w in caught)),
        "eval_frames": extraction.frames,
    }
    for name, task in benchmark.tasks.items():
        result = probe(clips[task.train], task.labels[task.train], clips[task.test], task.labels[task.test])
        row[f"accuracy_{name}"] = result.accuracy
    row["mean_accuracy"] = float(np.mean([row[f"accuracy_{name}"] for name in benchmark.tasks]))
    row["eval_seconds"] = time.perf_counter() - started
    return row


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write JSON atomically (a crash leaves the old file or the new one, never half of one)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=1, default=float) + "\n")
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    temporary.replace(path)


def run_training(
    spec: RunSpec, data: StudyData, out: Path, progress: bool = False,
    observe: Callable[[int, AudioModel], dict[str, Any]] | None = None, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pre-train and evaluate one run (or read it back if `out/runs/<id>.json` exists); with
    `observe`, what it returned at each validation check is the record's `trajectory`; `extra`
    is written into the record as it is."""
    path = out / "runs" / f"{spec.id}.json"
    if path.exists():
        return json.loads(path.read_text())
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = pretrain(
        spec.encoder,
        data.pool.take(spec.data_seconds),
        spec.training,
        held_out=data.held_out,
        validation=data.validation,
        checkpoint=out / "checkpoints" / f"{spec.id}.pt",
        observe=observe,
        progress=progress,
    )
    record: dict[str, Any] = {
        "id": spec.id,
        "family": "trained",
        "name": spec.id,
        **spec.variables(),
        "n_params": result.n_params,
        "data_frames": result.data_frames,
        "steps": spec.training.steps,
        "steps_run": len(result.losses),
        "best_step": result.best_step,
        "stopped_by": result.stopped_by,
        "epochs": result.epochs,
        "tokens": result.tokens,
        "compute": result.compute,
        "train_loss": result.train_loss,
        "held_out_loss": result.held_out_loss,
        "pretrain_seconds": result.seconds,
        "resumed_from_step": result.resumed_from,
        "encoder": spec.encoder.to_dict(),
        "training": asdict(spec.training),
        "losses": result.losses,
        "validation_curve": result.curve,
    }
    if observe is not None:
        record["trajectory"] = result.observations
    record.update(evaluate(ModelEncoder(result.model, name=spec.id), data.benchmark))
    record.update(extra or {})
    write_json(path, record)
    return record


def run_resumable(
    specs: list[RunSpec], data: StudyData, folder: Path, label: str, say: Callable[[str], None] = print, *,
    minutes: float | None = None, observe: Callable[[int, AudioModel], dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate `specs` into `folder` (finished runs read back), a line per run; with
    `minutes`, no new run starts after that long: the rest is left for a later call."""
    began, records, left = time.perf_counter(), [], 0
    for index, spec in enumerate(specs, 1):
        done = (folder / "runs" / f"{spec.id}.json").exists()
        if not done and minutes is not None and time.perf_counter() - began >= 60 * minutes:
            left += 1
            continue
        started = time.perf_counter()
        record = run_training(spec, data, folder, observe=observe, extra=extra)
        took = " (done before)" if done else f" {time.perf_counter() - started:5.0f} s"
        say(f"[{label} {index:2d}/{len(specs)}] {spec.id:66s} loss {record['held_out_loss']:.4f} "
            f"RankMe {record['clip_rankme']:6.1f} acc {record['mean_accuracy']:.3f}{took}")  # fmt: skip
        records.append(record)
    if left:
        say(f"[{label}] {left} runs left for a later call (--{label}-minutes {minutes:g})")
    return records


def read_back(folder: Path) -> list[dict[str, Any]]:
    """The finished runs under `folder/runs/` (none if it does not exist), in name order."""
    return [json.loads(path.read_text()) for path in sorted((folder / "runs").glob("*.json"))]


def run_pretrained(name: str, data: StudyData, out: Path) -> dict[str, Any] | None:
    """Score one pretrained encoder of the ladder (None, with the reason printed, if it is not
    installed)."""
    path = out / "runs" / f"pretrained-{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    reason = available_encoders().get(name, "unknown encoder")
    if reason is not None:
        print(f"  {name}: skipped ({reason})")
        return None
    encoder = load_encoder(name, **LADDER_OPTIONS.get(name, {}))
    record = {
        "id": f"pretrained-{name}",
        "family": "pretrained",
        "name": name,
        "n_params": encoder.n_params,
        **LADDER_OPTIONS.get(name, {}),
        **evaluate(encoder, data.benchmark),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    return record


def run_all(
    preset: StudyPreset, data: StudyData, out: Path, *, ladder: bool = True, say: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Every run of the preset, then the ladder; finished ones are read back, not redone."""
    specs = preset.runs()
    records = []
    for index, spec in enumerate(specs, 1):
        done = (out / "runs" / f"{spec.id}.json").exists()
        started = time.perf_counter()
        record = run_training(spec, data, out, progress=not done)
        say(
            f"[{index:2d}/{len(specs)}] {spec.id:58s} N={record['n_params']:>8,} loss {record['held_out_loss']:.4f} "
            f"RankMe {record['clip_rankme']:6.1f} acc {record['mean_accuracy']:.3f}"
            + (" (done before)" if done else f" {time.perf_counter() - started:5.1f} s")
        )
        records.append(record)
    for name in preset.ladder if ladder else ():
        record = run_pretrained(name, data, out)
        if record is not None:
            say(
                f"[ladder] {name:50s} N={record['n_params']:>10,} RankMe {record['clip_rankme']:6.1f} "
                f"acc {record['mean_accuracy']:.3f}"
            )
            records.append(record)
    return records
