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


def test_torch_batches_are_sized_by_the_memory_budget(monkeypatch):
    q, p = _data()
    idx = PrototypeIndex(p, backend="torch", memory_budget=300 * 8 * 64)  # 64 rows per block
    assert idx._batch() == 64
    sizes = []
    real = idx._search_batch
    monkeypatch.setattr(idx, "_search_batch", lambda b, k: sizes.append(len(b)) or real(b, k))
    d, i = idx.search(q, k=2)
    assert max(sizes) == 64 and sum(sizes) == len(q)
    ref = PrototypeIndex(p, backend="torch").search(q, k=2)
    assert torch.equal(i, ref[1]) and torch.allclose(d, ref[0])


@pytest.mark.parametrize("approximate", ["ivf", "hnsw"])
@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
def test_approximate_indexes_report_their_recall(approximate, metric):
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(40, 32, generator=g) * 4
    protos = centres.repeat_interleave(100, 0) + torch.randn(4000, 32, generator=g)
    queries = centres.repeat_interleave(20, 0) + torch.randn(800, 32, generator=g)
    exact = PrototypeIndex(protos, metric=metric, backend="faiss-cpu")
    assert exact.recall(queries) == 1.0
    approx = PrototypeIndex(protos, metric=metric, backend="faiss-cpu", approximate=approximate)
    r1, r5 = approx.recall(queries, k=1), approx.recall(queries, k=5)
    assert 0.8 < r1 <= 1.0 and 0.8 < r5 <= 1.0
    # recall is what it says: the fraction of exact nearest neighbours found
    _, truth = exact.search(queries, 1)
    _, found = approx.search(queries, 1)
    assert r1 == pytest.approx((truth == found).double().mean().item())


def test_ivf_with_every_cell_probed_is_exact():
    pytest.importorskip("faiss")
    q, p = _data()
    idx = PrototypeIndex(p, backend="faiss-cpu", approximate="ivf", nlist=4, nprobe=4)
    assert idx.recall(q[:500], k=3) == 1.0


def test_approximate_needs_faiss_and_a_known_kind():
    _, p = _data()
    with pytest.raises(UserError, match="unknown approximate index 'lsh'"):
        PrototypeIndex(p, backend="faiss-cpu", approximate="lsh")
    with pytest.raises(UserError, match="approximate search needs a FAISS backend"):
        PrototypeIndex(p, backend="torch", approximate="ivf")
    with pytest.raises(UserError, match="non-empty"):
        PrototypeIndex(torch.empty(0, 4), backend="torch")
