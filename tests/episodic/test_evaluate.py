import math

import pytest
import torch
from sklearn.metrics import pairwise_distances

from protobench.episodic import EpisodeSpec, make_episodes
from protobench.errors import UserError
from protobench.evaluation import ci95, evaluate_episodes
from tests.conftest import make_features


def naive_accuracies(x, indices, shots, metric):
    """Reference: one episode at a time, distances from scikit-learn."""
    accs = []
    for ep in indices:
        protos = torch.stack([x[row[:shots]].mean(0) for row in ep]).double().numpy()
        correct = total = 0
        for label, row in enumerate(ep):
            q = x[row[shots:]].double().numpy()
            d = pairwise_distances(q, protos, metric="cosine" if metric == "cosine"
                                   else "sqeuclidean")
            correct += int((d.argmin(1) == label).sum())
            total += len(q)
        accs.append(correct / total)
    return torch.tensor(accs, dtype=torch.float64)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "cosine"])
def test_matches_naive_loop(metric):
    data = make_features(spread=3.0)  # overlapping classes: accuracies well below 1
    eps = make_episodes(data, EpisodeSpec(5, 2, 6, 150, seed=2))
    got = evaluate_episodes(data.x, eps, metric=metric)
    ref = naive_accuracies(data.x, eps.indices, 2, metric)
    assert 0.3 < got.mean < 0.99
    assert torch.allclose(got.accuracies, ref)
    batched = evaluate_episodes(data.x, eps, metric=metric, kernel="torch")
    assert torch.allclose(batched.accuracies, ref)


def test_chunking_does_not_change_results():
    data = make_features(spread=3.0)
    eps = make_episodes(data, EpisodeSpec(5, 1, 5, 300, seed=5))
    big = evaluate_episodes(data.x, eps, memory_budget=2**30, kernel="torch")
    tiny = evaluate_episodes(data.x, eps, memory_budget=1, kernel="torch")
    assert torch.equal(big.accuracies, tiny.accuracies)


def test_raw_index_tensor_needs_shots():
    data = make_features()
    eps = make_episodes(data, EpisodeSpec(5, 1, 5, 10))
    assert evaluate_episodes(data.x, eps.indices, shots=1).mean == evaluate_episodes(
        data.x, eps).mean
    with pytest.raises(UserError, match="shots"):
        evaluate_episodes(data.x, eps.indices)


def test_ci95_card_cases():
    mean, half = ci95([0.5, 0.7])
    assert mean == pytest.approx(0.6, abs=1e-12) and half == pytest.approx(0.196, abs=1e-12)
    assert ci95([0.5, 0.7], ddof=0)[1] == pytest.approx(0.1386, abs=1e-4)
    assert math.isnan(ci95([0.5])[1])


def test_per_episode_mean_equals_pooled_when_queries_constant():
    data = make_features(spread=3.0)
    eps = make_episodes(data, EpisodeSpec(4, 1, 5, 100, seed=1))
    res = evaluate_episodes(data.x, eps)
    pooled = (res.accuracies * 20).sum() / (20 * 100)
    assert res.mean == pytest.approx(pooled.item(), abs=1e-12)


def test_nan_features_are_refused():
    data = make_features()
    x = data.x.clone()
    x[3, 0] = float("nan")
    eps = make_episodes(data, EpisodeSpec(5, 1, 5, 10))
    with pytest.raises(UserError, match="NaN or inf in 1 row.*\\[3\\]"):
        evaluate_episodes(x, eps)


def test_streaming_evaluation_matches_the_episode_list(monkeypatch):
    from protobench.episodic import make_episodes
    from protobench.episodic import sampler as sampler_mod
    from protobench.evaluation import evaluate_spec

    monkeypatch.setattr(sampler_mod, "CHUNK", 100)  # several sampler chunks
    data = make_features(n_classes=8, per_class=25, dim=16, seed=2)
    spec = EpisodeSpec(5, 2, 6, 350, seed=4)
    full = evaluate_episodes(data.x, make_episodes(data, spec), metric="cosine")
    streamed = evaluate_spec(data.x, data, spec, metric="cosine", memory_budget=4096)
    assert torch.equal(full.accuracies, streamed.accuracies)
    assert streamed.n == 350 and streamed.mean == full.mean
