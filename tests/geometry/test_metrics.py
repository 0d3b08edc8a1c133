import pytest
import torch
from sklearn.metrics.pairwise import cosine_distances, euclidean_distances

from protobench.errors import RegistryError
from protobench.geometry import get_metric, list_metrics
from protobench.geometry.metrics import get_ranker


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(40, 7, generator=g, dtype=torch.float64), torch.randn(
        6, 7, generator=g, dtype=torch.float64)


def test_against_scikit_learn():
    q, p = _data()
    ref_sq = euclidean_distances(q.numpy(), p.numpy(), squared=True)
    assert torch.allclose(get_metric("sqeuclidean")(q, p), torch.from_numpy(ref_sq), atol=1e-10)
    assert torch.allclose(get_metric("euclidean")(q, p), torch.from_numpy(ref_sq).sqrt(),
                          atol=1e-10)
    ref_cos = cosine_distances(q.numpy(), p.numpy())
    assert torch.allclose(get_metric("cosine")(q, p), torch.from_numpy(ref_cos), atol=1e-10)


def test_batched_form_matches_unbatched():
    q, p = _data()
    for name in list_metrics():
        batched = get_metric(name)(q.unsqueeze(0).repeat(3, 1, 1), p.unsqueeze(0).repeat(3, 1, 1))
        assert torch.allclose(batched[1], get_metric(name)(q, p), atol=1e-10)


@pytest.mark.parametrize("name", ["sqeuclidean", "euclidean", "cosine"])
def test_ranker_has_same_argmin(name):
    q, p = _data(1)
    assert torch.equal(get_ranker(name)(q, p).argmax(1), get_metric(name)(q, p).argmin(1))


def test_unknown_metric():
    with pytest.raises(RegistryError, match="unknown metric 'manhattan'.*cosine"):
        get_metric("manhattan")
