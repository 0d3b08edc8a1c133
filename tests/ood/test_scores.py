"""Every OOD score against an independent numpy computation."""

import numpy as np
import pytest
import torch

from protobench.errors import UserError
from protobench.geometry.index import _faiss
from protobench.ood.metrics import fpr_at_tpr
from protobench.ood.scores import build_score, get_score_class, list_scores


def _data(seed=0, n=60, d=6, c=3):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(c).repeat_interleave(n // c)
    x = torch.randn(c, d, generator=g)[y] * 2 + torch.randn(n, d, generator=g)
    q = torch.randn(25, d, generator=g) * 2
    return x, y, q


def test_registry_and_capabilities():
    names = {s.name for s in list_scores()}
    assert {"msp", "max-logit", "energy", "knn", "mahalanobis", "ssd",
            "mahalanobis-centred", "prototype"} <= names
    assert {n for n in names if get_score_class(n).needs_logits} == {"msp", "max-logit", "energy"}
    with pytest.raises(UserError, match="unknown score"):
        build_score("nope")
    with pytest.raises(UserError, match="no parameter"):
        build_score("knn", kk=3)
    with pytest.raises(UserError, match="needs logits"):
        build_score("msp").score(torch.zeros(2, 3))


def test_logit_scores():
    logits = torch.tensor([[1.0, 2.0, 0.5], [3.0, -1.0, 0.0]])
    z = logits.double().numpy()
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert np.allclose(build_score("msp").score(None, logits).numpy(), p.max(1), atol=1e-6)
    assert np.allclose(build_score("max-logit").score(None, logits).numpy(), z.max(1))
    e = build_score("energy", temperature=2.0).score(None, logits).numpy()
    assert np.allclose(e, 2 * np.log(np.exp(z / 2).sum(1)), atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "faiss-cpu"])
def test_knn_matches_brute_force(backend):
    if backend == "faiss-cpu" and _faiss() is None:
        pytest.skip("faiss not installed")
    x, y, q = _data()
    s = build_score("knn", k=4, backend=backend, batch_size=7).fit(x).score(q).numpy()
    xn = x.double().numpy() / (np.linalg.norm(x.double().numpy(), axis=1, keepdims=True) + 1e-10)
    qn = q.double().numpy() / (np.linalg.norm(q.double().numpy(), axis=1, keepdims=True) + 1e-10)
    ref = [-np.sort([np.linalg.norm(a - b) for b in xn])[3] for a in qn]
    assert np.allclose(s, ref, atol=1e-4)


def test_mahalanobis_matches_numpy_loop():
    x, y, q = _data(1)
    s = build_score("mahalanobis").fit(x, y).score(q).numpy()
    xd, yd, qd = x.double().numpy(), y.numpy(), q.double().numpy()
    means = np.stack([xd[yd == c].mean(0) for c in range(3)])
    centred = xd - means[yd]  # tied covariance, 1/N (sklearn EmpiricalCovariance, OpenOOD)
    prec = np.linalg.inv(centred.T @ centred / len(xd))
    ref = [max(-(h - m) @ prec @ (h - m) for m in means) for h in qd]
    assert np.allclose(s, ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(UserError, match="labels"):
        build_score("mahalanobis").fit(x)


def _ssd_numpy(train, test, quirk):
    """PALM's util/evaluations/mahalanobis.py, written independently in numpy."""
    tr = train / (np.linalg.norm(train, axis=1, keepdims=True) + 1e-10)
    te = test / (np.linalg.norm(test, axis=1, keepdims=True) + 1e-10)
    mu, std = tr.mean(axis=0), tr.std(axis=0)
    u_tr = (tr - mu) / (std + 1e-10)
    u_te = (te - mu) / (std + 1e-10)
    prec = np.linalg.pinv(np.cov(u_tr.T, bias=True))
    v = u_te - mu if quirk else u_te
    return -np.sum(v @ prec * v, axis=1)


def test_ssd_faithful_and_centred_match_numpy():
    # palm.md section 8 property 7: faithful formula on a tiny fixed array, no labels used
    train = np.array([[1.0, 2.0, 0.5], [0.2, 1.0, 1.5], [2.0, 0.1, 0.3], [0.5, 0.5, 2.0],
                      [1.5, 1.2, 0.1], [0.3, 2.2, 0.9]])
    test = np.array([[1.0, 1.0, 1.0], [3.0, 0.0, 0.2], [0.1, 0.1, 2.5]])
    ssd = build_score("ssd").fit(torch.tensor(train))  # no labels passed
    assert np.allclose(ssd.score(torch.tensor(test)).numpy(), _ssd_numpy(train, test, True),
                       rtol=1e-5, atol=1e-6)
    clean = build_score("mahalanobis-centred").fit(torch.tensor(train))
    assert np.allclose(clean.score(torch.tensor(test)).numpy(),
                       _ssd_numpy(train, test, False), rtol=1e-5, atol=1e-6)
    assert not get_score_class("ssd").needs_labels
    assert not np.allclose(ssd.score(torch.tensor(test)).numpy(),
                           clean.score(torch.tensor(test)).numpy())  # the quirk matters
    # PALM-style FPR (percentile rule) on ID = 1..20, OOD = [2, .5, .5, .5]
    assert fpr_at_tpr(list(range(1, 21)), [2, 0.5, 0.5, 0.5], rule="percentile") == 0.25


def test_prototype_score_is_max_cosine_to_class_means():
    x, y, q = _data(2)
    s = build_score("prototype", backend="torch").fit(x, y).score(q).numpy()
    xd, qd = x.double().numpy(), q.double().numpy()
    xn = xd / np.linalg.norm(xd, axis=1, keepdims=True)
    means = np.stack([xn[y.numpy() == c].mean(0) for c in range(3)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    qn = qd / np.linalg.norm(qd, axis=1, keepdims=True)
    assert np.allclose(s, (qn @ means.T).max(1), atol=1e-5)
