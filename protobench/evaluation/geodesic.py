"""Episode evaluation under the geodesic metric (:mod:`protobench.geometry.geodesic`).

A pointwise head (``geo_pool``) embeds the features once and reuses the batched euclidean
evaluator; otherwise (``geo_trans``, ``geo_class``) chunks of episodes are scored by the head
as a strategy of their support prototypes (``Prototypes.from_support(s).scores(q,
"geodesic", head=head)``, batched eigendecompositions). Scores are checked finite before
any argmax.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from protobench.episodic.sampler import episode_labels
from protobench.evaluation.episodes import EpisodeResult, ci95, evaluate_episodes
from protobench.geometry.diffusion import check_finite
from protobench.geometry.geodesic import GeodesicHead
from protobench.geometry.prototypes import Prototypes


def evaluate_geodesic(head: GeodesicHead, features: torch.Tensor, episodes: Any,
                      device: torch.device | str | None = None, chunk: int = 256) -> Any:
    """Accuracy of every episode of an EpisodeList under ``head`` (an EpisodeResult).

    geo_pool embeds ``features`` once and calls the batched euclidean evaluator; the
    per-episode modes score ``chunk`` episodes at a time (batched eigendecompositions).
    """
    device = torch.device(device) if device is not None else features.device
    features = features.to(device)
    if head.pointwise:
        return evaluate_episodes(head.embed(features, episodes.ways), episodes,
                                 metric="sqeuclidean", device=device)
    idx_all, K = episodes.indices.to(device), episodes.shots
    E, N, S = idx_all.shape
    labels = episode_labels(N, S - K, device)
    chunk = max(1, min(chunk, 2**27 // head.episode_bytes(N, S, features.shape[1])))
    accs: list[torch.Tensor] = []
    for idx in _chunks(idx_all, chunk):
        support = features[idx[:, :, :K]]  # [e, N, K, D]
        query = features[idx[:, :, K:].reshape(len(idx), -1)]  # [e, N*Q, D]
        scores = Prototypes.from_support(support).scores(query, "geodesic", head=head)
        check_finite(scores, "geodesic episode scores")
        accs.append((scores.argmax(-1) == labels).double().mean(-1).cpu())
    acc = torch.cat(accs)
    mean, half = ci95(acc)
    return EpisodeResult(acc, mean, half)


def _chunks(x: torch.Tensor, size: int) -> Iterable[torch.Tensor]:
    return (x[i:i + size] for i in range(0, len(x), size))
