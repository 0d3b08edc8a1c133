"""Self-scored episode evaluation agrees with the batched nearest-mean path."""

from __future__ import annotations

import pytest
import torch

from protobench.episodic import EpisodeSpec, make_episodes
from protobench.errors import UserError
from protobench.evaluation import evaluate_episodes
from protobench.evaluation.scored import evaluate_scored
from protobench.geometry.metrics import get_metric
from tests.conftest import make_features


class NearestMean:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def score_episodes(self, support, query, classes, episode_ids):
        self.seen += episode_ids.tolist()
        return -get_metric("sqeuclidean")(query, support.mean(2))


@pytest.mark.parametrize("chunk", [1, 7, 500])
def test_scored_path_reproduces_the_batched_accuracies(chunk):
    data = make_features(spread=4.0)
    episodes = make_episodes(data, EpisodeSpec(5, 2, 3, 30, seed=1))
    scorer = NearestMean()
    scored = evaluate_scored(data.x, episodes, scorer, chunk=chunk)
    batched = evaluate_episodes(data.x, episodes)
    assert torch.equal(scored.accuracies, batched.accuracies)
    assert scored.mean == batched.mean and scored.ci95 == batched.ci95
    assert scorer.seen == list(range(30))  # every episode once, with its global id


def test_wrong_score_shape_is_an_error():
    data = make_features()
    episodes = make_episodes(data, EpisodeSpec(5, 1, 2, 3, seed=0))

    class Bad:
        def score_episodes(self, support, query, classes, episode_ids):
            return torch.zeros(1, 2)

    with pytest.raises(UserError, match="score_episodes returned"):
        evaluate_scored(data.x, episodes, Bad())
