"""The fused gather-and-score kernel: the batched path's per-episode accuracies for every
registered metric, the first-maximum tie rule, and an independent float64 reference."""

import pytest
import torch
from sklearn.metrics import pairwise_distances

from protobench.datasets.base import LabeledData
from protobench.datasets.digits import load_digits
from protobench.episodic import EpisodeSpec, make_episodes
from protobench.episodic.sampler import iter_episode_chunks
from protobench.errors import UserError
from protobench.evaluation import evaluate_episodes, evaluate_spec, fused
from protobench.geometry.metrics import list_metrics
from tests.conftest import make_features


def blobs(dim: int, dtype=torch.float32) -> LabeledData:
    """20 classes x 60 Gaussian blobs whose overlap grows like ``dim ** 0.25`` (the spread
    of squared distances), so accuracies stay well inside (0, 1) at every ``dim``."""
    g = torch.Generator().manual_seed(dim)
    means = torch.randn(20, dim, generator=g)
    labels = torch.arange(20).repeat_interleave(60)
    x = means[labels] + 0.8 * dim ** 0.25 * torch.randn(len(labels), dim, generator=g)
    x = x.to(dtype)
    return LabeledData(x, labels, tuple(f"c{i}" for i in range(20)), "blobs", "test")


def digits() -> LabeledData:
    d = load_digits("test", image_size=8)
    return LabeledData(d.x.flatten(1).float(), d.labels, d.class_names, "digits", "test")


@pytest.mark.parametrize("metric", list_metrics())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shots", [1, 5])
def test_equals_the_batched_path_for_every_metric(metric, dtype, shots):
    for data in (blobs(640, dtype), blobs(37, dtype)):
        eps = make_episodes(data, EpisodeSpec(5, shots, 15, 600, seed=shots))
        ref = evaluate_episodes(data.x, eps, metric=metric, kernel="torch")
        got = evaluate_episodes(data.x, eps, metric=metric, kernel="fused")
        assert 0.2 < ref.mean < 0.98  # decisions that can go wrong
        assert torch.equal(got.accuracies, ref.accuracies)
        assert got.mean == ref.mean and got.ci95 == ref.ci95


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
def test_equals_the_batched_path_on_digits(metric):
    data = digits()
    eps = make_episodes(data, EpisodeSpec(5, 1, 15, 800, seed=3))
    ref = evaluate_episodes(data.x, eps, metric=metric, kernel="torch")
    got = evaluate_episodes(data.x, eps, metric=metric)
    assert 0.5 < ref.mean < 0.99
    assert torch.equal(got.accuracies, ref.accuracies)


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
def test_float64_matches_a_scikit_learn_loop(metric):
    data = make_features(dim=24, spread=3.0)
    x = data.x.double()
    eps = make_episodes(data, EpisodeSpec(5, 3, 7, 120, seed=9))
    correct, near = fused.score_chunk(x, eps.indices, 3, metric)
    ref = []
    for ep in eps.indices:
        protos = torch.stack([x[row[:3]].mean(0) for row in ep]).numpy()
        hits = 0
        for label, row in enumerate(ep):
            d = pairwise_distances(x[row[3:]].numpy(), protos,
                                   metric="cosine" if metric == "cosine" else "sqeuclidean")
            hits += int((d.argmin(1) == label).sum())
        ref.append(hits)
    assert not near.any()  # float64 round-off is far below every margin here
    assert correct.tolist() == ref
    assert 20 < sum(ref) / len(ref) < 34  # of 35 queries: errors happen


def test_hand_case_counts_and_flags():
    # classes 0 and 1: prototypes (0, 0) and (4, 0); queries at x = 1 (class 0), 3 and 1.5
    # (class 1): hits 1 + 1, and a query exactly between them (x = 2) ties
    x = torch.tensor([[0., 0.], [4., 0.], [1., 0.], [3., 0.], [1.5, 0.], [2., 0.]])
    clear = torch.tensor([[[0, 2], [1, 3]]])  # 1 shot, 1 query per class
    mixed = torch.tensor([[[0, 2, 2], [1, 3, 4]]])  # class 1's second query is nearer 0
    tie = torch.tensor([[[0, 2], [1, 5]]])
    assert [t.tolist() for t in fused.score_chunk(x, clear, 1, "sqeuclidean")] == [[2], [False]]
    assert fused.score_chunk(x, mixed, 1, "sqeuclidean")[0].tolist() == [3]
    correct, near = fused.score_chunk(x, tie, 1, "sqeuclidean")
    assert near.tolist() == [True]  # a tie goes to the batched path ...
    assert correct.tolist() == [1]  # ... and the kernel alone takes the first maximum
    assert evaluate_episodes(x, tie, shots=1).accuracies.tolist() == [0.5]


def test_identical_prototypes_take_the_first_class_like_argmax():
    data = make_features(n_classes=6, per_class=20, dim=8, spread=2.0)
    x = data.x.clone()
    x[data.labels <= 1] = x[0].clone()  # classes 0 and 1: one and the same row, so equal prototypes
    eps = make_episodes(data, EpisodeSpec(6, 2, 5, 200, seed=1))  # every episode has both
    ref = evaluate_episodes(x, eps, kernel="torch")
    got = evaluate_episodes(x, eps)
    assert torch.equal(got.accuracies, ref.accuracies)
    assert fused.score_chunk(x, eps.indices, 2, "sqeuclidean")[1].all()
    assert ref.mean < 0.95  # the tied classes' queries: half of them go to the other one


def test_thread_count_and_chunking_do_not_change_results():
    data = blobs(64)
    eps = make_episodes(data, EpisodeSpec(5, 2, 10, 999, seed=4))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fused.score_chunk(data.x, eps.indices, 2, "sqeuclidean")
    finally:
        torch.set_num_threads(before)
    many = fused.score_chunk(data.x, eps.indices, 2, "sqeuclidean")
    parts = [fused.score_chunk(data.x, eps.indices[i:i + 100], 2, "sqeuclidean")[0]
             for i in range(0, 999, 100)]
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])
    assert torch.equal(torch.cat(parts), many[0])


def test_streaming_with_sampling_threads_equals_the_episode_list():
    data = blobs(32)
    spec = EpisodeSpec(5, 1, 15, 9000, seed=11)  # three sampler chunks
    one = [c for c, _ in iter_episode_chunks(data, spec)]
    three = [c for c, _ in iter_episode_chunks(data, spec, workers=3)]
    assert len(one) == 3 and all(torch.equal(a, b) for a, b in zip(one, three, strict=True))
    ref = evaluate_episodes(data.x, make_episodes(data, spec), kernel="torch")
    for workers in (1, 3):
        got = evaluate_spec(data.x, data, spec, workers=workers)
        assert torch.equal(got.accuracies, ref.accuracies)


def test_bad_kernel_choices_are_refused():
    data = make_features()
    eps = make_episodes(data, EpisodeSpec(5, 1, 5, 10))
    with pytest.raises(UserError, match="kernel='bogus'; choose one of auto, fused, torch"):
        evaluate_episodes(data.x, eps, kernel="bogus")
    with pytest.raises(UserError, match="fused kernel scores float32/float64 CPU"):
        evaluate_episodes(data.x.half(), eps, kernel="fused")
    half = evaluate_episodes(data.x.bfloat16(), eps)  # auto: the batched path
    assert half.n == 10


def test_supports_names_the_metrics_with_a_kernel():
    assert {m for m in list_metrics() if fused.fused_kind(m)} == set(list_metrics())
    assert fused.fused_kind("euclidean") == fused.fused_kind("geodesic") == "sq"
    assert fused.fused_kind("cosine") == "cos"


def test_torch_keeps_its_thread_count():
    data = make_features()
    eps = make_episodes(data, EpisodeSpec(5, 1, 5, 50))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        fused.score_chunk(data.x, eps.indices, 1, "sqeuclidean")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
