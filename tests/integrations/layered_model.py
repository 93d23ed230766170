"""A small layered model for the layer tests, loadable as `layered_model:framed_stack` (a
module:callable encoder) with this folder on sys.path: (1, samples) audio as frames of 8
samples through three linear + tanh layers of widths 24, 24 and 16, returning every layer's output."""

from __future__ import annotations

import torch
from torch import nn


class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        widths = [(8, 24), (24, 24), (24, 16)]
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(a, b), nn.Tanh()) for a, b in widths])
        for layer in self.layers:
            nn.init.normal_(layer[0].weight, std=0.4, generator=generator)
            nn.init.normal_(layer[0].bias, std=0.1, generator=generator)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        first = self.layers[0](x)
        second = self.layers[1](first)
        return first, second, self.layers[2](second)


class FramedStack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stack = Stack()

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.stack(wave.reshape(1, -1, 8))


def framed_stack() -> FramedStack:
    return FramedStack().eval()
