"""Feature extractors, registered by name.

``build_backbone(name, in_shape)`` returns an ``nn.Module`` mapping ``[B, *in_shape]``
to ``[B, D]`` and exposing ``out_dim``.

- ``conv4``: the ProtoNet encoder (4 x [conv3x3(64) -> BN -> ReLU -> maxpool2]),
  flattened; 28x28 -> 64-d, 84x84 -> 1600-d, 32x32 -> 256-d.
- ``mlp``: a two-layer MLP for tiny inputs (flatten -> 256 -> ReLU -> 128).
- ``identity``: flattened raw inputs (features files, pixel baselines).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from protobench.errors import unknown_name

Builder = Callable[..., nn.Module]
_BACKBONES: dict[str, Builder] = {}


def register_backbone(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        _BACKBONES[name] = fn
        return fn

    return deco


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def build_backbone(name: str, in_shape: tuple[int, ...], **kwargs: object) -> nn.Module:
    if name not in _BACKBONES:
        raise unknown_name("backbone", name, list(_BACKBONES))
    return _BACKBONES[name](tuple(in_shape), **kwargs)


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.MaxPool2d(2))


class Conv4(nn.Module):
    """Snell et al. (2017) encoder; PyTorch default init, as the official code."""

    def __init__(self, in_channels: int = 1, hidden: int = 64, out_channels: int = 64,
                 image_size: int = 28) -> None:
        super().__init__()
        self.encoder = nn.Sequential(conv_block(in_channels, hidden), conv_block(hidden, hidden),
                                     conv_block(hidden, hidden), conv_block(hidden, out_channels))
        side = image_size
        for _ in range(4):
            side //= 2
        if side < 1:
            raise ValueError(f"conv4 needs inputs of at least 16x16, got {image_size}")
        self.out_dim = out_channels * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).flatten(1)


@register_backbone("conv4")
def _conv4(in_shape: tuple[int, ...], hidden: int = 64) -> nn.Module:
    if len(in_shape) != 3:
        raise ValueError(f"conv4 needs image inputs [C, H, W], got {in_shape}")
    return Conv4(in_shape[0], hidden, hidden, in_shape[1])


class MLP(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 256, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, out_dim))
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_backbone("mlp")
def _mlp(in_shape: tuple[int, ...], hidden: int = 256, out_dim: int = 128) -> nn.Module:
    return MLP(math.prod(in_shape), hidden, out_dim)


class Identity(nn.Module):
    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


@register_backbone("identity")
def _identity(in_shape: tuple[int, ...]) -> nn.Module:
    return Identity(math.prod(in_shape))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def extract_features(
    backbone: nn.Module, get: Callable[[torch.Tensor], torch.Tensor], n: int,
    device: torch.device, batch_size: int = 512,
) -> torch.Tensor:
    """Features ``[n, D]`` of samples ``0..n-1`` (``get(idx)`` loads a batch), eval mode, CPU out."""
    was_training = backbone.training
    backbone.eval().to(device)
    out = []
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        out.append(backbone(get(idx).to(device)).float().cpu())
    backbone.train(was_training)
    return torch.cat(out) if out else torch.empty(0, getattr(backbone, "out_dim", 0))
