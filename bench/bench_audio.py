"""Audio encoders, measured here.

    python bench/bench_audio.py speed              # s per audio minute of every adapter
    python bench/bench_audio.py ladder --preset small
    python bench/bench_audio.py corpus             # `rankme-fast audio` on an hour of files
    python bench/bench_audio.py corpus-ab --baseline DIR   # the same for log-mel, against another tree
    python bench/bench_audio.py files --dir DIR    # only write (4 minutes of) those files

`speed`: each available encoder embeds the same 20 s of generated audio (two 10 s clips) at
its default frame rate, after a 1 s warm-up; median of 2 runs, scaled to seconds per audio
minute → bench/results/audio-speed-<date>.json.
`ladder`: every encoder embeds every clip of the benchmark preset; frame embeddings stream
into raw and centred exact Gram accumulators, clip means are kept; RankMe (raw and centred,
clip and frame level) and linear/MLP probe accuracy per task →
bench/results/audio-ladder-<preset>-<date>.json, rewritten after each encoder. Resumable: an
encoder already in that file for the same benchmark is kept, not re-run (`--redo` re-runs it).
CREPE runs with a 100 ms hop in the ladder (10 frames/s instead of 100) to fit this machine.
`corpus`: one hour of files (the tiny benchmark's clips joined into 60 one-minute files as wav,
flac, ogg and mp3 at 16, 22.05, 44.1 and 48 kHz, mono and stereo) scored by
`rankme_fast.audio.audio_corpus.score_encoder` with 2 decoding processes, as `rankme-fast audio`
does, for log-mel, crepe-tiny (100 ms hop) and fcpe: audio seconds per second and where the
time goes (the model, the Gram updates, waiting for decoded audio; the decoders' CPU time);
each encoder runs up to 3 times while its runs take under 30 s in all, and the median run (by
wall time) is reported beside every run's rate and shares → bench/results/audio-corpus-<date>.json.
`corpus-ab`: log-mel on that hour, this tree and a baseline checkout (DIR, with its own built
`_C`) alternately, each run in a fresh process, 5 rounds; the median of each and their ratio →
bench/results/audio-corpus-ab-<date>.json. Run alone: the two share the machine in turn.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import rankme_fast as rf
from rankme_fast import audio
from rankme_fast.audio.encoders.registry import LADDER, LADDER_OPTIONS

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict:
    from bench_cpu import cpu_model

    return {
        "platform": platform.platform(),
        "processor": cpu_model(),
        "cpus": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": dt.date.today().isoformat(),
    }


def speed(args: argparse.Namespace) -> dict:
    bench = audio.make_benchmark("tiny", seed=0)
    waves = [np.concatenate(bench.waves[i * 10 : (i + 1) * 10]) for i in range(2)]  # two 10 s clips
    rows = []
    for name, reason in audio.available_encoders().items():
        if reason is not None:
            rows.append({"name": name, "skipped": reason})
            continue
        encoder = audio.load_encoder(name)
        encoder.embed(bench.waves[0], bench.sr)
        times = []
        for _ in range(2):
            started = time.perf_counter()
            frames = sum(len(encoder.embed(w, bench.sr)) for w in waves)
            times.append(time.perf_counter() - started)
        row = {**encoder.describe(), "seconds_per_audio_minute": 3 * statistics.median(times)}
        row["frames_per_minute"] = 3 * frames
        print(
            f"{name:18s} dim {encoder.dim:5d}  params {encoder.n_params:>11,}  "
            f"{row['seconds_per_audio_minute']:7.2f} s/min"
        )
        rows.append(row)
    command = "python bench/bench_audio.py speed"
    return {"machine": machine(), "command": command, "audio_seconds": 20, "note": args.note, "encoders": rows}


def ladder(args: argparse.Namespace) -> dict:
    bench = audio.make_benchmark(args.preset, seed=args.seed, progress=True)
    out_path = ROOT / "bench" / "results" / f"audio-ladder-{args.preset}-{dt.date.today().isoformat()}.json"
    result = {
        "machine": machine(),
        "command": f"python bench/bench_audio.py ladder --preset {args.preset}",
        "benchmark": {
            "preset": args.preset,
            "seed": args.seed,
            "clips": len(bench),
            "synthesizers": bench.synthesizers,
            "tasks": {
                n: {"classes": len(t.classes), "train": len(t.train), "test": len(t.test)}
                for n, t in bench.tasks.items()
            },
        },
        "encoders": [],
    }
    done = {}
    if out_path.exists():
        previous = json.loads(out_path.read_text())
        if previous["benchmark"] == result["benchmark"]:
            done = {row["name"]: row for row in previous["encoders"] if "skipped" not in row}
    requested = args.encoders or LADDER
    for name in dict.fromkeys([*LADDER, *requested, *done]):  # ladder order, nothing dropped
        if name in done and (name not in requested or name not in (args.redo or [])):
            result["encoders"].append(done[name])
            print(f"{name:18s} already measured in {out_path.name}")
            continue
        if name not in requested:
            continue
        reason = audio.available_encoders().get(name, "unknown encoder")
        if reason is not None:
            result["encoders"].append({"name": name, "skipped": reason})
            continue
        encoder = audio.load_encoder(name, **LADDER_OPTIONS.get(name, {}))
        raw, centred = rf.GramAccumulator(encoder.dim), rf.GramAccumulator(encoder.dim, centered=True)
        started = time.perf_counter()
        extraction = audio.extract(encoder, bench, level="frame", accumulator=[raw, centred], progress=False)
        seconds = time.perf_counter() - started
        clips = extraction.clip_embeddings
        row = {
            **encoder.describe(),
            **LADDER_OPTIONS.get(name, {}),
            "embed_seconds": seconds,
            "seconds_per_audio_minute": 60 * seconds / extraction.seconds,
            "frames": extraction.frames,
            "clip_rankme": rf.rankme(clips),
            "clip_rankme_centered": rf.rankme(clips, centered=True),
            "frame_rankme": raw.rankme(),
            "frame_rankme_centered": centred.rankme(),
            "clip_rankme_capped": len(clips) < 4 * encoder.dim,
            "probes": {},
        }
        for task_name, task in bench.tasks.items():
            for kind in ("linear", "mlp"):
                probe = audio.probe(
                    clips[task.train], task.labels[task.train], clips[task.test], task.labels[task.test], kind=kind
                )
                row["probes"][f"{task_name}/{kind}"] = {"accuracy": probe.accuracy, "macro_f1": probe.macro_f1}
        linear = [v["accuracy"] for k, v in row["probes"].items() if k.endswith("/linear")]
        row["mean_linear_accuracy"] = float(np.mean(linear))
        print(
            f"{name:18s} dim {encoder.dim:5d} clip RankMe {row['clip_rankme']:8.1f} (centred "
            f"{row['clip_rankme_centered']:8.1f}) frame {row['frame_rankme']:8.1f}  mean linear acc "
            f"{row['mean_linear_accuracy']:.3f}  {seconds:.0f} s",
            flush=True,
        )
        result["encoders"].append(row)
        out_path.write_text(json.dumps(result, indent=1) + "\n")
    return result


CORPUS_RUNS, CORPUS_SECONDS = 3, 30.0
CORPUS_FORMATS = [("wav", 16000, 1), ("flac", 22050, 2), ("ogg", 44100, 1), ("mp3", 48000, 2)]


def make_corpus(directory: Path, minutes: int = 60) -> list[str]:
    """`minutes` one-minute files of the tiny benchmark's clips (reused in turn), written once."""
    import soundfile

    from rankme_fast.audio.waves import resample

    directory.mkdir(parents=True, exist_ok=True)
    bench = audio.make_benchmark("tiny", seed=0)
    paths = []
    for minute in range(minutes):
        suffix, rate, channels = CORPUS_FORMATS[minute % len(CORPUS_FORMATS)]
        path = directory / f"minute{minute:02d}.{suffix}"
        paths.append(str(path))
        if path.exists():
            continue
        picks = [(minute * 60 + k) % len(bench.waves) for k in range(60)]
        wave = resample(np.concatenate([bench.waves[i] for i in picks]), bench.sr, rate)
        frames = np.stack([wave, 0.7 * wave], axis=1) if channels == 2 else wave
        # One-second blocks: libsndfile's Vorbis writer crashes on a single minute-long 44.1 kHz write.
        with soundfile.SoundFile(path, "w", rate, channels) as out:
            for start in range(0, len(frames), rate):
                out.write(frames[start : start + rate])
    return paths


def corpus(args: argparse.Namespace) -> dict:
    from rankme_fast.audio.audio_corpus import AudioOptions, score_encoder

    paths = make_corpus(Path(args.dir), args.minutes)
    result = {"machine": machine(), "command": "python bench/bench_audio.py corpus", "files": len(paths),
              "audio_minutes": args.minutes, "workers": args.workers, "window_seconds": 10.0,
              "encoders": []}  # fmt: skip
    for name in ("log-mel", "crepe-tiny", "fcpe"):
        reason = audio.available_encoders()[name]
        if reason is not None:
            result["encoders"].append({"name": name, "skipped": reason})
            continue
        encoder = audio.load_encoder(name, **LADDER_OPTIONS.get(name, {}))
        runs = []  # up to 3 runs while they take under 30 s in all; the median run is reported
        while len(runs) < CORPUS_RUNS and sum(run.wall_seconds for run in runs) < CORPUS_SECONDS:
            runs.append(score_encoder(encoder, paths, AudioOptions(workers=args.workers, progress=False)))
        scored = sorted(runs, key=lambda run: run.wall_seconds)[len(runs) // 2]
        wall = scored.wall_seconds
        row = {
            "name": name, "options": LADDER_OPTIONS.get(name, {}), "dim": encoder.dim, "frames": scored.frames,
            "audio_seconds": scored.audio_seconds, "wall_seconds": wall,
            "audio_seconds_per_second": scored.audio_seconds_per_second,
            "share": {"model": scored.model_seconds / wall, "gram": scored.gram_seconds / wall,
                      "waiting_for_decode": scored.wait_seconds / wall},
            "decode_cpu_seconds": scored.decode_seconds,
            "frame_rankme": scored.metrics["frame"]["rankme"], "clip_rankme": scored.metrics["clip"]["rankme"],
            "runs": [{"audio_seconds_per_second": run.audio_seconds_per_second,
                      "gram_share": run.gram_seconds / run.wall_seconds,
                      "waiting_share": run.wait_seconds / run.wall_seconds} for run in runs],
        }  # fmt: skip
        share = row["share"]
        print(f"{name}: {row['audio_seconds_per_second']:.1f} audio s/s; model {share['model']:.0%}, "
              f"Gram {share['gram']:.1%}, waiting for decode {share['waiting_for_decode']:.1%}")  # fmt: skip
        result["encoders"].append(row)
    return result


AB_RUN = """
import json, sys
from rankme_fast import audio
from rankme_fast.audio.{module} import AudioOptions, score_encoder
encoder = audio.load_encoder("log-mel")
result = score_encoder(encoder, json.loads(sys.argv[1]), AudioOptions(workers=int(sys.argv[2]), progress=False))
print(json.dumps({{"audio_seconds_per_second": result.audio_seconds_per_second,
                  "rankme": result.metrics["frame"]["rankme"],
                  "gram_share": result.gram_seconds / result.wall_seconds}}))
"""


def corpus_ab(args: argparse.Namespace) -> dict:
    """This tree against `args.baseline` on the hour of files, log-mel, alternating runs."""
    import os
    import subprocess
    import sys

    paths = make_corpus(Path(args.dir), args.minutes)
    trees = {"this": ROOT, "baseline": Path(args.baseline).resolve()}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        for name in (list(trees) if round_ % 2 == 0 else list(trees)[::-1]):
            tree = trees[name]
            module = "audio_corpus" if (tree / "rankme_fast" / "audio" / "audio_corpus.py").exists() else "corpus"
            env = {**os.environ, "PYTHONPATH": str(tree)}
            command = [sys.executable, "-c", AB_RUN.format(module=module), json.dumps(paths), str(args.workers)]
            done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(name, runs[name][-1])
    medians = {name: statistics.median(r["audio_seconds_per_second"] for r in rows) for name, rows in runs.items()}
    return {"machine": machine(), "command": f"python bench/bench_audio.py corpus-ab --baseline {args.baseline}",
            "encoder": "log-mel", "workers": args.workers, "audio_minutes": args.minutes, "rounds": args.rounds,
            "runs": runs, "median_audio_seconds_per_second": medians,
            "ratio_this_over_baseline": medians["this"] / medians["baseline"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("speed").add_argument("--note", default="", help="recorded with the results")
    run = commands.add_parser("ladder")
    run.add_argument("--preset", default="small", choices=sorted(audio.datasets.PRESETS))
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--encoders", nargs="*", help="default: the whole ladder")
    run.add_argument("--redo", nargs="*", help="re-run these even if already measured")
    files = commands.add_parser("corpus")
    files.add_argument("--dir", default="/tmp/rankme-fast-audio-corpus", help="where the hour of files is written")
    files.add_argument("--minutes", type=int, default=60)
    files.add_argument("--workers", type=int, default=2)
    ab = commands.add_parser("corpus-ab")
    ab.add_argument("--baseline", required=True, help="a checkout of the code to compare with, its _C built")
    ab.add_argument("--dir", default="/tmp/rankme-fast-audio-corpus")
    ab.add_argument("--minutes", type=int, default=60)
    ab.add_argument("--workers", type=int, default=2)
    ab.add_argument("--rounds", type=int, default=5)
    write = commands.add_parser("files", help="only write the corpus's files (to try `rankme-fast audio` on)")
    write.add_argument("--dir", required=True)
    write.add_argument("--minutes", type=int, default=4)
    args = parser.parse_args()
    if args.command == "files":
        print("\n".join(make_corpus(Path(args.dir), args.minutes)))
        return
    if args.command in ("speed", "corpus", "corpus-ab"):
        result = {"speed": speed, "corpus": corpus, "corpus-ab": corpus_ab}[args.command](args)
        path = ROOT / "bench" / "results" / f"audio-{args.command}-{dt.date.today().isoformat()}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {path}")
    else:
        ladder(args)


if __name__ == "__main__":
    main()
