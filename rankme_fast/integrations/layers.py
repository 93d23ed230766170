"""Every layer of a model in one forward pass: forward hooks on the chosen layers (or the
per-layer outputs a model returns, as Hugging Face `hidden_states` or a TorchScript module
returning a tuple) feed one float64 state per layer and pooling — frames, and clip means —
never keeping an activation.

Layers are chosen by a spec: "all" (the model's stack of layers: `layer_stack`), indices and
slices into that stack ("3", "-4:", "0,6,11", "::2"), or name patterns matched dot-segment by
dot-segment ("encoder.layers.*", "feature_extractor.conv_layers.?"), several joined by commas.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn

from rankme_fast.accumulate import GramAccumulator
from rankme_fast.api import spectra_many
from rankme_fast.integrations.hooks import Select, first_tensor
from rankme_fast.spectrum import Spectrum

LayerSpec = str | int | Sequence[str | int]
POOLINGS = ("frame", "clip")
_INDEX = re.compile(r"^-?\d*(:-?\d*){0,2}$")  # 3, -4:, 2:8, ::2


def layer_stack(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's stack of layers, by full names: the children of its longest nn.ModuleList or
    nn.Sequential among those holding at least half the parameters the largest one holds (so a
    wav2vec2's transformer layers, not its 7 convolutions; an outer Sequential(front, encoder,
    head) gives way to the encoder's 12 layers); the outermost when tied."""
    stacks = [(name, module) for name, module in model.named_modules()
              if isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) > 0]  # fmt: skip
    if not stacks:
        return []
    sizes = [sum(p.numel() for p in module.parameters()) for _, module in stacks]
    big = [stack for stack, size in zip(stacks, sizes, strict=True) if 2 * size >= max(sizes)]
    name, module = max(big, key=lambda stack: len(stack[1]))  # max keeps the first of a tie
    return [(f"{name}.{child}" if name else child, sub) for child, sub in module.named_children()]


def choose(
    names: Sequence[str], spec: LayerSpec, *, stack: Sequence[str] | None = None, what: str = "model"
) -> list[str]:
    """The names `spec` picks: "all" and indices/slices pick from `stack` (default: `names`),
    patterns from `names`; in the order given, each once. ValueError when a part matches
    nothing."""
    stack = list(names if stack is None else stack)
    parts: list[str | int] = []
    for part in [spec] if isinstance(spec, (str, int)) else list(spec):
        parts += [p.strip() for p in part.split(",") if p.strip()] if isinstance(part, str) else [part]
    if not parts:
        raise ValueError(f"empty layer spec {spec!r}")
    chosen: list[str] = []
    for part in parts:
        if part == "all" or isinstance(part, int) or _INDEX.match(str(part)):
            if not stack:
                raise ValueError(f"layer spec {part!r}: the {what} has no stack of layers (no nn.ModuleList or "
                                 "nn.Sequential); name the layers by pattern")  # fmt: skip
            found = _indexed(stack, part)
        else:
            pattern = str(part).split(".")
            found = [n for n in names if len(n.split(".")) == len(pattern)
                     and all(fnmatchcase(s, p) for s, p in zip(n.split("."), pattern, strict=True))]  # fmt: skip
        if not found:
            sample = ", ".join(list(stack or names)[:6])
            raise ValueError(f"layer spec {part!r} matches no layer of the {what} (its layers include: {sample}, …)")
        chosen += [name for name in found if name not in chosen]
    return chosen


def _indexed(stack: list[str], part: str | int) -> list[str]:
    if part == "all":
        return list(stack)
    if isinstance(part, int) or ":" not in part:
        index = int(part)
        if not -len(stack) <= index < len(stack):
            raise ValueError(f"layer index {index} is out of range: the stack has {len(stack)} layers")
        return [stack[index]]
    pieces = [int(p) if p else None for p in part.split(":")]
    return stack[slice(*pieces)]


def resolve_layers(model: nn.Module, spec: LayerSpec = "all") -> list[tuple[str, nn.Module]]:
    """(name, module) of each layer `spec` picks in `model` (module docstring)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError("forward hooks do not run inside a TorchScript module: have it return its layers' "
                        "outputs (a tuple or list of tensors) and record those: LayerRecorder.add_outputs")
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    del modules[""]
    names = choose(list(modules), spec, stack=[name for name, _ in layer_stack(model)], what=type(model).__name__)
    return [(name, modules[name]) for name in names]


@contextmanager
def capture_layers(
    model: nn.Module, spec: LayerSpec, sink: Callable[[dict[str, torch.Tensor]], None], *,
    select: Select | None = None,
) -> Iterator[list[str]]:  # fmt: skip
    """While inside, every forward of `model` hands `sink` the chosen layers' outputs (name ->
    detached tensor) once the forward has finished, all at once: a forward that fails half-way
    hands nothing. The hooks are removed on exit, also on error. Yields the layer names."""
    layers = resolve_layers(model, spec)
    pick = select or first_tensor
    pending: dict[str, torch.Tensor] = {}

    def on_layer(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            try:
                pending[name] = pick(output).detach()
            except TypeError as error:
                raise TypeError(f"layer {name}: {error}") from None

        return hook

    def on_model(module: nn.Module, inputs: Any, output: Any) -> None:
        outputs = {name: pending[name] for name, _ in layers if name in pending}
        pending.clear()
        if outputs:
            sink(outputs)

    def before_model(module: nn.Module, inputs: Any) -> None:
        pending.clear()  # what an earlier forward that failed left behind

    handles = [module.register_forward_hook(on_layer(name)) for name, module in layers]
    handles += [model.register_forward_pre_hook(before_model), model.register_forward_hook(on_model)]
    try:
        yield [name for name, _ in layers]
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class LayerResult:
    """One layer's metrics: per pooling ("frame", "clip"), raw and centred ("<pooling>_centered")."""

    name: str
    dim: int
    metrics: dict[str, dict[str, float]]  # e.g. {"frame": {"rankme": ...}, "frame_centered": {...}, ...}


class LayerStates:
    """One centred float64 state per (layer, pooling); raw ZᵀZ comes from it (`uncentered`).
    Outputs of shape (..., T, D): frames are all rows, a clip is the mean over T of each
    leading index (a 2-D output (T, D) is one clip). Channel-first layers (conv: (B, C, T))
    need a `select` that moves C last."""

    def __init__(
        self, *, poolings: Sequence[str] = POOLINGS, precision: str = "exact", backend: str = "auto"
    ) -> None:
        unknown = [p for p in poolings if p not in POOLINGS]
        if unknown or not poolings:
            raise ValueError(f"poolings must be among {POOLINGS}, got {list(poolings)}")
        self.poolings, self.precision, self.backend = tuple(poolings), precision, backend
        self.states: dict[str, dict[str, GramAccumulator]] = {}  # layer -> pooling -> state

    def add(self, outputs: dict[str, torch.Tensor]) -> None:
        """Add one forward's outputs, every layer or none (a width that changed, a layer with
        no time axis, NaN or Inf: ValueError naming the layer, nothing added)."""
        rows = {}
        for name, output in outputs.items():
            if output.ndim < 2:
                raise ValueError(f"layer {name}: output of shape {tuple(output.shape)} has no (frames, D) axes")
            if not torch.isfinite(output).all():
                raise ValueError(f"layer {name}: its output holds NaN or Inf; nothing of this forward was added")
            known = self.states.get(name, {}).get(self.poolings[0])
            if known is not None and known.dim is not None and output.shape[-1] != known.dim:
                raise ValueError(f"layer {name}: output width {output.shape[-1]} but earlier outputs had "
                                 f"{known.dim}; the state is unchanged")  # fmt: skip
            rows[name] = output
        for name, output in rows.items():
            if name not in self.states:
                self.states[name] = {p: GramAccumulator(centered=True, precision=self.precision, backend=self.backend)
                                     for p in self.poolings}  # fmt: skip
            states = self.states[name]
            if "frame" in states:
                states["frame"].update(output)
            if "clip" in states:
                states["clip"].update(output.mean(dim=-2, dtype=torch.float64).reshape(-1, output.shape[-1]))

    def results(self, metrics: Sequence[str] = ("rankme",), eps: float = 1e-7) -> list[LayerResult]:
        """Each layer's metrics, its spectra in one batched eigensolve per width."""
        keys, accumulators = [], []
        for name, states in self.states.items():
            for pooling, state in states.items():
                if state.count < (2 if pooling == "clip" else 1):
                    continue  # one clip: no spectrum worth naming
                keys += [(name, pooling), (name, f"{pooling}_centered")]
                accumulators += [state.uncentered(), state]
        spectra: list[Spectrum] = spectra_many(accumulators) if accumulators else []
        found: dict[str, dict[str, dict[str, float]]] = {}
        for (name, label), spectrum in zip(keys, spectra, strict=True):
            wanted = [m for m in metrics if m != "nesum" or label.endswith("_centered")]
            found.setdefault(name, {})[label] = {m: spectrum.metric(m, eps) for m in wanted}
        return [LayerResult(name, int(self.states[name][self.poolings[0]].dim or 0), found.get(name, {}))
                for name in self.states]  # fmt: skip


class LayerRecorder:
    """RankMe of every chosen layer of `model` from the forward passes run while recording:

        with LayerRecorder(model, "encoder.layers.*") as recorder:
            for batch in loader:
                model(batch)
        for layer in recorder.results():
            print(layer.name, layer.metrics["frame"]["rankme"])

    Memory: D_l²·8 bytes per layer and pooling (plus the means), whatever the rows; no
    activation is kept. A TorchScript module (hooks do not run inside one) or a model that
    returns its layers' outputs: `add_outputs(outputs, names)` with those tensors instead.
    `select` picks the tensor from a layer's output (default: the output, or the first tensor
    of a tuple or list); `poolings` as for LayerStates.
    """

    def __init__(
        self, model: nn.Module | None = None, layers: LayerSpec = "all", *, select: Select | None = None,
        poolings: Sequence[str] = POOLINGS, precision: str = "exact", backend: str = "auto",
    ) -> None:  # fmt: skip
        self.model, self.spec, self.select = model, layers, select
        self.states = LayerStates(poolings=poolings, precision=precision, backend=backend)
        self.layers = [name for name, _ in resolve_layers(model, layers)] if model is not None else []
        self._context: Any = None

    def __enter__(self) -> LayerRecorder:
        if self.model is None:
            raise ValueError("this recorder has no model to hook: use add_outputs")
        self._context = capture_layers(self.model, self.spec, self.states.add, select=self.select)
        self.layers = self._context.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        context, self._context = self._context, None
        if context is not None:
            context.__exit__(*exc)

    def add_outputs(self, outputs: Sequence[torch.Tensor], names: Sequence[str] | None = None,
                    layers: LayerSpec = "all") -> None:  # fmt: skip
        """Record per-layer outputs a model returned (HF `hidden_states`, a TorchScript tuple):
        `names` default "0", "1", …; `layers` picks among them (indices, slices, patterns)."""
        tensors = list(outputs)
        labels = [str(i) for i in range(len(tensors))] if names is None else list(names)
        if len(labels) != len(tensors) or not all(isinstance(t, torch.Tensor) for t in tensors):
            raise TypeError("add_outputs takes a sequence of tensors (one per layer) and as many names")
        keep = choose(labels, layers, what="outputs")
        self.states.add({name: tensors[labels.index(name)].detach() for name in keep})

    def results(self, metrics: Sequence[str] = ("rankme",), eps: float = 1e-7) -> list[LayerResult]:
        return self.states.results(metrics, eps)

    def rankme(self, pooling: str = "frame") -> dict[str, float]:
        """RankMe of each layer (raw), for `pooling`."""
        return {r.name: r.metrics[pooling]["rankme"] for r in self.results() if pooling in r.metrics}
