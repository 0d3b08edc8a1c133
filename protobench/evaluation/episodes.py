"""Batched evaluation of frozen-feature episodes, and confidence intervals.

``evaluate_episodes(features, episodes)`` scores all ``E`` episodes with a few
tensor ops per chunk of episodes (no Python loop per episode): gather supports
``[e, N, K, D]`` -> :meth:`Prototypes.from_support <protobench.geometry.Prototypes.from_support>`
``[e, N, 1, D]``, gather queries ``[e, N*Q, D]``, ``scores`` in matmul form ``[e, N*Q, N]``,
argmax, per-episode accuracy.
Chunks are sized so the gathered tensors stay under ``memory_budget`` bytes:
cache-sized on CPU (the gather then stays in cache for the matmul; measured
~3x faster than large chunks), large on CUDA. Decisions use the metric's
ranking form (``2 q.p - ||p||^2`` for squared euclidean), which has the same
argmax as ``-distance`` without the per-query constant.

``evaluate_spec(features, data, spec)`` streams: it samples and scores one
sampler chunk at a time, so peak memory beyond the features is flat in ``E``
(the full ``[E, N, K+Q]`` index tensor is never built); on CUDA, threads sample
chunks ahead while the GPU scores.

On CPU, float32/float64 features under a metric with a matmul ranking form
(``sqeuclidean``, ``euclidean``, ``geodesic``, ``cosine``) are scored by the fused
kernel of :mod:`protobench.evaluation.fused` (no gathered blocks; episodes with a
decision within round-off of a tie are re-scored here, so the accuracies are this
path's); ``kernel="torch"`` forces the batched path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from protobench.datasets.base import LabeledData
from protobench.episodic.manifest import EpisodeList
from protobench.episodic.sampler import EpisodeSpec, episode_labels, iter_episode_chunks
from protobench.errors import UserError
from protobench.geometry.metrics import get_metric
from protobench.geometry.prototypes import Prototypes

CPU_BUDGET = 16 * 2**20  # bytes of gathered features per chunk
CUDA_BUDGET = 1024 * 2**20


@dataclass(frozen=True)
class EpisodeResult:
    """Per-episode accuracies ``[E]`` with their mean and 95% CI half-width."""

    accuracies: torch.Tensor
    mean: float
    ci95: float

    @property
    def n(self) -> int:
        return len(self.accuracies)


def ci95(values: torch.Tensor | list[float], ddof: int = 1, z: float = 1.96) -> tuple[float, float]:
    """Mean and half-width ``z * std(ddof) / sqrt(n)``; the half-width is NaN when n <= ddof."""
    v = torch.as_tensor(values, dtype=torch.float64)
    n = v.numel()
    if n == 0:
        raise UserError("no values to average")
    mean = v.mean().item()
    if n <= ddof:
        return mean, math.nan
    std = v.std(correction=ddof).item()
    return mean, z * std / math.sqrt(n)


def check_features(features: torch.Tensor) -> None:
    if features.dim() != 2:
        raise UserError(f"features must be [n, D], got shape {list(features.shape)}")
    if features.numel() and bool(torch.isfinite(torch.stack(torch.aminmax(features))).all()):
        return  # one pass, no [n, D] mask (min and max propagate NaN; inf is their value)
    bad = ~torch.isfinite(features).all(dim=1)
    if bad.any():
        rows = torch.nonzero(bad).squeeze(1)
        raise UserError(
            f"features contain NaN or inf in {len(rows)} row(s) (first: {rows[:5].tolist()}); "
            "check the backbone or the feature file"
        )


def episode_logits(
    support: torch.Tensor, query: torch.Tensor, metric: str = "sqeuclidean"
) -> torch.Tensor:
    """``support [e, N, K, D]``, ``query [e, M, D]`` -> logits ``[e, M, N]`` = -distance to means."""
    return Prototypes.from_support(support).scores(query, metric)


KERNELS = ("auto", "fused", "torch")


def evaluate_episodes(
    features: torch.Tensor,
    episodes: EpisodeList | torch.Tensor,
    shots: int | None = None,
    metric: str = "sqeuclidean",
    memory_budget: int | None = None,
    device: torch.device | str | None = None,
    kernel: str = "auto",
) -> EpisodeResult:
    """Nearest-prototype accuracy of every episode.

    features: ``[n, D]`` (indexed by the episodes' sample ids); episodes: an EpisodeList or
    an ``[E, N, K+Q]`` index tensor with ``shots`` given. Runs on ``device`` (default: the
    features' device). ``kernel``: ``fused`` (:mod:`protobench.evaluation.fused`: CPU,
    float32/64, metrics with a matmul ranking form), ``torch`` (the batched gather path,
    every metric and device) or ``auto`` (fused where it applies); both give the same
    per-episode accuracies.
    """
    if isinstance(episodes, EpisodeList):
        indices, shots = episodes.indices, episodes.shots
    else:
        indices = episodes
        if shots is None:
            raise UserError("pass shots= with a raw index tensor")
    scorer = _Scorer(features, shots, metric, memory_budget, device, kernel)
    return scorer.run([indices], len(indices))


def evaluate_spec(
    features: torch.Tensor,
    data: LabeledData,
    spec: EpisodeSpec,
    metric: str = "sqeuclidean",
    memory_budget: int | None = None,
    device: torch.device | str | None = None,
    kernel: str = "auto",
    workers: int | None = None,
) -> EpisodeResult:
    """Sample and score the episodes of ``spec`` on ``data`` chunk by chunk (streaming).

    Same episodes and accuracies as ``evaluate_episodes(features, make_episodes(data, spec))``
    but the ``[E, N, K+Q]`` index tensor is never held whole: memory beyond ``features`` is
    a few sampler chunks plus ``E`` accuracies, flat in ``E``. Use it for very large ``E``;
    use :func:`make_episodes` when the episode list (manifest, hash) is needed.
    ``workers``: threads sampling chunks ahead of the scorer (default: 1 on CPU, where the
    scorer already uses every core; up to 8 on CUDA, where the CPU would otherwise idle
    while the GPU scores). Each chunk has its own generator, so the episodes do not
    depend on it.
    """
    scorer = _Scorer(features, spec.shots, metric, memory_budget, device, kernel)
    if workers is None:
        workers = 1 if scorer.device.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) - 1))
    chunks = (idx for idx, _ in iter_episode_chunks(data, spec, workers=workers))
    return scorer.run(chunks, spec.episodes)


class _Scorer:
    """Scores index chunks into one ``[E]`` accuracy tensor: fused where it applies, the
    batched gather path otherwise and for the fused kernel's near-tie episodes."""

    def __init__(self, features: torch.Tensor, shots: int, metric: str,
                 memory_budget: int | None, device: torch.device | str | None,
                 kernel: str) -> None:
        check_features(features)
        get_metric(metric)  # unknown names fail before any work
        if kernel not in KERNELS:
            raise UserError(f"kernel={kernel!r}; choose one of {', '.join(KERNELS)}")
        self.device = torch.device(device) if device is not None else features.device
        self.features = features.to(self.device)
        self.shots, self.metric = shots, metric
        self.budget = memory_budget if memory_budget is not None else (
            CUDA_BUDGET if self.device.type == "cuda" else CPU_BUDGET)
        self.fused = None
        if kernel != "torch":
            from protobench.evaluation import fused  # numba loads only when it is used

            if fused.supports(self.features, metric):
                self.fused = fused
            elif kernel == "fused":
                raise UserError(
                    f"the fused kernel scores float32/float64 CPU features under "
                    f"{', '.join(fused.KINDS.values())} (and metrics sharing their ranking "
                    f"form); got {self.features.dtype} on {self.device} with {metric!r}: "
                    "use kernel='torch' or 'auto'")
        self.labels: torch.Tensor | None = None
        # gathers land in one buffer pair reused across chunks (views of it for shorter
        # chunks): no allocator churn, flat memory
        self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def run(self, index_chunks: Iterable[torch.Tensor], total: int) -> EpisodeResult:
        # one output for all episodes, allocated up front: no small long-lived blocks pinning
        # the heap between the per-chunk temporaries (which made RSS creep up with E)
        accs = torch.empty(total, dtype=torch.float64, device=self.device)
        done = 0
        for indices in index_chunks:
            E = len(indices)
            if done + E > total:
                raise UserError(f"expected {total} episodes, got more")
            self.score(indices, accs[done:done + E])
            done += E
        if total == 0:
            raise UserError("no episodes to evaluate")
        if done != total:
            raise UserError(f"expected {total} episodes, scored {done}")
        accs = accs.cpu()
        mean, half = ci95(accs)
        return EpisodeResult(accs, mean, half)

    def score(self, indices: torch.Tensor, out: torch.Tensor) -> None:
        """Accuracies of the episodes ``indices [E, N, S]`` into ``out [E]``."""
        if self.fused is None:
            return self.batched(indices.to(self.device, non_blocking=True), out)
        E, N, S = indices.shape
        correct, near = self.fused.score_chunk(self.features, indices, self.shots, self.metric)
        out.copy_(correct.double() / (N * (S - self.shots)))  # = the batched path's mean
        if near.any():  # decisions within round-off of a tie: the batched path decides them
            rows = torch.nonzero(near).squeeze(1)
            redo = torch.empty(len(rows), dtype=torch.float64)
            self.batched(indices[rows], redo)
            out[rows] = redo

    def batched(self, indices: torch.Tensor, out: torch.Tensor) -> None:
        """The gather path: supports and queries gathered ``chunk`` episodes at a time."""
        features, shots, D = self.features, self.shots, self.features.shape[1]
        E, N, S = indices.shape
        Q = S - shots
        if self.labels is None or self.labels.numel() != N * Q:
            self.labels = episode_labels(N, Q, self.device)
        chunk = min(E, max(1, self.budget // (N * S * D * features.element_size())))
        if self.buffers is None or any(len(b) < chunk * N * n
                                       for b, n in zip(self.buffers, (shots, Q), strict=True)):
            self.buffers = (features.new_empty(chunk * N * shots, D),
                            features.new_empty(chunk * N * Q, D))
        for start in range(0, E, chunk):
            idx = indices[start:start + chunk]
            e = idx.shape[0]
            sbuf, qbuf = self.buffers[0][:e * N * shots], self.buffers[1][:e * N * Q]
            support = torch.index_select(features, 0, idx[:, :, :shots].reshape(-1), out=sbuf)
            query = torch.index_select(features, 0, idx[:, :, shots:].reshape(-1), out=qbuf)
            protos = Prototypes.from_support(support.view(e, N, shots, D))
            scores = protos.scores(query.view(e, N * Q, D), self.metric, ranking=True)
            out[start:start + e] = (scores.argmax(-1) == self.labels).double().mean(-1)
