"""What recording every layer costs: a 12-layer, 768-wide wav2vec2-style encoder (random
weights from a config: nothing downloaded) on batches of 16 one-second clips, side by side in
interleaved rounds (medians; only ratios within one run are compared):

  forward          model(x): the forward pass alone;
  hidden_states    model(x, output_hidden_states=True): the 13 hidden states returned, not used;
  record_outputs   the same, and all 13 added to float64 states (frames and clip means, each a
                   centred state: LayerRecorder.add_outputs);
  record_hooks     model(x) with forward hooks on the 12 transformer layers (LayerRecorder).

Also the floor of the recording: FLOPs of the Gram updates against the forward's, and the
memory the states take (L·D²·8 bytes per pooling, measured from the state tensors, and the
process's peak RSS growth over a forward-only run).

    python bench/bench_layers.py                 # -> bench/results/layers-<date>.json
    python bench/bench_layers.py --rounds 3 --batches 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
from bench_cpu import cpu_model

from rankme_fast.integrations.layers import LayerRecorder

RESULTS = Path(__file__).resolve().parent / "results"


def model_of(layers: int, width: int) -> torch.nn.Module:
    import transformers

    config = transformers.Wav2Vec2Config(hidden_size=width, num_hidden_layers=layers, num_attention_heads=12,
                                         intermediate_size=4 * width)  # fmt: skip
    torch.manual_seed(0)
    return transformers.Wav2Vec2Model(config).eval()


def state_bytes(recorder: LayerRecorder) -> int:
    total = 0
    for states in recorder.states.states.values():
        for acc in states.values():
            for part in acc._parts:
                if part is not None:
                    total += sum(t.numel() * t.element_size() for t in (part.gram, part.mean) if t is not None)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--clips", type=int, default=16, help="one-second clips per batch")
    parser.add_argument("--batches", type=int, default=3, help="batches per timing")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / f"layers-{dt.date.today().isoformat()}.json")
    args = parser.parse_args()
    model = model_of(args.layers, args.width)
    batches = [torch.randn(args.clips, 16000, generator=torch.Generator().manual_seed(i)) for i in range(args.batches)]

    def forward() -> None:
        for x in batches:
            model(x)

    def hidden_states() -> None:
        for x in batches:
            model(x, output_hidden_states=True)

    def record_outputs() -> LayerRecorder:
        recorder = LayerRecorder()
        for x in batches:
            recorder.add_outputs(model(x, output_hidden_states=True).hidden_states)
        return recorder

    def record_hooks() -> LayerRecorder:
        with LayerRecorder(model, "all") as recorder:
            forward()
        return recorder

    cases = {"forward": forward, "hidden_states": hidden_states, "record_outputs": record_outputs,
             "record_hooks": record_hooks}  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in cases}
    rss_forward = rss_recording = 0
    with torch.inference_mode():
        forward()  # warm-up (and the process's peak for a forward alone)
        rss_forward = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        recorder = record_outputs()
        rss_recording = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for round_ in range(args.rounds):
            for name, case in cases.items():
                started = time.perf_counter()
                case()
                times[name].append(time.perf_counter() - started)
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()), flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    rows = recorder.states.states["0"]["frame"].count
    layers_recorded = len(recorder.states.states)
    gram_flops = 2 * layers_recorded * rows * args.width * (args.width + 1) / 2  # one triangle per frame state
    result = {
        "benchmark": "bench/bench_layers.py",
        "command": f"python bench/bench_layers.py --layers {args.layers} --width {args.width} --clips {args.clips} "
        f"--batches {args.batches} --rounds {args.rounds}",
        "date": dt.date.today().isoformat(),
        "machine": {"cpu": cpu_model(), "platform": platform.platform(), "threads": torch.get_num_threads()},
        "model": {"layers": args.layers, "width": args.width, "frames_per_batch": rows // args.batches,
                  "params": sum(p.numel() for p in model.parameters())},
        "layers_recorded": layers_recorded,
        "median_seconds": median,
        "rounds": times,
        "ratios": {
            "record_outputs_over_forward": median["record_outputs"] / median["forward"],
            "record_outputs_over_hidden_states": median["record_outputs"] / median["hidden_states"],
            "record_hooks_over_forward": median["record_hooks"] / median["forward"],
        },
        "gram_gflop_per_run": gram_flops / 1e9,
        "state_bytes": state_bytes(recorder),
        "state_bytes_expected": layers_recorded * 2 * (args.width**2 + args.width) * 8,
        "peak_rss_growth_bytes": (rss_recording - rss_forward) * 1024,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("\n| case | median s | / forward |\n|---|---|---|")
    for name, value in median.items():
        print(f"| {name} | {value:.3f} | {value / median['forward']:.3f} |")
    grown = result["peak_rss_growth_bytes"] / 2**20
    print(f"states: {result['state_bytes'] / 2**20:.1f} MiB (L·2·(D²+D)·8 = "
          f"{result['state_bytes_expected'] / 2**20:.1f} MiB); peak RSS grew {grown:.1f} MiB")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
