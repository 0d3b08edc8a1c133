"""FeCAM (card fecam.md section 8): shrinkage, normalisation and the worked example by hand,
scale invariance, the first-experience cosine rule, a frozen encoder and append-only
statistics afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protobench.methods import build_method
from protobench.methods.fecam import class_statistics, correlation, mahalanobis, shrink, tukey
from protobench.methods.protocols import ExperienceInfo

T = torch.float64
CPU = torch.device("cpu")


def test_shrinkage_once_and_twice_and_the_correlation():
    cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=T)
    once = shrink(cov)
    twice = shrink(once)
    assert torch.allclose(once, torch.tensor([[3.5, 1.0], [1.0, 2.5]], dtype=T))
    assert torch.allclose(twice, torch.tensor([[6.5, 2.0], [2.0, 5.5]], dtype=T))
    assert torch.allclose(twice, shrink(cov, 3.0, 3.0))  # twice with gamma 1 = once with 3
    assert correlation(twice)[0, 1].item() == pytest.approx(0.334497, abs=1e-6)
    assert correlation(once)[0, 1].item() == pytest.approx(0.338062, abs=1e-6)
    assert torch.allclose(torch.diagonal(correlation(twice)), torch.ones(2, dtype=T))


def test_zero_off_diagonal_gives_v2_zero_not_nan():
    """The reference's V2 = 0/0 = NaN here; this implementation takes V2 = 0 (departure)."""
    cov = torch.diag(torch.tensor([2.0, 4.0], dtype=T))
    out = shrink(cov)
    assert torch.isfinite(out).all() and torch.equal(out, cov + 3.0 * torch.eye(2, dtype=T))


def test_worked_example_by_hand():
    x = torch.tensor([[1.0, 4.0], [4.0, 1.0], [1.0, 1.0], [9.0, 4.0]], dtype=T)
    raw = np.cov(np.sqrt(x.numpy()).T, ddof=1)  # numpy's convention: divisor n - 1
    assert np.allclose(raw, [[0.916667, 0.166667], [0.166667, 0.333333]], atol=1e-6)
    mu, cov = class_statistics(x, 0.5, 1.0, 1.0, 2)
    assert torch.allclose(mu, torch.tensor([3.75, 2.5], dtype=T))
    assert torch.allclose(cov, torch.tensor([[1, 0.2685], [0.2685, 1]], dtype=T), atol=1e-4)
    q = torch.tensor([[4.0, 1.0]], dtype=T)
    qt = np.sqrt(np.array([4.0, 1.0]) / np.linalg.norm([4.0, 1.0]))
    mt = np.sqrt(mu.numpy())
    u = qt / np.linalg.norm(qt) - mt / np.linalg.norm(mt)
    assert np.allclose(u, [0.119831, -0.185242], atol=1e-6)
    d = mahalanobis(q, mu[None], torch.linalg.pinv(cov)[None], 0.5)
    assert d.item() == pytest.approx(float(u @ np.linalg.pinv(cov.numpy()) @ u), abs=1e-12)
    assert d.item() == pytest.approx(0.065302, abs=1e-6)
    eye = mahalanobis(q, mu[None], torch.eye(2, dtype=T)[None], 0.5)
    assert eye.item() == pytest.approx(0.048674, abs=1e-6)


def test_distances_match_a_loop_and_are_scale_invariant():
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(40, 5, generator=g, dtype=T)
    means = torch.rand(3, 5, generator=g, dtype=T)
    a = torch.randn(3, 5, 5, generator=g, dtype=T)
    pinvs = a @ a.transpose(1, 2)
    d = mahalanobis(feats, means, pinvs, 0.5)
    for i in range(0, 40, 7):
        for c in range(3):
            q = tukey(feats[i] / (feats[i].norm() + 1e-8), 0.5)
            m = tukey(means[c], 0.5)
            u = q / q.norm() - m / m.norm()
            assert d[i, c].item() == pytest.approx((u @ pinvs[c] @ u).item(), rel=1e-10)
    assert torch.allclose(mahalanobis(7.5 * feats, means, pinvs, 0.5), d, atol=1e-10)


def _stream(seed: int = 0):
    """Three 2-class experiences of non-negative 8-d blobs, as flat tensors."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(6, 8, generator=g) * 3
    x = (centres.repeat_interleave(40, 0) + 0.3 * torch.randn(240, 8, generator=g)).abs()
    y = torch.arange(6).repeat_interleave(40)
    return x, y


def test_first_experience_uses_the_cosine_head_then_a_frozen_encoder():
    x, y = _stream()
    m = build_method("fecam", task="class-incremental", backbone="mlp", epochs=3,
                     batch_size=32, seed=0)
    infos = [ExperienceInfo(t, (2 * t, 2 * t + 1), 3, t) for t in range(3)]
    first = (y < 2)
    m.train_experience(x[first], y[first], infos[0], CPU, progress=False)
    with torch.no_grad():
        feats = m.encoder(x)
        head = m.head(feats)
    assert torch.equal(m.predict(x, CPU).argmax(1), head.argmax(1))  # the task-0 rule
    weights = {k: v.clone() for k, v in m.encoder.state_dict().items()}
    stats = (m.means.clone(), m.covs.clone())
    for t in (1, 2):
        sel = (y >= 2 * t) & (y < 2 * t + 2)
        m.train_experience(x[sel], y[sel], infos[t], CPU, progress=False)
        assert all(torch.equal(v, weights[k]) for k, v in m.encoder.state_dict().items())
        assert torch.equal(m.means[:2], stats[0]) and torch.equal(m.covs[:2], stats[1])
        assert len(m.means) == 2 * t + 2  # appended, never recomputed
    scores = m.predict(x, CPU)
    assert scores.shape == (240, 6)
    with torch.no_grad():
        f = m.encoder(x)
    expected = -mahalanobis(f, m.means, torch.linalg.pinv(m.covs, hermitian=True), 0.5)
    assert torch.allclose(scores.double(), expected, atol=1e-5)
    assert (scores.argmax(1) == y).double().mean() > 0.5  # separable blobs are learned


def test_bad_parameters_are_refused():
    from protobench.errors import UserError

    with pytest.raises(UserError, match="beta"):
        build_method("fecam", task="class-incremental", beta=-1)
