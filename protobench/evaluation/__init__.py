"""Evaluation on episodes: nearest-prototype accuracy, self-scoring methods, geodesic."""

from protobench.evaluation.episodes import (
    EpisodeResult,
    check_features,
    ci95,
    episode_logits,
    evaluate_episodes,
    evaluate_spec,
)
from protobench.evaluation.geodesic import evaluate_geodesic
from protobench.evaluation.scored import evaluate_scored

__all__ = ["EpisodeResult", "check_features", "ci95", "episode_logits", "evaluate_episodes",
           "evaluate_geodesic", "evaluate_scored", "evaluate_spec"]
