"""Diffusion maps and Nyström: the exact properties of shared/methods/geoproto.md section 8
(float64), checked against an independent numpy implementation of section 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protobench.errors import UserError
from protobench.geometry.diffusion import (
    delta_rule,
    fit_diffusion_map,
    markov_matrix,
    nystrom,
    sq_dists,
)
from protobench.geometry.geodesic import GeodesicHead, GeodesicOptions, class_logits


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def gaussian(n: int = 60, d: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def reference(L: np.ndarray, eps: float, alpha: float) -> dict[str, np.ndarray]:
    """Section 2 with numpy loops over pairs: K, q, Ka, d, P, pi."""
    n = len(L)
    K = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            K[i, j] = np.exp(-np.sum((L[i] - L[j]) ** 2) / eps)
    q = K.sum(1)
    Ka = K / np.outer(q ** alpha, q ** alpha)
    d = Ka.sum(1)
    return {"K": K, "q": q, "d": d, "P": Ka / d[:, None], "pi": d / d.sum()}


def test_markov_rows_spectrum_and_eigenvectors_match_the_reference():
    L = gaussian()
    dm = fit_diffusion_map(L, alpha=1.0, bandwidth_rule=2.0, t=3)
    ref = reference(L.numpy(), 2.0, 1.0)
    P = markov_matrix(dm)
    assert (P.sum(1) - 1).abs().max() <= 1e-14
    assert np.abs(P.numpy() - ref["P"]).max() <= 1e-13
    evals = np.sort(np.linalg.eigvals(ref["P"]).real)[::-1]
    assert abs(evals[0] - 1) <= 1e-12  # lam_0 = 1 with psi_0 constant (P 1 = 1, rows above)
    assert np.abs(evals[1:] - dm.lam.numpy()).max() <= 1e-12
    assert (P @ dm.psi - dm.psi * dm.lam).abs().max() <= 1e-12
    assert torch.allclose(dm.pi, torch.from_numpy(ref["pi"]), atol=1e-15)
    # psi_l are pi-orthonormal and orthogonal to the constant psi_0
    gram = dm.psi.T @ (dm.pi[:, None] * dm.psi)
    assert (gram - torch.eye(len(gram), dtype=torch.float64)).abs().max() <= 1e-10
    assert (dm.pi @ dm.psi).abs().max() <= 1e-10


def test_diffusion_distance_identity_with_all_eigenpairs():
    L = gaussian()
    dm = fit_diffusion_map(L, alpha=1.0, bandwidth_rule=2.0, t=3)
    Pt = torch.linalg.matrix_power(markov_matrix(dm), 3)
    direct = ((Pt[:, None, :] - Pt[None, :, :]) ** 2 / dm.pi).sum(-1)
    spectral = sq_dists(*(2 * [dm.coords(len(L) - 1)]))
    assert (direct - spectral).abs().max() <= 1e-12


@pytest.mark.parametrize("rule", ["knn", "local", "median", 2.0])
def test_nystrom_at_the_landmarks_reproduces_the_map(rule):
    L = gaussian(50)
    dm = fit_diffusion_map(L, bandwidth_rule=rule, k=7, t=8)
    m = len(L) - 1
    assert (nystrom(L, dm, m) - dm.coords(m)).abs().max() <= 1e-12


def test_query_density_factor_cancels():
    L, x = gaussian(40), gaussian(7, seed=1)
    for alpha in (0.0, 0.5, 1.0):
        dm = fit_diffusion_map(L, alpha=alpha, bandwidth_rule=2.0, t=2)
        ref = reference(L.numpy(), 2.0, alpha)
        k = np.exp(-sq_dists(x, L).numpy() / 2.0)
        qx = k.sum(1, keepdims=True)
        w = k / (qx ** alpha * ref["q"] ** alpha)  # with the q(x)^alpha factor
        p = w / w.sum(1, keepdims=True)
        want = (p @ dm.psi.numpy()[:, :5]) * dm.lam.numpy()[:5] ** (dm.t - 1)
        assert np.abs(nystrom(x, dm, 5).numpy() - want).max() <= 1e-13


def test_stationary_distribution_for_alpha_zero_and_one():
    L = gaussian(40)
    for alpha, key in ((0.0, "q"), (1.0, "d")):
        dm = fit_diffusion_map(L, alpha=alpha, bandwidth_rule=2.0)
        ref = reference(L.numpy(), 2.0, alpha)
        want = ref[key] / ref[key].sum()
        assert np.abs(dm.pi.numpy() - want).max() <= 1e-15


def test_distances_invariant_to_sign_flips_and_rigid_motions():
    L = gaussian(40)
    dm = fit_diffusion_map(L, bandwidth_rule="knn", t=4)
    d0 = sq_dists(dm.coords(10), dm.coords(10))
    flip = torch.where(torch.arange(10) % 2 == 0, 1.0, -1.0).double()
    flipped = dm.coords(10) * flip
    assert (sq_dists(flipped, flipped) - d0).abs().max() <= 1e-15
    R, _ = torch.linalg.qr(gaussian(3, seed=5))
    moved = fit_diffusion_map(L @ R.T + torch.tensor([3.0, -1.0, 7.0], dtype=torch.float64),
                              bandwidth_rule="knn", t=4)
    d1 = sq_dists(moved.coords(10), moved.coords(10))
    assert (d1 - d0).abs().max() <= 1e-9 * d0.max()


@pytest.mark.parametrize("rule", ["knn", "local"])
def test_gradcheck_and_detached_landmark_state(rule):
    L = gaussian(30).requires_grad_(True)
    dm = fit_diffusion_map(L, bandwidth_rule=rule, k=5, t=3)
    for tensor in (dm.landmarks, dm.log_qa, dm.lam, dm.psi, dm.pi):
        assert not tensor.requires_grad
    x = gaussian(4, seed=2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: nystrom(z, dm, 4), (x,))


def test_deterministic_landmarks_eigenpairs_and_logits():
    feats = gaussian(300, d=5).float()
    outs = []
    for _ in range(2):
        head = GeodesicHead({"landmarks": 100, "select": "fps", "seed": 3})
        head.set_pool(feats)
        outs.append((head.pool, head.embed(feats, ways=5)))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    a, b = (fit_diffusion_map(outs[0][0]) for _ in range(2))
    assert torch.equal(a.psi, b.psi) and torch.equal(a.lam, b.lam)


def test_delta_rule_counts_eigenvalues_above_the_threshold():
    lam = torch.tensor([0.9, 0.8, 0.5, 0.1], dtype=torch.float64)
    # 0.9^2 = .81 > .1*.81; .64 > .081; .25 > .081; .01 < .081
    assert delta_rule(lam, t=2, delta=0.1) == 3
    assert delta_rule(lam, t=64, delta=0.1) == 1


def test_fewer_landmarks_than_coordinates_is_an_error():
    dm = fit_diffusion_map(gaussian(6))
    with pytest.raises(UserError, match="cannot give 8 diffusion coordinates"):
        nystrom(gaussian(2, seed=1), dm, 8)
    head = GeodesicHead({"m": 8, "landmarks": 6, "pool": "test"})
    with pytest.raises(UserError, match="need at least m \\+ 1"):
        head.embed(gaussian(20, seed=1).float(), ways=5)


def test_duplicate_landmarks_are_an_error():
    L = gaussian(20)
    with pytest.raises(UserError, match="duplicates"):
        fit_diffusion_map(torch.cat([L, L[:3]]))
    # the pool selection deduplicates, so a pool with repeated features still works
    head = GeodesicHead({"pool": "test", "landmarks": 50})
    z = head.embed(torch.cat([L, L]).float(), ways=3)
    assert torch.isfinite(z).all() and len(head.pool) == 20


def test_bandwidth_underflow_is_an_error_and_far_points_stay_finite():
    L = gaussian(30)
    with pytest.raises(UserError, match="bandwidth underflow"):
        fit_diffusion_map(L, bandwidth_rule=1e-30)
    with pytest.raises(UserError, match="not a positive number"):
        fit_diffusion_map(L, bandwidth_rule=0.0)
    dm = fit_diffusion_map(L, bandwidth_rule=0.05)  # tiny but not degenerate kernel
    far = torch.full((2, 3), 1e4, dtype=torch.float64)  # every kernel entry underflows
    z = nystrom(far, dm, 5)
    assert torch.isfinite(z).all() and torch.isfinite(dm.log_membership(far)).all()


def test_one_shot_geo_class_is_an_error():
    o = GeodesicOptions.parse({"mode": "geo_class"})
    with pytest.raises(UserError, match="K=1"):
        class_logits(o, gaussian(5).view(1, 5, 1, 3), gaussian(4).view(1, 4, 3))


def test_unknown_options_are_errors():
    with pytest.raises(UserError, match="unknown geodesic option"):
        GeodesicHead({"landmark": 10})
    with pytest.raises(UserError, match="mode='geo'"):
        GeodesicHead({"mode": "geo"})
    with pytest.raises(UserError, match="t must be >= 1"):
        GeodesicHead({"t": 0.5})


def test_partial_eigensolver_matches_the_full_one():
    L = gaussian(120)
    full, part = fit_diffusion_map(L), fit_diffusion_map(L, n_eigs=6)
    assert part.lam.shape == (6,) and full.lam.shape == (119,)
    assert (part.coords(6) - full.coords(6)).abs().max() <= 1e-10
    x = gaussian(5, seed=3)
    assert (nystrom(x, part, 6) - nystrom(x, full, 6)).abs().max() <= 1e-10
    with pytest.raises(UserError, match="holds 6 eigenpairs"):
        part.coords(7)


def local_scaling_reference(L: np.ndarray, k: int, alpha: float, t: float
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Section 2 with local scaling (``s_i`` = k-th smallest distance of row i, the 0 to
    itself included) by numpy loops and scipy ``eigh``: ``(all eigenvalues, coordinates
    lam^t psi of the non-trivial POSITIVE eigenpairs)``."""
    import scipy.linalg

    n = len(L)
    d2 = np.array([[np.sum((L[i] - L[j]) ** 2) for j in range(n)] for i in range(n)])
    s = np.sqrt(np.sort(d2, axis=1)[:, k - 1])
    K = np.exp(-d2 / np.outer(s, s))
    q = K.sum(1)
    Ka = K / np.outer(q ** alpha, q ** alpha)
    d = Ka.sum(1)
    w, V = scipy.linalg.eigh(Ka / np.sqrt(np.outer(d, d)))
    w, V = w[::-1], V[:, ::-1]
    psi = V / np.sqrt(d / d.sum())[:, None]
    keep = np.arange(n) >= 1  # the trivial lam_0 = 1 is dropped ...
    keep &= w > 0  # ... and so are the non-positive eigenvalues
    return w, w[keep] ** t * psi[:, keep]


def _sq(c: np.ndarray) -> np.ndarray:
    return ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)


def test_negative_eigenvalues_are_dropped_at_non_integer_t():
    L = gaussian(60, seed=8)
    w, ref = local_scaling_reference(L.numpy(), k=7, alpha=1.0, t=1.5)
    assert w.min() < -1e-4  # a local-scaling kernel is not PSD: lam_min ~ -6e-4 here
    dm = fit_diffusion_map(L, bandwidth_rule="local", k=7, t=1.5)
    coords = dm.coords(59)
    assert torch.isfinite(coords).all()
    assert np.abs(dm.lam.numpy() - w[1:]).max() <= 1e-12  # lam itself: the raw spectrum
    # distances agree with the reference on the kept eigenpairs (sign-free comparison)
    assert np.abs(sq_dists(coords, coords).numpy() - _sq(ref)).max() <= 1e-10
    # Nyström at the landmarks is still exact, and the dropped coordinates are 0
    assert (nystrom(L, dm, 59) - coords).abs().max() <= 1e-12
    assert (coords[:, dm.lam <= 0] == 0).all()


def test_non_finite_coordinates_are_an_error():
    dm = fit_diffusion_map(gaussian(20), bandwidth_rule="local", k=5, t=2.5)
    x = gaussian(3, seed=1)
    x[1, 0] = float("nan")
    with pytest.raises(UserError, match="NaN or inf"):
        nystrom(x, dm, 4)


def test_delta_rule_ignores_negative_eigenvalues():
    lam = torch.tensor([0.9, 0.5, -0.95], dtype=torch.float64)
    # positive part: .81, .25, 0 vs .1 * .81 -> 2 (|lam| would count the -0.95 as well)
    assert delta_rule(lam, t=2, delta=0.1) == 2
