"""What RankMe costs inside a training loop (one process, interleaved rounds, medians).

Per step: RankMeMetric.update on a batch of 256 x 2048 embeddings (exact and fast), against a
forward + backward + AdamW step of a small reference model that makes those embeddings (an
SSL-style MLP projector 1024 -> 2048 -> 2048 -> 2048 with BatchNorm), and against what the
queue approach does per step (copy the batch into an N x D buffer).

Per evaluation, with the same N = 25 600 samples: RankMeMetric.compute (one float64
eigensolve of the D x D state) against the queue approach's SVD of the N x D buffer
(torch.linalg.svdvals in fp32, what most code does, and in fp64).

Compiled steps (section "compiled"): the forward half of a training step (model, loss and,
when asked, `metric.update(embeddings)`) eager and under `torch.compile(fullgraph=True)`, with
backward and AdamW after it, for batch 256 x D 2048 (the model above) and 32 x 256 (a small
MLP, where Python overhead dominates); and, on the small batch, the time `update` spends
outside the kernel itself (the update minus the bare kernel call on the same batch).

Writes bench/results/training-<device>-<date>.json and prints a markdown table.

    python bench/bench_training.py [--device cpu|cuda] [--steps 100] [--rounds 7] [--no-compiled]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see bench_cpu.py

import torch
from bench_cpu import cpu_model, time_interleaved
from torch import nn

import rankme_fast as rf
from rankme_fast.integrations import RankMeMetric

RESULTS = Path(__file__).resolve().parent / "results"
BATCH, DIM, INPUT = 256, 2048, 1024


def reference_model() -> nn.Module:
    layers: list[nn.Module] = []
    for width_in in (INPUT, DIM):
        layers += [nn.Linear(width_in, DIM), nn.BatchNorm1d(DIM), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(DIM, DIM))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch: N = steps x 256 samples")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--svd-rounds", type=int, default=3)
    parser.add_argument("--no-compiled", action="store_true", help="skip the torch.compile section")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    generator = torch.Generator(device=device).manual_seed(0)
    torch.manual_seed(0)

    model = reference_model().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = torch.randn(BATCH, INPUT, device=device, generator=generator)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        embeddings = model(inputs)
        embeddings.square().mean().backward()
        optimizer.step()

    # The epoch's embeddings, made by the model, so the spectrum is a model's and not noise.
    n = args.steps * BATCH
    with torch.no_grad():
        model.eval()
        queue = torch.cat(
            [model(torch.randn(BATCH, INPUT, device=device, generator=generator)) for _ in range(args.steps)]
        )
        model.train()
    batch = queue[:BATCH].clone()
    metrics = {p: RankMeMetric(DIM, precision=p, compute_with_cache=False).to(device) for p in ("exact", "fast")}
    for precision, metric in metrics.items():
        for chunk in queue.split(BATCH):
            metric.update(chunk)
        assert int(metric.count) == n, precision
    buffer = torch.empty_like(queue)
    scratch = {p: RankMeMetric(DIM, precision=p).to(device) for p in ("exact", "fast")}

    per_step = {
        "model step: fwd + bwd + AdamW (batch 256)": train_step,
        "RankMeMetric.update exact": lambda: scratch["exact"].update(batch),
        "RankMeMetric.update fast": lambda: scratch["fast"].update(batch),
        "queue: copy batch into buffer": lambda: buffer[:BATCH].copy_(batch),
    }
    per_eval = {
        "RankMeMetric.compute exact (eigvalsh D x D fp64)": lambda: metrics["exact"].compute(),
        "queue: torch.linalg.svdvals fp32 + RankMe": lambda: rf.metrics.rankme(
            torch.linalg.svdvals(queue).double().cpu().numpy()
        ),
        "queue: torch.linalg.svdvals fp64 + RankMe": lambda: rf.metrics.rankme(
            torch.linalg.svdvals(queue.double()).cpu().numpy()
        ),
    }
    for cases in (per_step, per_eval):
        for run in cases.values():
            run()
    step_times = time_interleaved(per_step, args.rounds, sync)
    eval_times = time_interleaved(per_eval, args.svd_rounds, sync)
    med = {k: statistics.median(v) for k, v in {**step_times, **eval_times}.items()}

    reference = rf.metrics.rankme(torch.linalg.svdvals(queue.double()).cpu().numpy())
    values = {
        "RankMeMetric exact": float(metrics["exact"].compute()),
        "RankMeMetric fast": float(metrics["fast"].compute()),
        "queue svdvals fp32": rf.metrics.rankme(torch.linalg.svdvals(queue).double().cpu().numpy()),
    }
    step = med["model step: fwd + bwd + AdamW (batch 256)"]
    compute = med["RankMeMetric.compute exact (eigvalsh D x D fp64)"]
    svd32 = med["queue: torch.linalg.svdvals fp32 + RankMe"]
    ratios = {
        "update exact / model step": med["RankMeMetric.update exact"] / step,
        "update fast / model step": med["RankMeMetric.update fast"] / step,
        "queue copy / model step": med["queue: copy batch into buffer"] / step,
        "queue svdvals fp32 / compute (x faster)": svd32 / compute,
        "queue svdvals fp64 / compute (x faster)": med["queue: torch.linalg.svdvals fp64 + RankMe"] / compute,
        "epoch total, queue fp32 / metric exact": (args.steps * med["queue: copy batch into buffer"] + svd32)
        / (args.steps * med["RankMeMetric.update exact"] + compute),
        "epoch total, queue fp32 / metric fast": (args.steps * med["queue: copy batch into buffer"] + svd32)
        / (args.steps * med["RankMeMetric.update fast"] + compute),
    }
    params = sum(p.numel() for p in model.parameters())
    floor = {
        "model_step_flops_approx": 6 * BATCH * params,
        "update_flops": BATCH * DIM * (DIM + 1),
        "eigensolve_flops_approx": int(4 / 3 * DIM**3),
        "svd_flops_approx": int(4 * n * DIM**2 - 4 / 3 * DIM**3),
        "state_bytes_fp64": DIM * DIM * 8,
        "queue_bytes_fp32": n * DIM * 4,
    }
    result = {
        "benchmark": "bench/bench_training.py",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
            "logical_cores": os.cpu_count(),
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "rankme_fast": rf.__version__},
        "shape": {"batch": BATCH, "dim": DIM, "steps": args.steps, "samples": n, "embedding_dtype": "float32"},
        "reference_model": {"layers": str(model), "parameters": params},
        "rounds": {"per_step": args.rounds, "per_eval": args.svd_rounds},
        "floor": floor,
        "per_step": {k: {"median_s": statistics.median(v), "runs_s": v} for k, v in step_times.items()},
        "per_eval": {k: {"median_s": statistics.median(v), "runs_s": v} for k, v in eval_times.items()},
        "ratios_of_medians": ratios,
        "rankme": values | {"reference_float64_svd": reference},
        "rel_error_vs_float64_svd": {k: abs(v - reference) / reference for k, v in values.items()},
    }
    if not args.no_compiled:
        result["compiled"] = compiled_section(device, sync, args.rounds)
    out = args.out or RESULTS / f"training-{device.type}-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"batch {BATCH}, D={DIM}, N={n} on {result['machine']['device']}; medians of interleaved runs\n")
    print("| case | median s |\n|---|---:|")
    for name, seconds in med.items():
        print(f"| {name} | {seconds:.4f} |")
    print("\n| ratio | value |\n|---|---:|")
    for name, ratio in ratios.items():
        print(f"| {name} | {ratio:.3f} |")
    print("\n| RankMe | value | rel err vs fp64 SVD |\n|---|---:|---:|")
    for name, value in values.items():
        print(f"| {name} | {value:.6f} | {abs(value - reference) / reference:.1e} |")
    if "compiled" in result:
        print("\n| compiled section | median ms |\n|---|---:|")
        for shape, cases in result["compiled"]["per_step"].items():
            for name, seconds in cases.items():
                print(f"| {shape}: {name} | {1e3 * seconds:.3f} |")
        for name, value in result["compiled"]["summary"].items():
            print(f"| {name} | {value:.3f} |")
    print(f"\nwrote {out}")


def compiled_section(device: torch.device, sync, rounds: int) -> dict[str, object]:
    """Per training step, eager and compiled, with and without the metric; and the part of a
    small-batch update spent outside its kernel."""
    shapes = {"256x2048": (BATCH, INPUT, reference_model), "32x256": (32, 128, small_model)}
    per_step: dict[str, dict[str, float]] = {}
    summary: dict[str, float] = {}
    for label, (batch, width, make) in shapes.items():
        per_step[label], found = compiled_case(label, batch, width, make, device, sync, rounds)
        summary.update(found)
    return {"per_step": per_step, "summary": summary, "targets": {"update outside the kernel (us)": 30,
            "compiled with metric / eager with metric": 1.0}}  # fmt: skip


def compiled_case(label, batch, width, make, device, sync, rounds) -> tuple[dict[str, float], dict[str, float]]:
    from rankme_fast._inputs import kernel_input
    from rankme_fast.backends import select_backend

    torch.manual_seed(0)
    model = make().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, width, device=device)
    dim = model(x).shape[1]
    metric = RankMeMetric(dim).to(device)
    repeats = 20 if batch == BATCH else 200

    def forward(with_metric: bool):
        embeddings = model(x)
        if with_metric:
            metric.update(embeddings)
        return embeddings.square().mean()

    def step(fn):
        optimizer.zero_grad(set_to_none=True)
        fn().backward()
        optimizer.step()

    def repeated(run):
        return lambda: [run() for _ in range(repeats)]

    compiled = {flag: torch.compile(lambda flag=flag: forward(flag), fullgraph=True) for flag in (False, True)}
    cases = {
        "eager, no metric": lambda: step(lambda: forward(False)),
        "eager, with metric": lambda: step(lambda: forward(True)),
        "compiled, no metric": lambda: step(compiled[False]),
        "compiled, with metric": lambda: step(compiled[True]),
    }
    if device.type == "cuda":  # the same steps captured in CUDA graphs
        graphs = {
            flag: torch.compile(lambda flag=flag: forward(flag), fullgraph=True, mode="reduce-overhead")
            for flag in (False, True)
        }
        cases["CUDA graph, no metric"] = lambda: step(graphs[False])
        cases["CUDA graph, with metric"] = lambda: step(graphs[True])
    for run in cases.values():  # compile and warm up
        for _ in range(3):
            run()
    timed = time_interleaved({name: repeated(run) for name, run in cases.items()}, rounds, sync)
    med = {name: statistics.median(times) / repeats for name, times in timed.items()}
    summary = {
        f"{label}: metric cost per step, eager (ms)": 1e3 * (med["eager, with metric"] - med["eager, no metric"]),
        f"{label}: metric cost per step, compiled (ms)": 1e3
        * (med["compiled, with metric"] - med["compiled, no metric"]),
        f"{label}: compiled with metric / eager with metric": med["compiled, with metric"] / med["eager, with metric"],
    }
    if batch != BATCH:  # Python overhead of an update: the update minus its bare kernel call
        embeddings = model(x).detach()
        matrix = kernel_input(embeddings)
        backend, _ = select_backend(matrix, "exact")
        gram = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        bare = {
            "metric.update": repeated(lambda: metric.update(embeddings)),
            "kernel alone": repeated(lambda: backend.add_gram(matrix, gram, None, "exact")),
        }
        timed = time_interleaved(bare, rounds, sync)
        update, kernel = (statistics.median(timed[k]) / repeats for k in ("metric.update", "kernel alone"))
        summary[f"{label}: update outside the kernel (us)"] = 1e6 * (update - kernel)
        summary[f"{label}: kernel alone (us)"] = 1e6 * kernel
    return med, summary


def small_model() -> nn.Module:
    return nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256))


if __name__ == "__main__":
    main()
