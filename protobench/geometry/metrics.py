"""Distances between query and prototype batches, in matmul form.

A metric maps ``q [..., M, D]`` and ``p [..., C, D]`` to distances ``[..., M, C]``
(smaller = nearer); logits are ``-distance``. Matmul form
``||q||^2 - 2 q.p + ||p||^2`` never materialises the ``[M, C, D]`` difference
tensor. Metrics are registered by name so that every method, the evaluator
and the prototype index accept the same names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from protobench.registry import Registry

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_RANKERS: dict[str, Metric] = {}  # fast argmax forms of registered metrics, by name
METRICS: Registry[Metric] = Registry(
    "metric", describer=lambda name, fn: {"parameters": [], "fast_ranker": name in _RANKERS})
"""Every registered distance by name (``protobench list metrics``); a distance takes no
options, so ``describe`` lists no parameters."""


def register_metric(name: str, ranker: Metric | None = None) -> Callable[[Metric], Metric]:
    """Register a distance (once). ``ranker`` (optional) returns scores whose per-row argmax
    equals the distance's argmin but skips terms constant per query (e.g. ``||q||^2``)."""

    def deco(fn: Metric) -> Metric:
        METRICS.register(name, fn)
        if ranker is not None:
            _RANKERS[name] = ranker
        return fn

    return deco


def get_ranker(name: str) -> Metric:
    """Scores for ``argmax`` nearest-prototype decisions (``-distance`` when no fast form)."""
    if name in _RANKERS:
        return _RANKERS[name]
    metric = get_metric(name)
    return lambda q, p: -metric(q, p)


def _rank_sq(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``2 q.p - ||p||^2`` = ``||q||^2 - ||q - p||^2``: same argmax as ``-||q - p||^2``."""
    pp = p.pow(2).sum(-1).unsqueeze(-2)
    if q.dim() == 3:
        return torch.baddbmm(-pp, q, p.transpose(-1, -2), alpha=2.0)
    return 2.0 * q @ p.transpose(-1, -2) - pp


def _rank_cos(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``q . p/||p||``: same argmax as ``cos(q, p)`` (``||q||`` is constant per query)."""
    return q @ F.normalize(p, dim=-1, eps=1e-8).transpose(-1, -2)


def get_metric(name: str) -> Metric:
    """The distance registered as ``name``; unknown names list the valid ones."""
    return METRICS.get(name)


def list_metrics() -> list[str]:
    """Registered distance names, sorted."""
    return METRICS.names()


@register_metric("sqeuclidean", ranker=_rank_sq)
def sqeuclidean(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``||q_i - p_c||^2``; clamped at 0 against round-off."""
    qq = q.pow(2).sum(-1, keepdim=True)
    return (qq - _rank_sq(q, p)).clamp_min_(0)


@register_metric("euclidean", ranker=_rank_sq)
def euclidean(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``||q_i - p_c||`` (plain L2, easyfsl's choice); same ranking as squared."""
    return sqeuclidean(q, p).sqrt_()


@register_metric("cosine", ranker=_rank_cos)
def cosine(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``1 - cos(q_i, p_c)``, both sides L2-normalised (eps 1e-8)."""
    qn = F.normalize(q, dim=-1, eps=1e-8)
    pn = F.normalize(p, dim=-1, eps=1e-8)
    return 1.0 - qn @ pn.transpose(-1, -2)


@register_metric("geodesic", ranker=_rank_sq)
def geodesic(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Squared diffusion distance between DIFFUSION COORDINATES (GeoProto-style): the
    inputs are ``nystrom(x, map, m)`` rows (:mod:`protobench.geometry.diffusion`), on which
    the diffusion distance is the squared euclidean one. Methods with ``metric="geodesic"``
    embed their features first (:class:`protobench.geometry.geodesic.GeodesicHead`)."""
    return sqeuclidean(q, p)
