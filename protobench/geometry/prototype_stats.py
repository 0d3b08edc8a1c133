"""The statistics behind :class:`~protobench.geometry.prototypes.Prototypes`: seeded k-means
within a class, within-prototype scatter matrices, their pairwise merge and Mahalanobis
distances in matmul form. Pure functions on float64 tensors."""

from __future__ import annotations

import torch

from protobench.geometry.diffusion import sq_dists


def kmeans(x: torch.Tensor, m: int, g: torch.Generator, iters: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(slot [n], centres [m, D])`` of rows ``x [n, D]`` after ``iters`` Lloyd steps from
    ``m`` rows drawn by ``g`` (cycled when ``n < m``); an empty cluster keeps its centre;
    the slots are the final assignment."""
    draw = torch.randperm(len(x), generator=g)[:m].to(x.device)
    c = x[draw[torch.arange(m, device=x.device) % len(draw)]]
    for _ in range(iters):
        assign = sq_dists(x, c).argmin(1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        n = torch.bincount(assign, minlength=len(c)).to(x)
        c = torch.where(n[:, None] > 0, sums / n.clamp_min(1)[:, None], c)
    return sq_dists(x, c).argmin(1), c


def within_scatter(centred: torch.Tensor, rows: torch.Tensor,
                   num_classes: int | None = None) -> torch.Tensor:
    """``sum_i d_i d_i^T`` of deviations ``centred [n, D]`` from each row's own prototype:
    ``[D, D]`` over all rows, or ``[C, D, D]`` per class ``rows [n]`` (``num_classes`` C)."""
    if num_classes is None:
        return centred.T @ centred
    out = centred.new_zeros(num_classes, centred.shape[1], centred.shape[1])
    for c in torch.unique(rows).tolist():
        cc = centred[rows == c]
        out[c] = cc.T @ cc
    return out


def chan_merge(scatter_a: torch.Tensor, na: torch.Tensor, ma: torch.Tensor,
               scatter_b: torch.Tensor, nb: torch.Tensor, mb: torch.Tensor) -> torch.Tensor:
    """Chan et al.'s pairwise update of scatter matrices (``[D, D]`` or ``[C, D, D]``) with
    counts ``[C, M]`` and means ``[C, M, D]``: ``S = S_a + S_b + sum n_a n_b / n (mu_a -
    mu_b)(mu_a - mu_b)^T`` over the prototypes (of each class for ``[C, D, D]``)."""
    out = scatter_a + scatter_b
    if not bool((na > 0).any()) or not bool((nb > 0).any()):
        return out  # one side empty: nothing between the means
    w = (na * nb).to(torch.float64) / (na + nb).clamp(min=1).to(torch.float64)
    delta = ma - mb
    if out.dim() == 2:
        return out + (delta * w[..., None]).flatten(0, 1).T @ delta.flatten(0, 1)
    return out + torch.einsum("cmd,cme->cde", delta * w[..., None], delta)


def sq_mahalanobis(h: torch.Tensor, mu: torch.Tensor, precision: torch.Tensor,
                   per_class: int = 1) -> torch.Tensor:
    """``(h - mu_k)^T P (h - mu_k)`` ``[Q, K]`` for ``h [Q, D]``, ``mu [K, D]`` (``K = C*M``)
    and a shared ``P [D, D]`` or per-class ``P [C, D, D]`` (``per_class`` rows per class), in
    matmul form: no ``[Q, K, D]`` difference tensor (per class: ``[K, Q, D]``)."""
    if precision.dim() == 2:
        mu_p = mu @ precision
        return (h @ precision * h).sum(1, keepdim=True) - 2 * h @ mu_p.T + (mu_p * mu).sum(1)
    pk = precision.repeat_interleave(per_class, 0)  # [K, D, D]
    mu_p = torch.einsum("kd,kde->ke", mu, pk)
    h_p = torch.einsum("qd,kde->kqe", h, pk)
    return ((h_p * h).sum(-1) - 2 * mu_p @ h.T + (mu_p * mu).sum(1)[:, None]).T
