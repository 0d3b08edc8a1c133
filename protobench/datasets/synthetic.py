"""Synthetic manifolds on which geodesic distances must beat euclidean ones.

The generators of ``shared/methods/geoproto.md`` section 7 (float64, seeded through a
``torch.Generator``), used by the geodesic tests and ``benchmarks/geodesic.py``.
"""

from __future__ import annotations

import math

import torch

from protobench.datasets.base import LabeledData


def two_spirals(n: int, g: torch.Generator, noise: float = 0.2
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved spirals: ``theta = 0.5 + 3 pi sqrt(u)``; class ``c`` point =
    ``theta (cos(theta + c pi), sin(theta + c pi)) + N(0, noise^2 I)``. Returns ``x [n, 2]``,
    ``y [n]`` (class drawn uniformly)."""
    u = torch.rand(n, generator=g, dtype=torch.float64)
    y = torch.randint(2, (n,), generator=g)
    theta = 0.5 + 3 * math.pi * u.sqrt()
    angle = theta + y * math.pi
    x = torch.stack([theta * angle.cos(), theta * angle.sin()], 1)
    return x + noise * torch.randn(n, 2, generator=g, dtype=torch.float64), y


def swiss_roll(n: int, g: torch.Generator, noise: float = 0.1, classes: int = 4
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Swiss roll ``(th cos th, h, th sin th) + N(0, noise^2 I)``, ``th = 1.5 pi (1 + 2u)``,
    ``h ~ U(0, 10)``; classes = quantiles of ``th`` (4 by default). ``x [n, 3]``, ``y [n]``."""
    u = torch.rand(n, generator=g, dtype=torch.float64)
    th = 1.5 * math.pi * (1 + 2 * u)
    h = 10 * torch.rand(n, generator=g, dtype=torch.float64)
    x = torch.stack([th * th.cos(), h, th * th.sin()], 1)
    y = (u * classes).long().clamp_max(classes - 1)
    return x + noise * torch.randn(n, 3, generator=g, dtype=torch.float64), y


def as_data(x: torch.Tensor, y: torch.Tensor, name: str) -> LabeledData:
    """Wrap ``x [n, D]``, ``y [n]`` as a feature dataset (for the episode sampler)."""
    classes = int(y.max()) + 1
    return LabeledData(x.float(), y.long(), tuple(f"c{i}" for i in range(classes)), name,
                       "test")
