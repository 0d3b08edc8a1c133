"""Episode evaluation for methods that score an episode themselves.

Most few-shot methods are a prototype rule under a metric and use the batched path of
``evaluate.py``. A method that needs more per episode (the class ids, e.g. for text
prototypes, or fine-tuning on the support set, as Proto-CLIP does) implements
``score_episodes(support [e, N, K, D], query [e, N*Q, D], classes [e, N],
episode_ids [e]) -> [e, N*Q, N]`` (higher = more likely; argmax decides) and is evaluated
here, ``chunk`` episodes at a time, on the same episode lists and with the same accuracy
and CI as the batched path.
"""

from __future__ import annotations

from typing import Protocol

import torch

from protobench.episodic.manifest import EpisodeList
from protobench.episodic.sampler import episode_labels
from protobench.errors import UserError
from protobench.evaluation.episodes import EpisodeResult, check_features, ci95
from protobench.progress import training_bar


class EpisodeScorer(Protocol):
    def score_episodes(self, support: torch.Tensor, query: torch.Tensor, classes: torch.Tensor,
                       episode_ids: torch.Tensor) -> torch.Tensor: ...


def evaluate_scored(features: torch.Tensor, episodes: EpisodeList, scorer: EpisodeScorer,
                    chunk: int = 256, device: torch.device | str | None = None,
                    progress: bool = False) -> EpisodeResult:
    """Accuracy of every episode of ``episodes`` under ``scorer`` (features ``[n, D]``)."""
    check_features(features)
    device = torch.device(device) if device is not None else features.device
    features = features.to(device)
    E, N, K, Q = episodes.episodes, episodes.ways, episodes.shots, episodes.queries
    if E == 0:
        raise UserError("no episodes to evaluate")
    labels = episode_labels(N, Q, device)
    accs = torch.empty(E, dtype=torch.float64)
    chunk = max(1, int(chunk))
    with training_bar((E + chunk - 1) // chunk, f"scoring {E} episodes", progress) as advance, \
            torch.no_grad():
        for start in range(0, E, chunk):
            idx = episodes.indices[start:start + chunk].to(device)
            e = idx.shape[0]
            support = features[idx[:, :, :K].reshape(-1)].view(e, N, K, -1)
            query = features[idx[:, :, K:].reshape(-1)].view(e, N * Q, -1)
            scores = scorer.score_episodes(support, query,
                                           episodes.classes[start:start + e].to(device),
                                           torch.arange(start, start + e))
            if scores.shape != (e, N * Q, N):
                raise UserError(f"score_episodes returned {list(scores.shape)}, expected "
                                f"{[e, N * Q, N]}")
            accs[start:start + e] = (scores.argmax(-1) == labels).double().mean(-1).cpu()
            advance()
    mean, half = ci95(accs)
    return EpisodeResult(accs, mean, half)
