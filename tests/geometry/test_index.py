import pytest
import torch

from protobench.errors import UserError
from protobench.geometry import PrototypeIndex, get_metric


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5000, 32, generator=g), torch.randn(300, 32, generator=g)


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
def test_faiss_cpu_agrees_with_torch(metric):
    pytest.importorskip("faiss")
    q, p = _data()
    d_t, i_t = PrototypeIndex(p, metric=metric, backend="torch").search(q, k=3)
    d_f, i_f = PrototypeIndex(p, metric=metric, backend="faiss-cpu").search(q, k=3)
    assert (i_t[:, 0] == i_f[:, 0]).float().mean() > 0.999  # float32 near-ties only
    assert torch.allclose(d_t, d_f, atol=1e-3, rtol=1e-4)


def test_torch_backend_is_exact():
    q, p = _data()
    d, i = PrototypeIndex(p.double(), backend="torch").search(q[:50].double(), k=2)
    ref = get_metric("sqeuclidean")(q[:50].double(), p.double())
    top = ref.topk(2, largest=False)
    assert torch.equal(i, top.indices)
    assert torch.allclose(d.double(), top.values, rtol=1e-5)


def test_batched_search_equals_single_batch():
    q, p = _data()
    a = PrototypeIndex(p, backend="torch", batch_size=333).search(q, k=2)
    b = PrototypeIndex(p, backend="torch", batch_size=10**6).search(q, k=2)
    assert torch.equal(a[1], b[1]) and torch.allclose(a[0], b[0])


def test_predict_returns_prototype_labels():
    protos = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    idx = PrototypeIndex(protos, labels=torch.tensor([7, 8, 9]), backend="auto")
    assert idx.predict(torch.tensor([[9.0, 1.0], [1.0, 1.0], [0.0, 11.0]])).tolist() == [8, 7, 9]


def test_bad_backend_and_shape():
    _, p = _data()
    with pytest.raises(UserError, match="unknown index backend"):
        PrototypeIndex(p, backend="annoy")
    with pytest.raises(UserError, match="FAISS cannot search metric 'euclidean'"):
        PrototypeIndex(p, metric="euclidean", backend="faiss-cpu")
    with pytest.raises(UserError, match="queries must be"):
        PrototypeIndex(p, backend="torch").search(torch.randn(3, 5))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="faiss-gpu needs a CUDA GPU"):
            PrototypeIndex(p, backend="faiss-gpu")
