"""`Prototypes`: statistics, scores and the index cache against independent references
(numpy, scipy, per-episode Python loops) and the previous implementation's outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from protobench.datasets.synthetic import as_data, swiss_roll
from protobench.episodic import EpisodeSpec, make_episodes
from protobench.errors import UserError
from protobench.evaluation import evaluate_geodesic
from protobench.geometry import prototypes as protos_mod
from protobench.geometry.diffusion import distance_scale
from protobench.geometry.geodesic import GeodesicHead, fit, pool_logits, resolve_m
from protobench.geometry.index import PrototypeIndex
from protobench.geometry.prototypes import Prototypes


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _blobs(n: int = 120, c: int = 4, d: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(c, (n,), generator=g)
    y[:c] = torch.arange(c)  # every class present
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + 3 * torch.randn(
        c, d, generator=g, dtype=torch.float64)[y]
    return x, y


def test_means_and_covariances_match_numpy():
    x, y = _blobs()
    xn, yn = x.numpy(), y.numpy()
    means = np.stack([xn[yn == c].mean(0) for c in range(4)])
    shared = Prototypes.from_features(x, y, cov="shared")
    assert shared.vectors.shape == (4, 1, 5) and shared.counts[:, 0].tolist() == \
        np.bincount(yn).tolist()
    np.testing.assert_allclose(shared.centres.numpy(), means, rtol=1e-12, atol=1e-12)
    pooled = sum(np.cov(xn[yn == c].T, bias=True) * (yn == c).sum() for c in range(4)) / len(xn)
    np.testing.assert_allclose(shared.cov.numpy(), pooled, rtol=1e-10, atol=1e-12)
    per = Prototypes.from_features(x, y, cov="class")
    for c in range(4):
        np.testing.assert_allclose(per.cov[c].numpy(), np.cov(xn[yn == c].T, bias=True),
                                   rtol=1e-10, atol=1e-12)
    f32 = Prototypes.from_features(x.float(), y)
    assert f32.vectors.dtype == torch.float32  # float64 sums, stored in the features' dtype
    np.testing.assert_allclose(f32.centres.numpy(), means.astype(np.float32), rtol=1e-6)


@pytest.mark.parametrize("cov", [None, "shared", "class"])
def test_merging_halves_and_chunked_updates_equal_the_whole(cov):
    x, y = _blobs(200)
    whole = Prototypes.from_features(x, y, cov=cov)
    a = Prototypes.from_features(x[:70], y[:70], labels=4, cov=cov)
    b = Prototypes.from_features(x[70:], y[70:], labels=4, cov=cov)
    v0 = a.version
    merged = a.merge(b)
    assert merged is a and a.version > v0
    chunked = Prototypes.empty(4, 5, cov=cov, dtype=torch.float64)
    for s in range(0, 200, 33):
        chunked.update(x[s:s + 33], y[s:s + 33])
    for p in (merged, chunked):
        assert torch.equal(p.counts, whole.counts)
        torch.testing.assert_close(p.vectors, whole.vectors, rtol=1e-12, atol=1e-12)
        if cov is None:
            assert p.cov is None
        else:
            torch.testing.assert_close(p.cov, whole.cov, rtol=1e-10, atol=1e-12)


def test_merge_refuses_other_classes_and_other_covariances():
    x, y = _blobs()
    with pytest.raises(UserError, match="same labels"):
        Prototypes.from_features(x, y).merge(Prototypes.from_features(x, y, labels=5))
    with pytest.raises(UserError, match="covariance"):
        Prototypes.from_features(x, y, cov="shared").merge(Prototypes.from_features(x, y))
    with pytest.raises(UserError, match="outside"):
        Prototypes.from_features(x, y, labels=torch.tensor([0, 1, 2])).update(x, y)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "cosine"])
def test_scores_match_scipy_cdist(metric):
    x, y = _blobs()
    q = torch.randn(9, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    p = Prototypes.from_features(x, y)
    ref = cdist(q.numpy(), p.centres.numpy(), metric)  # cosine: 1 - cos
    np.testing.assert_allclose(p.scores(q, metric).numpy(), -ref, rtol=1e-9, atol=1e-9)
    # ranking form: same argmax; the index path: the same scores in float32
    assert torch.equal(p.scores(q, metric, ranking=True).argmax(1), torch.tensor(ref.argmin(1)))
    np.testing.assert_allclose(p.scores(q, metric, backend="torch").numpy(), -ref, atol=1e-4)
    assert p.predict(q, metric).tolist() == ref.argmin(1).tolist()


@pytest.mark.parametrize("cov", ["shared", "class"])
def test_mahalanobis_scores_match_scipy(cov):
    x, y = _blobs()
    q = torch.randn(7, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    p = Prototypes.from_features(x, y, cov=cov)
    ref = np.stack([cdist(q.numpy(), p.centres[c:c + 1].numpy(), "mahalanobis",
                          VI=np.linalg.inv((p.cov if cov == "shared" else p.cov[c]).numpy()))[:, 0]
                    for c in range(4)], 1) ** 2
    np.testing.assert_allclose(p.scores(q, "mahalanobis").numpy(), -ref, rtol=1e-8, atol=1e-8)
    assert p.predict(q, "mahalanobis").tolist() == ref.argmin(1).tolist()
    with pytest.raises(UserError, match="covariance"):
        Prototypes.from_features(x, y).scores(q, "mahalanobis")


@pytest.mark.parametrize("normalise", [False, True])
def test_from_support_matches_a_per_episode_loop(normalise):
    g = torch.Generator().manual_seed(1)
    support, query = torch.randn(3, 4, 2, 6, generator=g), torch.randn(3, 5, 6, generator=g)
    p = Prototypes.from_support(support, normalise=normalise)
    assert p.vectors.shape == (3, 4, 1, 6) and p.counts.eq(2).all()
    assert p.labels.tolist() == [0, 1, 2, 3] and p.support is support
    for e in range(3):
        s = support[e].numpy().astype(np.float64)
        if normalise:
            s = s / np.linalg.norm(s, axis=-1, keepdims=True)
        means = s.mean(1)
        if normalise:
            means = means / np.linalg.norm(means, axis=-1, keepdims=True)
        np.testing.assert_allclose(p.centres[e].numpy(), means, rtol=1e-5, atol=1e-6)
        ref = cdist(query[e].numpy().astype(np.float64), means, "sqeuclidean")
        np.testing.assert_allclose(p.scores(query, "sqeuclidean")[e].numpy(), -ref,
                                   rtol=1e-4, atol=1e-4)
        assert p.predict(query, "sqeuclidean")[e].tolist() == ref.argmin(1).tolist()


def test_several_prototypes_per_class_reduce_by_max():
    g = torch.Generator().manual_seed(2)
    vectors, q = torch.randn(3, 4, 6, generator=g), torch.randn(10, 6, generator=g)
    p = Prototypes.from_vectors(vectors, labels=torch.tensor([7, 2, 5]))
    for metric in ("sqeuclidean", "cosine"):
        s = p.scores(q, metric)
        via_index = p.scores(q, metric, backend="torch")
        for i in range(10):
            for c in range(3):
                ref = max(-cdist(q[i:i + 1].numpy(), vectors[c, m:m + 1].numpy(), metric)[0, 0]
                          for m in range(4))
                assert s[i, c].item() == pytest.approx(ref, abs=1e-4)
                assert via_index[i, c].item() == pytest.approx(ref, abs=1e-4)
        best = [[7, 2, 5][int(np.argmax(row))] for row in s.numpy()]
        assert p.predict(q, metric).tolist() == best


def test_kmeans_prototypes_are_a_lloyd_fixed_point_with_their_counts():
    x, y = _blobs(300, c=3)
    p = Prototypes.from_features(x, y, per_class=3, iters=50)
    assert p.vectors.shape == (3, 3, 5) and p.counts.sum(1).tolist() == \
        torch.bincount(y).tolist()
    xn, yn = x.numpy(), y.numpy()
    for c in range(3):
        rows = xn[yn == c]
        nearest = cdist(rows, p.vectors[c].numpy(), "sqeuclidean").argmin(1)
        for m in range(3):
            assert (nearest == m).sum() == p.counts[c, m]
            if (nearest == m).any():
                np.testing.assert_allclose(p.vectors[c, m].numpy(), rows[nearest == m].mean(0),
                                           rtol=1e-10)
    # a class with fewer rows than slots: the spare slots keep a drawn row, never zeros
    few = Prototypes.from_features(x[:4], torch.tensor([0, 0, 1, 1]), per_class=3)
    assert few.counts.sum(1).tolist() == [2, 2]
    assert all(any(torch.equal(v, r) for r in x[:4]) for v in few.vectors.flatten(0, 1))


def test_slots_make_merges_of_several_prototypes_exact():
    x, y = _blobs(100)
    slots = torch.arange(100) % 2
    whole = Prototypes.empty(4, 5, per_class=2, dtype=torch.float64).update(x, y, slots)
    a = Prototypes.empty(4, 5, per_class=2, dtype=torch.float64).update(x[:50], y[:50],
                                                                       slots[:50])
    a.merge(Prototypes.empty(4, 5, per_class=2, dtype=torch.float64).update(
        x[50:], y[50:], slots[50:]))
    torch.testing.assert_close(a.vectors, whole.vectors, rtol=1e-12, atol=1e-12)
    for c in range(4):
        for m in range(2):
            rows = (y == c) & (slots == m)
            np.testing.assert_allclose(whole.vectors[c, m].numpy(), x[rows].numpy().mean(0))


def test_index_is_built_once_and_rebuilt_only_when_the_prototypes_change(monkeypatch):
    builds = []

    class Counting(PrototypeIndex):
        def __post_init__(self) -> None:
            builds.append(self.metric)
            super().__post_init__()

    monkeypatch.setattr(protos_mod, "PrototypeIndex", Counting)
    x, y = _blobs()
    q = x[:10]
    p = Prototypes.from_features(x.float(), y)
    for _ in range(3):
        p.predict(q.float(), "cosine", backend="torch")
        p.scores(q.float(), "cosine", backend="torch")
        p.search(q.float(), "cosine", 2, backend="torch")
    assert len(builds) == 1
    p.scores(q.float(), "sqeuclidean", backend="torch")  # another metric: its own index
    assert len(builds) == 2
    p.update(x[:5].float(), y[:5])
    p.predict(q.float(), "cosine", backend="torch")
    assert len(builds) == 3
    p.merge(Prototypes.from_features(x.float(), y))
    p.predict(q.float(), "cosine", backend="torch")
    assert len(builds) == 4
    p.vectors = p.vectors * 2  # assignment
    p.predict(q.float(), "cosine", backend="torch")
    assert len(builds) == 5
    p.vectors[0] += 1  # an in-place write (torch's version counter)
    p.predict(q.float(), "cosine", backend="torch")
    p.predict(q.float(), "cosine", backend="torch")
    assert len(builds) == 6


def test_wrapped_vectors_keep_storage_and_gradients():
    w = torch.nn.Parameter(torch.randn(3, 4))
    p = Prototypes.from_vectors(w)
    assert p.vectors.data_ptr() == w.data_ptr() and p.centres.shape == (3, 4)
    p.scores(torch.randn(2, 4), "cosine").sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    with pytest.raises(UserError, match="distinct"):
        Prototypes.from_vectors(torch.randn(2, 4), labels=torch.tensor([1, 1]))


# The previous evaluate_geodesic (before the strategy), on this case: correct answers of 12
# per episode; the manifest hash pins the episodes.
PREVIOUS = {"geo_pool": [11, 5, 8, 7, 12, 9], "geo_trans": [11, 7, 7, 8, 10, 9],
            "geo_class": [10, 7, 7, 10, 10, 9]}
MANIFEST = "4ff576366ef9dfaf20066bbe517a3cb742b17f71b2f69d3cd09e97f6831a780b"


@pytest.mark.parametrize("mode", sorted(PREVIOUS))
def test_geodesic_strategy_gives_the_previous_evaluation(mode):
    g = torch.Generator().manual_seed(0)
    x, y = swiss_roll(300, g)
    eps = make_episodes(as_data(x, y, "synthetic"), EpisodeSpec(3, 3, 4, 6, 0))
    assert eps.hash == MANIFEST
    opts = {"mode": mode, **({"pool": "test", "landmarks": 60} if mode == "geo_pool" else {})}
    head = GeodesicHead(opts)
    result = evaluate_geodesic(head, x.float(), eps)
    assert (result.accuracies * 12).round().int().tolist() == PREVIOUS[mode]
    if mode == "geo_pool":
        return
    labels = torch.arange(3).repeat_interleave(4)
    for e in range(6):  # one episode at a time through the strategy
        idx = eps.indices[e]
        protos = Prototypes.from_support(x.float()[idx[:, :3]])
        scores = protos.scores(x.float()[idx[:, 3:].flatten()], "geodesic", head=head)
        assert int((scores.argmax(1) == labels).sum()) == PREVIOUS[mode][e]


def test_geo_pool_training_scores_are_the_pool_logits():
    g = torch.Generator().manual_seed(0)
    x, _ = swiss_roll(200, g)
    head = GeodesicHead({"mode": "geo_pool", "landmarks": 50})
    head.refresh(x[:50].float(), 3)
    support, query = x[50:59].float().view(3, 3, 3), x[60:66].float()
    dm = fit(torch.unique(x[:50].float(), dim=0), head.options, 3)
    m = resolve_m(head.options, dm, 3)
    ref = pool_logits(dm, m, distance_scale(dm.coords(m)), support, query)
    got = Prototypes.from_support(support).scores(query, "geodesic", head=head)
    torch.testing.assert_close(got, ref)
    with pytest.raises(UserError, match="support rows"):
        Prototypes.from_vectors(support.mean(1)).scores(query, "geodesic", head=head)


def test_cosine_scores_of_l2_rows_match_numpy_through_faiss():
    pytest.importorskip("faiss")
    x, y = _blobs()
    p = Prototypes.from_features(x.float(), y)
    q = x[:20].float()
    c = p.centres.numpy()
    ref = (q.numpy() / np.linalg.norm(q.numpy(), axis=1, keepdims=True)) @ \
        (c / np.linalg.norm(c, axis=1, keepdims=True)).T - 1
    np.testing.assert_allclose(p.scores(q, "cosine", backend="faiss-cpu").numpy(), ref,
                               atol=1e-5)
    assert torch.equal(p.predict(q, "cosine", backend="faiss-cpu"),
                       torch.tensor(ref.argmax(1)))
