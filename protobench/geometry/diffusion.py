"""Diffusion maps on a landmark set and their differentiable Nyström extension.

Coifman & Lafon, "Diffusion maps" (ACHA 2006), as specified in
``shared/methods/geoproto.md`` sections 2-3. For landmarks ``L [M, D]``::

    K_ij  = exp(-||l_i - l_j||^2 / eps_ij)        eps_ij = eps (knn / median rule, or a number)
                                                  or s_i s_j (local scaling, Zelnik-Manor & Perona)
    q_i   = sum_j K_ij ;  Ka = K / (q_i^a q_j^a) ;  d_i = sum_j Ka_ij ;  P = diag(1/d) Ka
    A     = diag(d^-1/2) Ka diag(d^-1/2) = V diag(lam) V^T          (float64 eigh)
    pi    = d / sum(d) ;  psi_l = V[:, l] / sqrt(pi)                (psi_0 == 1, dropped)
    Psi_t(l_i) = (lam_l^t psi_l(i))_{l=1..m}

and for any point ``x`` (query, support, learnable prototype)::

    p_j(x)      = softmax_j(-||x - l_j||^2 / eps_j(x) - a log q_j)     (log-sum-exp: no underflow)
    Psi_t(x)_l  = lam_l^(t-1) sum_j p_j(x) psi_l(l_j)                  (exact at the landmarks)

Gradients reach ``x`` only through its kernel row; the landmark state (landmarks, bandwidth,
``q``, eigenpairs) is detached (``requires_grad`` False) and ``eigh`` is never differentiated.

Conventions and departures (the card leaves them open):

* local scaling: ``s(x)`` = distance from ``x`` to its ``k``-th nearest landmark counting
  ``x`` itself when it is a landmark, so ``s(l_i)`` is the ``(k-1)``-th neighbour of ``l_i``
  and the Nyström extension is exact at the landmarks for every bandwidth rule;
* kNN heuristic: ``eps = median_i dist(l_i, k-th other landmark)^2``; median heuristic:
  ``eps = median_{i != j} ||l_i - l_j||^2``;
* eigenvector signs: the largest-magnitude entry of each ``V[:, l]`` is positive;
* all eigenpairs are stored: ``m`` is chosen when coordinates are computed (explicitly, or by
  the delta rule :func:`delta_rule`), since the first ``m`` coordinates of the full map are
  the ``m``-coordinate map;
* non-positive eigenvalues are dropped: their coordinates are 0 (``lam_+^t``), for every
  ``t``. ``lam^t`` of a negative ``lam`` is NaN for a non-integer ``t``; such eigenvalues
  are round-off (about -1e-17 for a Gaussian kernel, which is PSD) or come from a kernel
  that is not PSD (local scaling: e.g. -6e-4 on 60 Gaussian points in R^3, k = 7); their
  ``|lam|^(2t)`` share of a diffusion distance is negligible at ``t >= 1``. Dropping them
  at integer ``t`` too gives every ``t`` the same coordinates; ``lam`` itself stays the raw
  spectrum;
* degenerate inputs raise :class:`~protobench.errors.UserError`: fewer than ``m + 1``
  landmarks, duplicate landmarks, a bandwidth under which the kernel is (numerically) the
  identity, non-finite values (landmarks, or diffusion coordinates: never NaN silently).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from protobench.errors import UserError

BANDWIDTHS = ("knn", "local", "median")
ISOLATED = 1e-12  # off-diagonal kernel mass below which a landmark has no neighbour


def sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[..., B, D]`` x ``[..., M, D]`` -> ``[..., B, M]`` squared distances (matmul form,
    clamped at 0)."""
    xx = x.pow(2).sum(-1, keepdim=True)
    yy = y.pow(2).sum(-1).unsqueeze(-2)
    return (xx + yy - 2.0 * x @ y.transpose(-1, -2)).clamp_min(0)


def _kth(d2: torch.Tensor, k: int) -> torch.Tensor:
    """k-th smallest entry (1-based) of each row of ``d2 [..., B, M]`` -> ``[..., B]``."""
    k = min(k, d2.shape[-1])
    return d2.topk(k, dim=-1, largest=False).values[..., k - 1]


@dataclass(frozen=True)
class DiffusionMap:
    """The detached state of one diffusion map (all float64).

    landmarks ``[..., M, D]`` (leading dims = a batch of independent maps, e.g. one per
    episode or per class); ``log_qa [..., M]`` = ``alpha log q``; ``eps [...]`` (global
    bandwidth, or None for local scaling with ``scales [..., M]``); eigenvalues
    ``lam [..., M-1]`` (non-trivial, descending) and right eigenvectors ``psi [..., M, M-1]``;
    stationary distribution ``pi [..., M]``.
    """

    landmarks: torch.Tensor
    log_qa: torch.Tensor
    eps: torch.Tensor | None
    scales: torch.Tensor | None
    k: int
    lam: torch.Tensor
    psi: torch.Tensor
    pi: torch.Tensor
    t: float
    alpha: float

    @property
    def n(self) -> int:
        return self.landmarks.shape[-2]

    def check_m(self, m: int) -> int:
        if m < 1:
            raise UserError(f"diffusion maps need at least 1 coordinate, got m={m}")
        if self.n < m + 1:
            raise UserError(f"{self.n} landmarks cannot give {m} diffusion coordinates "
                            f"(need at least m + 1 = {m + 1}); use more landmarks or a smaller m")
        if m > self.lam.shape[-1]:
            raise UserError(f"this map holds {self.lam.shape[-1]} eigenpairs, not {m}; refit it "
                            "with n_eigs >= m")
        return m

    def coords(self, m: int) -> torch.Tensor:
        """Diffusion coordinates of the landmarks ``[..., M, m]`` = ``lam_+^t psi``."""
        m = self.check_m(m)
        return check_finite(lam_power(self.lam[..., None, :m], self.t) * self.psi[..., :m])

    def log_kernel(self, x: torch.Tensor) -> torch.Tensor:
        """``log k_j(x)`` ``[..., B, M]`` for ``x [..., B, D]`` (float64, differentiable)."""
        d2 = sq_dists(x, self.landmarks)
        if self.scales is None:
            assert self.eps is not None
            return -d2 / self.eps[..., None, None]
        s_x = _kth(d2, self.k).clamp_min(0).sqrt()
        denom = s_x.unsqueeze(-1) * self.scales.unsqueeze(-2)
        if bool((denom <= 0).any()):
            raise UserError("local-scaling bandwidth is 0 for some point (its k-th nearest "
                            "landmark is at distance 0); use a larger k or deduplicate")
        return -d2 / denom

    def transition(self, x: torch.Tensor) -> torch.Tensor:
        """Extended Markov rows ``p(x) [..., B, M]`` (rows sum to 1)."""
        return torch.softmax(self.log_kernel(x) - self.log_qa.unsqueeze(-2), dim=-1)

    def log_membership(self, x: torch.Tensor) -> torch.Tensor:
        """``log(mean_j k_j(x) + 1e-12)`` ``[..., B]``: kernel mass near the landmarks."""
        lk = torch.logsumexp(self.log_kernel(x), dim=-1) - math.log(self.n)
        return torch.logaddexp(lk, torch.full_like(lk, math.log(1e-12)))


def lam_power(lam: torch.Tensor, p: float) -> torch.Tensor:
    """``lam^p`` where ``lam > 0``, else 0: non-positive eigenvalues are dropped (module
    docstring), so a non-integer ``p`` never meets a negative base."""
    keep = lam > 0
    return torch.where(keep, lam, torch.ones_like(lam)).pow(p) * keep


def check_finite(coords: torch.Tensor, what: str = "diffusion coordinates") -> torch.Tensor:
    """``coords``, or a UserError when any is NaN or inf (never an argmax over NaN)."""
    if not bool(torch.isfinite(coords.detach()).all()):
        raise UserError(f"{what} contain NaN or inf; check the embedded features for NaN/inf "
                        "(landmarks are checked when the map is fitted)")
    return coords


def _check_landmarks(L: torch.Tensor) -> torch.Tensor:
    if L.dim() < 2 or L.shape[-2] < 2:
        raise UserError(f"landmarks must be [..., M >= 2, D], got shape {list(L.shape)}")
    if not bool(torch.isfinite(L).all()):
        raise UserError("landmarks contain NaN or inf; check the features")
    return L.detach().to(torch.float64)


def _off_diagonal(d2: torch.Tensor) -> torch.Tensor:
    """``[..., M, M]`` -> ``[..., M*(M-1)]`` off-diagonal entries."""
    M = d2.shape[-1]
    off = ~torch.eye(M, dtype=torch.bool, device=d2.device)
    return d2[..., off]


def bandwidth(d2: torch.Tensor, rule: str | float, k: int) -> tuple[torch.Tensor | None,
                                                                      torch.Tensor | None]:
    """``(eps [...], scales)`` from the landmark squared distances ``d2 [..., M, M]``: a
    number or the rules ``knn`` / ``median`` give a global ``eps`` per map; ``local`` gives
    ``scales [..., M]`` (distance to the k-th nearest landmark, the landmark included)."""
    batch = d2.shape[:-2]
    if isinstance(rule, int | float) and not isinstance(rule, bool):
        eps = torch.full(batch, float(rule), dtype=d2.dtype, device=d2.device)
    elif rule == "median":
        eps = _off_diagonal(d2).median(-1).values
    elif rule == "knn":
        eps = _kth(d2, k + 1).median(-1).values  # k-th other landmark (the row holds 0 at i)
    elif rule == "local":
        return None, _kth(d2, k).sqrt()
    else:
        raise UserError(f"unknown bandwidth {rule!r}; choose one of {', '.join(BANDWIDTHS)} "
                        "or give a positive number")
    if not bool(((eps > 0) & torch.isfinite(eps)).all()):
        raise UserError(f"bandwidth eps = {eps.min().item():g} is not a positive number; use a "
                        "larger k, another rule, or deduplicate the landmarks")
    return eps, None


def fit_diffusion_map(landmarks: torch.Tensor, alpha: float = 1.0,
                      bandwidth_rule: str | float = "knn", k: int = 7,
                      t: float = 8.0, n_eigs: int | None = None) -> DiffusionMap:
    """Diffusion map of ``landmarks [..., M, D]`` (detached, float64), eigenvector signs fixed
    (largest-magnitude entry positive). All ``M - 1`` non-trivial eigenpairs, or only the
    leading ``n_eigs`` (a partial LAPACK solver for one map on the CPU: ~5x faster at M=1000)."""
    if t < 1:
        raise UserError(f"diffusion time t must be >= 1 (Nyström in lam^(t-1) form), got {t}")
    L = _check_landmarks(landmarks)
    M = L.shape[-2]
    d2 = sq_dists(L, L)
    eye = torch.eye(M, dtype=torch.bool, device=L.device)
    d2 = d2.masked_fill(eye, 0.0)
    scale = _off_diagonal(d2).amax(-1).clamp_min(1e-300)[..., None, None]
    dup = (d2 <= 1e-24 * scale) & ~eye
    if bool(dup.any()):
        n_dup = int(dup.any(-1).sum())
        raise UserError(f"{n_dup} landmarks are duplicates of others; deduplicate them "
                        "(e.g. torch.unique(x, dim=0)) before building a diffusion map")
    eps, scales = bandwidth(d2, bandwidth_rule, k)
    log_k = (-d2 / eps[..., None, None] if scales is None
             else -d2 / (scales[..., :, None] * scales[..., None, :]))
    if scales is not None and not bool((scales > 0).all()):
        raise UserError("local-scaling bandwidth is 0 for some landmark; use a larger k")
    isolated = (log_k.exp().masked_fill(eye, 0.0).sum(-1) < ISOLATED).sum(-1)
    if bool((isolated * 2 > M).any()):
        raise UserError(f"bandwidth underflow: {int(isolated.max())} of {M} landmarks have no "
                        "neighbour within the kernel (it is numerically the identity); use a "
                        "larger bandwidth (bandwidth=knn with a larger k, or median)")
    log_q = torch.logsumexp(log_k, dim=-1)  # >= 0 (diagonal term 1): never -inf
    ka = (log_k - alpha * (log_q[..., :, None] + log_q[..., None, :])).exp()
    d = ka.sum(-1)
    sd = d.sqrt()
    a = ka / (sd[..., :, None] * sd[..., None, :])
    lam, V = _eigh((a + a.transpose(-1, -2)) / 2, n_eigs)
    idx = V.abs().argmax(-2, keepdim=True)
    V = V * torch.sign(V.gather(-2, idx))
    pi = d / d.sum(-1, keepdim=True)
    psi = V / pi.sqrt()[..., :, None]
    return DiffusionMap(L, alpha * log_q, eps, scales, k, lam[..., 1:].contiguous(),
                        psi[..., 1:].contiguous(), pi, float(t), float(alpha))


def _eigh(a: torch.Tensor, n_eigs: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of symmetric ``a [..., M, M]``, largest first (``n_eigs + 1`` of them when
    ``n_eigs`` is given for a single CPU matrix, else all)."""
    M = a.shape[-1]
    if n_eigs is not None and a.dim() == 2 and a.device.type == "cpu" and n_eigs + 1 < M:
        import scipy.linalg

        w, v = scipy.linalg.eigh(a.numpy(), subset_by_index=[M - n_eigs - 1, M - 1],
                                 driver="evr")
        return torch.from_numpy(w).flip(-1), torch.from_numpy(v).flip(-1)
    lam, V = torch.linalg.eigh(a)
    return lam.flip(-1), V.flip(-1)


def markov_matrix(dm: DiffusionMap) -> torch.Tensor:
    """``P [..., M, M]`` of the landmarks (the Nyström rows at the landmarks)."""
    return dm.transition(dm.landmarks)


def delta_rule(lam: torch.Tensor, t: float, delta: float = 0.1) -> int:
    """``max{l : lam_l^t > delta lam_1^t}`` over the positive eigenvalues (non-positive
    ones are dropped; 1-based count of kept coordinates, >= 1; the largest count over a
    batch of maps ``lam [..., r]``)."""
    a = lam_power(lam, t)
    return max(1, int((a > delta * a[..., :1]).sum(-1).max()))


def nystrom(x: torch.Tensor, dm: DiffusionMap, m: int) -> torch.Tensor:
    """Diffusion coordinates ``[..., B, m]`` of ``x [..., B, D]``: ``lam_+^(t-1) (p(x) @ psi)``
    (``x``'s leading dims match the map's batch dims; non-positive eigenvalues give 0).

    Computed in float64 and returned in ``x``'s dtype; differentiable in ``x``.
    """
    m = dm.check_m(m)
    p = dm.transition(x.to(torch.float64))
    out = check_finite((p @ dm.psi[..., :m]) * lam_power(dm.lam[..., None, :m], dm.t - 1))
    return out.to(x.dtype) if x.dtype.is_floating_point else out


def distance_scale(coords: torch.Tensor) -> torch.Tensor:
    """``tau [...]`` = median pairwise squared distance among ``coords [..., M, m]`` (1 where
    that median is 0)."""
    tau = _off_diagonal(sq_dists(coords, coords)).median(-1).values
    return torch.where(tau > 0, tau, torch.ones_like(tau))
