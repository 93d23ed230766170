"""Every layer in one pass: per-layer states equal scoring each layer alone (a Hugging Face
wav2vec2 built here from a config, a TorchScript module returning its layers, a module:callable
whose layers are hooked); layer specs; bad layers, outputs and widths name the layer and leave
the states untouched; hooks are removed on exit and on error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from common import tolerance
from layered_model import Stack, framed_stack
from torch import nn

import rankme_fast as rf
from rankme_fast.audio.encoders import encoder_from_spec
from rankme_fast.integrations.layers import LayerRecorder, choose, resolve_layers

EXACT = 1e-9
transformers = pytest.importorskip("transformers")


def _alone(output: torch.Tensor, *, clip: bool = False, centered: bool = False) -> float:
    rows = output.mean(dim=-2, dtype=torch.float64).reshape(-1, output.shape[-1]) if clip else output
    return rf.GramAccumulator(centered=centered).update(rows).rankme()


def _our_hooks(model: nn.Module) -> list:
    return [hook for module in model.modules() for hooks in (module._forward_hooks, module._forward_pre_hooks)
            for hook in hooks.values() if "capture_layers" in getattr(hook, "__qualname__", "")]  # fmt: skip


@pytest.fixture(scope="module")
def wav2vec2() -> nn.Module:
    config = transformers.Wav2Vec2Config(hidden_size=96, num_hidden_layers=4, num_attention_heads=4,
                                         intermediate_size=192, conv_dim=(32,) * 7)  # fmt: skip
    torch.manual_seed(0)
    return transformers.Wav2Vec2Model(config).eval()


def test_specs_pick_layers_by_stack_index_slice_and_pattern(wav2vec2):
    stack = [f"encoder.layers.{i}" for i in range(4)]
    assert [n for n, _ in resolve_layers(wav2vec2, "all")] == stack
    assert [n for n, _ in resolve_layers(wav2vec2, "-2:")] == stack[-2:]
    assert [n for n, _ in resolve_layers(wav2vec2, "0,3")] == [stack[0], stack[3]]
    assert [n for n, _ in resolve_layers(wav2vec2, "encoder.layers.*")] == stack  # * stops at dots
    assert [n for n, _ in resolve_layers(wav2vec2, ["feature_projection", 1])] == ["feature_projection", stack[1]]
    assert choose(["a.0", "a.1", "b"], "a.*,b,a.0") == ["a.0", "a.1", "b"]
    with pytest.raises(ValueError, match=r"'decoder\.\*' matches no layer of the Wav2Vec2Model"):
        resolve_layers(wav2vec2, "decoder.*")
    with pytest.raises(ValueError, match="index 9 is out of range: the stack has 4 layers"):
        resolve_layers(wav2vec2, 9)
    with pytest.raises(TypeError, match="TorchScript"):
        resolve_layers(torch.jit.script(Stack()), "all")


def test_hooked_layers_equal_each_layer_alone_and_hf_hidden_states(wav2vec2):
    waves = torch.randn(3, 16000, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        with LayerRecorder(wav2vec2, "all") as hooked:
            hidden = wav2vec2(waves, output_hidden_states=True).hidden_states
        outputs = LayerRecorder()
        outputs.add_outputs(hidden, [f"hidden_states.{i}" for i in range(len(hidden))], layers="1:")
    assert not _our_hooks(wav2vec2)  # removed on exit (transformers keeps hooks of its own)
    by_hook = {r.name: r for r in hooked.results()}
    by_output = {r.name: r for r in outputs.results()}
    for depth in range(4):
        alone = hidden[depth + 1]
        flat = alone.reshape(-1, 96).double().numpy()
        for result in (by_hook[f"encoder.layers.{depth}"], by_output[f"hidden_states.{depth + 1}"]):
            assert result.dim == 96
            for label, clip, centered in (("frame", False, False), ("frame_centered", False, True),
                                          ("clip", True, False), ("clip_centered", True, True)):  # fmt: skip
                rows = alone.mean(dim=-2, dtype=torch.float64).numpy() if clip else flat
                expected = _alone(alone, clip=clip, centered=centered)
                tol = tolerance(rows, "exact", centered)  # these hidden states are rank-deficient: 1e-5
                assert result.metrics[label]["rankme"] == pytest.approx(expected, rel=tol), (label, depth)


def test_torchscript_and_module_callable_encoders_equal_each_layer_alone(tmp_path, monkeypatch):
    """The TorchScript module returns its layers; the module:callable's layers are hooked."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    framed = framed_stack()
    scripted = tmp_path / "stack.pt"
    torch.jit.script(framed).save(str(scripted))
    waves = [np.random.default_rng(seed).standard_normal(800).astype(np.float32) for seed in range(3)]
    with torch.inference_mode():
        expected = [torch.cat([framed(torch.from_numpy(w)[None])[depth][0] for w in waves]) for depth in range(3)]
    script_encoder = encoder_from_spec(str(scripted), frame_rate=100.0)
    hooked_encoder = encoder_from_spec("layered_model:framed_stack", frame_rate=100.0)
    for encoder, names in ((script_encoder, ["output.0", "output.1", "output.2"]),
                           (hooked_encoder, ["stack.layers.0", "stack.layers.1", "stack.layers.2"])):  # fmt: skip
        assert encoder.layer_names("all") == names
        per_clip = [encoder.embed_layers(w, 16000, "all") for w in waves]
        for depth, name in enumerate(names):
            got = torch.cat([clip[name] for clip in per_clip])
            assert torch.allclose(got, expected[depth], rtol=1e-6, atol=1e-7)
            assert _alone(got) == pytest.approx(_alone(expected[depth]), rel=1e-6)


def test_bad_outputs_and_widths_name_the_layer_and_leave_the_states_untouched():
    stack = Stack()

    class Shrinking(nn.Module):  # the second layer's output narrows on the second call
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([nn.Identity(), nn.Identity()])
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return self.layers[1](self.layers[0](x) if self.calls == 1 else self.layers[0](x)[..., :4])

    x = torch.randn(2, 10, 8)
    model = Shrinking()
    with LayerRecorder(model, "all") as recorder:
        model(x)
        before = {r.name: r.metrics for r in recorder.results()}
        with pytest.raises(ValueError, match=r"layer layers\.1: output width 4 but earlier outputs had 8"):
            model(x)
    assert {r.name: r.metrics for r in recorder.results()} == before  # layers.0 was not added either
    assert not _our_hooks(model)

    class Mapping(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])

        def forward(self, x: torch.Tensor) -> dict:
            return {"out": self.layers[1](self.layers[0](x))}

    class DictLayer(nn.Module):
        def forward(self, x: torch.Tensor) -> dict:
            return {"hidden": x}

    mapping = Mapping()
    mapping.layers[1] = nn.Sequential(nn.Linear(8, 8), DictLayer())  # layers.1 returns a dict
    with pytest.raises(TypeError, match=r"layer layers\.1: the module returned a mapping; pass select="), \
            LayerRecorder(mapping, "all") as recorder:
        mapping(x)
    assert recorder.results() == [] and not _our_hooks(mapping)  # removed on error too
    with LayerRecorder(mapping, "all", select=lambda out: out["hidden"] if isinstance(out, dict) else out) as ok:
        mapping(x)
    assert [r.name for r in ok.results()] == ["layers.0", "layers.1"]
    nan = torch.full((2, 10, 8), float("nan"))
    with LayerRecorder(stack, "all") as recorder, pytest.raises(ValueError, match=r"layer layers\.0: .* NaN"):
        stack(nan)
    assert recorder.results() == []
