"""PALM's pieces against independent computations (card section 8, properties 1-6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from protobench.methods.palm_loss import (
    PALMCriterion,
    class_mask,
    ema_update,
    init_prototypes,
    loss_weights,
    mle_loss,
    palm_assign,
    proto_contrastive_loss,
    prototype_labels,
    sinkhorn,
)


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def naive_sinkhorn(s: np.ndarray, eps: float, iters: int) -> np.ndarray:
    """The reference's loop written out element by element (float64)."""
    n, k = s.shape
    q = [[math.exp(s[i, j] / eps) for i in range(n)] for j in range(k)]  # [K][N]
    tot = sum(map(sum, q))
    q = [[v / tot for v in row] for row in q]
    for _ in range(iters):
        q = [[v / sum(row) / k for v in row] for row in q]
        cols = [sum(q[j][i] for j in range(k)) for i in range(n)]
        q = [[q[j][i] / cols[i] / n for i in range(n)] for j in range(k)]
    return np.array([[n * q[j][i] for j in range(k)] for i in range(n)])


# 1. sinkhorn
def test_sinkhorn_matches_naive_loop_rows_sum_to_one_and_permutes() -> None:
    z, p = unit(12, 8, 0), unit(6, 8, 1)
    w = sinkhorn(z @ p.T, 0.05, 3)
    assert w.shape == (12, 6) and bool((w >= 0).all())
    torch.testing.assert_close(w.sum(1), torch.ones(12), atol=1e-5, rtol=0)
    ref = naive_sinkhorn((z @ p.T).double().numpy(), 0.05, 3)
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-4, atol=1e-6)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(sinkhorn(z[perm] @ p.T), w[perm], atol=1e-6, rtol=1e-5)


# 2. prototype labels
def test_prototype_labels_are_interleaved() -> None:
    labels = prototype_labels(4, 3)
    assert labels.tolist() == [j % 4 for j in range(12)]
    crit = PALMCriterion(4, 3, 5)
    assert crit.labels.tolist() == [j % 4 for j in range(12)]
    assert crit.protos.shape == (12, 5) and bool((crit.protos >= 0).all())
    torch.testing.assert_close(crit.protos.norm(dim=1), torch.ones(12))
    y = torch.tensor([2, 0])
    mask = class_mask(y, labels)
    assert mask.tolist() == [[float(j % 4 == c) for j in range(12)] for c in (2, 0)]


# 3. mask + top-k
def test_assign_keeps_k_own_class_prototypes_with_both_normalisations() -> None:
    c, m, k = 3, 4, 2
    labels = prototype_labels(c, m)
    y = torch.tensor([0, 1, 1, 2, 0, 1])
    w = sinkhorn(unit(6, 5, 3) @ unit(c * m, 5, 4).T)
    mask = class_mask(y, labels)
    update, index = palm_assign(w, mask, k)
    keep = torch.zeros_like(w)
    for n in range(6):  # naive: best k own-class columns of each row
        own = [j for j in range(c * m) if j % c == int(y[n])]
        best = sorted(own, key=lambda j: -float(w[n, j]))[:k]
        assert sorted(index[n].tolist()) == sorted(best)
        keep[n, best] = w[n, best] / w[n, best].sum()
    cols = keep.sum(0)
    ref = torch.where(cols > 0, keep / cols.clamp(min=1e-30), torch.zeros_like(keep))
    torch.testing.assert_close(update, ref)
    used = cols > 0
    torch.testing.assert_close(update.sum(0)[used], torch.ones(int(used.sum())))
    w2 = sinkhorn(unit(6, 5, 5) @ unit(c * m, 5, 6).T)  # a different plan
    target = loss_weights(w2, mask, index)
    assert ((target > 0).sum(1) == k).all()
    torch.testing.assert_close(target.sum(1), torch.ones(6))
    for n in range(6):
        assert set(torch.nonzero(target[n]).flatten().tolist()) == set(index[n].tolist())
        assert all(j % c == int(y[n]) for j in index[n].tolist())


def test_top_k_is_clipped_to_prototypes_per_class() -> None:
    crit = PALMCriterion(3, 2, 4, top_k=5)
    assert crit.top_k == 2
    assert PALMCriterion(3, 2, 4, top_k=5, labelled=False).top_k == 5


# 4. EMA
def test_ema_unit_rows_absent_classes_unchanged_and_matches_formula() -> None:
    c, m, alpha = 3, 2, 0.9
    labels = prototype_labels(c, m)
    p = init_prototypes(c * m, 4, torch.Generator().manual_seed(0))
    z = unit(4, 4, 7)
    y = torch.tensor([0, 1, 0, 1])  # class 2 absent
    update, _ = palm_assign(sinkhorn(z @ p.T), class_mask(y, labels), 1)
    new = ema_update(p, z, update, alpha)
    torch.testing.assert_close(new.norm(dim=1), torch.ones(c * m))
    absent = labels == 2
    torch.testing.assert_close(new[absent], p[absent], atol=1e-6, rtol=0)
    for j in range(c * m):  # naive row-by-row
        row = alpha * p[j] + (1 - alpha) * sum(update[n, j] * z[n] for n in range(4))
        torch.testing.assert_close(new[j], row / row.norm())


def pc_grad(alpha: float) -> torch.Tensor:
    crit = PALMCriterion(2, 2, 4, top_k=1, alpha=alpha,
                         generator=torch.Generator().manual_seed(0))
    z = unit(6, 4, 8).requires_grad_(True)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    update, _ = palm_assign(sinkhorn(z.detach() @ crit.protos.T), class_mask(y, crit.labels), 1)
    new = ema_update(crit.protos, z, update, alpha)
    (grad,) = torch.autograd.grad(proto_contrastive_loss(new, crit.labels), z)
    return grad


def test_pc_gradient_reaches_z_only_through_the_ema_path() -> None:
    assert bool((pc_grad(1.0) == 0).all())
    assert float(pc_grad(0.9).abs().sum()) > 1e-6
    crit = PALMCriterion(2, 2, 4, alpha=1.0)
    before = crit.protos.clone()
    crit(unit(6, 4, 9), torch.tensor([0, 1, 0, 1, 0, 1]))
    torch.testing.assert_close(crit.protos, before, atol=1e-6, rtol=0)


def test_criterion_updates_buffer_without_graph() -> None:
    crit = PALMCriterion(2, 3, 4, top_k=2, alpha=0.5)
    before = crit.protos.clone()
    z = unit(8, 4, 10).requires_grad_(True)
    loss, parts = crit(z, torch.tensor([0, 1] * 4))
    loss.backward()
    assert crit.protos.grad_fn is None and not torch.allclose(crit.protos, before)
    assert "protos" in dict(crit.named_buffers()) and not list(crit.parameters())
    assert float(loss.detach()) == pytest.approx(float(parts["mle"] + parts["pc"]), abs=1e-6)
    assert z.grad is not None and float(z.grad.abs().sum()) > 0


# 5. M = 1, k = 1 reduces to cross-entropy on the post-update prototypes
def test_mle_with_one_prototype_per_class_is_cross_entropy() -> None:
    crit = PALMCriterion(4, 1, 6, top_k=1, alpha=0.7, proto_weight=0.0)
    z = unit(10, 6, 11)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    loss, parts = crit(z, y)
    ref = F.cross_entropy(z @ crit.protos.T / 0.1, y)  # crit.protos: post-update
    torch.testing.assert_close(parts["mle"], ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=1e-6)


def test_mle_loss_matches_naive_formula() -> None:
    z, p = unit(5, 3, 12), unit(4, 3, 13)
    w = torch.rand(5, 4, generator=torch.Generator().manual_seed(1))
    w = w / w.sum(1, keepdim=True)
    total = 0.0
    for n in range(5):
        logit = [float(z[n] @ p[j]) / 0.1 for j in range(4)]
        total += sum(float(w[n, j]) * logit[j] for j in range(4)) - math.log(
            sum(math.exp(v) for v in logit))
    assert float(mle_loss(z, p, w, 0.1)) == pytest.approx(-total / 5, rel=1e-5)


# 6. prototype-contrastive loss on a hand-built P
def test_proto_contrastive_on_orthogonal_prototypes_by_hand() -> None:
    p = torch.eye(4)  # C = 2, M = 2: rows 0, 2 class 0; rows 1, 3 class 1
    labels = prototype_labels(2, 2)
    # a_ii = 1/0.5 - 2 = 0 (the max is the self term), a_ij = 0 - 2 = -2 for j != i
    # each i: its one positive gives -2; log sum_{j != i} exp(a_ij) = log(3 e^-2) = log 3 - 2
    per_row = -2 - (math.log(3) - 2)
    assert float(proto_contrastive_loss(p, labels)) == pytest.approx(-per_row, abs=1e-6)


def test_proto_contrastive_general_case_and_empty_positive_set() -> None:
    p = unit(6, 3, 14)
    labels = prototype_labels(3, 2)
    sim = (p @ p.T / 0.5).double().numpy()
    total = 0.0
    for i in range(6):
        a = sim[i] - sim[i].max()
        pos = [j for j in range(6) if j != i and j % 3 == i % 3]
        total += np.mean([a[j] for j in pos]) - math.log(sum(math.exp(a[j]) for j in range(6)
                                                             if j != i))
    assert float(proto_contrastive_loss(p, labels)) == pytest.approx(-total / 6, rel=1e-5)
    own = torch.arange(6)  # M = 1: no positives, the first term is 0
    ref = np.mean([math.log(sum(math.exp(sim[i, j] - sim[i].max()) for j in range(6) if j != i))
                   for i in range(6)])
    assert float(proto_contrastive_loss(p, own)) == pytest.approx(ref, rel=1e-5)


def test_unlabelled_criterion_ignores_labels_and_uses_all_prototypes() -> None:
    def build() -> PALMCriterion:
        return PALMCriterion(6, 1, 4, top_k=2, labelled=False,
                             generator=torch.Generator().manual_seed(0))

    crit, a = build(), build()
    z = unit(5, 4, 15)
    la, _ = a(z, torch.zeros(5, dtype=torch.int64))
    lb, _ = crit(z, None)
    torch.testing.assert_close(la, lb)
    torch.testing.assert_close(a.protos, crit.protos)
