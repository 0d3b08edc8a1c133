"""PALM's training pieces: Sinkhorn assignment, top-k pruning, EMA prototypes, losses.

Pure functions in the form of the reference code (``jeff024/PALM`` ``util/loss_functions.py``,
card ``shared/methods/palm.md`` sections 3-4), plus :class:`PALMCriterion`, which holds the
prototype buffer ``P [C*M, D]`` (unit rows, interleaved: row ``j`` belongs to class
``j mod C``) and runs one training step's update and loss::

    W = sinkhorn(sg(z) @ P.T);  U, T = palm_assign(W, A, k)
    P' = normalize(alpha P + (1 - alpha) U.T @ z)           # graph to z kept
    w = loss_weights(sinkhorn(sg(z) @ sg(P').T), A, T)      # same index set T
    L = mle_loss(z, P', w, tau) + lambda proto_contrastive_loss(P', labels, tau_p)

``L_pc`` reaches the encoder only through the ``(1 - alpha)`` term of the EMA step.
One numerical departure: :func:`sinkhorn` subtracts the global maximum of ``S / epsilon``
before the exponential. The plan is divided by its total right after, so the result is
identical; it only removes the overflow the reference guards against with a fallback.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def prototype_labels(num_classes: int, per_class: int,
                     device: torch.device | None = None) -> torch.Tensor:
    """``[C*M]`` int64 class of each prototype row: ``j mod C`` (interleaved layout)."""
    return torch.arange(num_classes, device=device).repeat(per_class)


def class_mask(y: torch.Tensor, proto_labels: torch.Tensor) -> torch.Tensor:
    """``[N, C*M]`` float: 1 where prototype ``j`` belongs to sample ``n``'s class."""
    return (y[:, None] == proto_labels[None, :]).float()


def init_prototypes(num_prototypes: int, dim: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """``[K, D]``: uniform ``[0, 1)`` entries, then L2-normalised rows (positive orthant)."""
    return F.normalize(torch.rand(num_prototypes, dim, generator=generator), dim=1)


def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Balanced soft assignment ``[N, K]`` of ``N`` samples to ``K`` prototypes.

    ``scores [N, K]`` (similarities, no gradient is taken). ``Q = exp(S / eps)`` as
    ``[K, N]``, divided by its sum; then ``iterations`` times: rows (prototypes) to sum
    ``1/K``, columns (samples) to sum ``1/N``; returns ``(N Q).T``, whose rows sum to 1.
    """
    s = scores.detach().float() / epsilon
    q = torch.exp(s - s.max()).T  # [K, N]; the global shift cancels in the next line
    q = q / q.sum()
    k, n = q.shape
    for _ in range(iterations):
        q = F.normalize(q, p=1, dim=1) / k
        q = F.normalize(q, p=1, dim=0) / n
    return (q * n).T


def palm_assign(weights: torch.Tensor, mask: torch.Tensor, k: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class mask + top-k pruning + row then column L1 normalisation.

    ``weights [N, K]`` (Sinkhorn plan), ``mask [N, K]`` (allowed prototypes), ``k`` > 0.
    Returns ``(U [N, K], T [N, k])``: ``T`` the ``k`` allowed columns of largest weight
    per row (never a masked column), ``U = col_l1(row_l1(onehot(T) * mask * weights))``,
    so every column with any weight sums to 1 and empty columns stay 0.
    """
    masked = mask * weights
    ranked = masked.masked_fill(mask <= 0, float("-inf"))
    index = torch.topk(ranked, k, dim=1).indices
    keep = torch.zeros_like(masked).scatter_(1, index, 1.0)
    update = F.normalize(F.normalize(keep * masked, p=1, dim=1), p=1, dim=0)
    return update, index


def loss_weights(weights: torch.Tensor, mask: torch.Tensor, index: torch.Tensor
                 ) -> torch.Tensor:
    """``[N, K]`` ``row_l1(onehot(index) * mask * weights)``: the MLE targets on the index
    set ``index [N, k]`` chosen by :func:`palm_assign` (the update's set, not a new one)."""
    keep = torch.zeros_like(weights).scatter_(1, index, 1.0)
    return F.normalize(keep * mask * weights, p=1, dim=1)


def ema_update(prototypes: torch.Tensor, z: torch.Tensor, update: torch.Tensor,
               alpha: float) -> torch.Tensor:
    """``normalize_rows(alpha P + (1 - alpha) U.T @ z)`` ``[K, D]``.

    ``prototypes [K, D]`` (a buffer), ``z [N, D]`` with its graph, ``update [N, K]``.
    The result keeps the graph to ``z`` (scaled by ``1 - alpha``); rows whose column of
    ``update`` is zero become ``normalize(alpha p) = p``.
    """
    return F.normalize(alpha * prototypes + (1 - alpha) * (update.T @ z), dim=1)


def mle_loss(z: torch.Tensor, prototypes: torch.Tensor, weights: torch.Tensor,
             temperature: float = 0.1) -> torch.Tensor:
    """Code form: ``-(1/N) sum_n [sum_j w_nj l_nj - log sum_j exp(l_nj)]``,
    ``l = z @ sg(P).T / tau``; ``z [N, D]``, ``prototypes [K, D]``, ``weights [N, K]``."""
    logits = z @ prototypes.detach().T / temperature
    return -((weights * logits).sum(1) - torch.logsumexp(logits, dim=1)).mean()


def proto_contrastive_loss(prototypes: torch.Tensor, labels: torch.Tensor,
                           temperature: float = 0.5) -> torch.Tensor:
    """Code form (SupCon "L_out") on the prototypes ``[K, D]`` with classes ``labels [K]``.

    ``a_ij = p_i.p_j / tau_p - sg(max_j' p_i.p_j' / tau_p)`` (rows re-normalised),
    ``L = -(1/K) sum_i [mean_{j in Pos(i)} a_ij - log sum_{j != i} exp(a_ij)]``, where
    ``Pos(i)`` = other prototypes of ``i``'s class; an empty ``Pos(i)`` contributes 0.
    """
    p = F.normalize(prototypes, dim=1)
    sim = p @ p.T / temperature
    logits = sim - sim.max(dim=1, keepdim=True).values.detach()
    others = ~torch.eye(len(p), dtype=torch.bool, device=p.device)
    pos = (labels[:, None] == labels[None, :]) & others
    pos_term = (F.normalize(pos.float(), p=1, dim=1) * logits).sum(1)
    neg_term = torch.log((others.float() * torch.exp(logits)).sum(1))
    return -(pos_term - neg_term).mean()


class PALMCriterion(nn.Module):
    """Prototype buffer ``P`` and PALM's step (module docstring).

    ``num_classes`` C, ``per_class`` M (prototypes ``C*M``); ``labelled=False`` drops the
    class mask (every sample may use any prototype, top-k over all of them).
    ``proto_labels`` override the classes the contrastive loss sees (default ``j mod C``).
    """

    def __init__(self, num_classes: int, per_class: int, dim: int, top_k: int = 5,
                 alpha: float = 0.999, temperature: float = 0.1,
                 proto_temperature: float = 0.5, proto_weight: float = 1.0,
                 epsilon: float = 0.05, iterations: int = 3, labelled: bool = True,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.num_classes, self.per_class = num_classes, per_class
        total = num_classes * per_class
        self.top_k = min(top_k, per_class if labelled else total) if top_k > 0 else (
            per_class if labelled else total)
        self.alpha, self.temperature = alpha, temperature
        self.proto_temperature, self.proto_weight = proto_temperature, proto_weight
        self.epsilon, self.iterations, self.labelled = epsilon, iterations, labelled
        self.register_buffer("protos", init_prototypes(total, dim, generator))
        self.register_buffer("labels", prototype_labels(num_classes, per_class))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``z [N, D]`` unit rows (all views stacked), ``y [N]`` (ignored when unlabelled).

        Updates the buffer (detached) and returns ``(loss, {"mle", "pc"})``.
        """
        z = z.float()
        labels = self.labels.to(z.device)
        protos = self.protos.to(z.device)
        if self.labelled:
            if y is None:
                raise ValueError("labelled PALM needs labels y")
            mask = class_mask(y, labels)
        else:
            mask = torch.ones(len(z), len(protos), device=z.device)
        update, index = palm_assign(sinkhorn(z.detach() @ protos.T, self.epsilon,
                                             self.iterations), mask, self.top_k)
        new = ema_update(protos, z, update, self.alpha)
        weights = loss_weights(sinkhorn(z.detach() @ new.detach().T, self.epsilon,
                                        self.iterations), mask, index)
        l_mle = mle_loss(z, new, weights, self.temperature)
        l_pc = (proto_contrastive_loss(new, labels, self.proto_temperature)
                if self.proto_weight > 0 else z.new_zeros(()))
        self.protos = new.detach()
        return l_mle + self.proto_weight * l_pc, {"mle": l_mle.detach(), "pc": l_pc.detach()}
