"""Transductive prototype rectification for few-shot episodes: BD-CSPN and soft k-means.

Both move each episode's class prototypes with the episode's own unlabelled queries (and
nothing else: no other episode, no test-set statistic), so every prediction depends on
the whole query set and the rows go to the ``fewshot-transductive/<dataset>`` board, never
ranked with inductive ones. Features come as NCM's do (:class:`~protobench.methods.ncm.NCM`:
raw inputs or feature files with the ``identity`` backbone, or the encoder of a trained
checkpoint, ``checkpoint=``), optionally centred by the meta-train mean and L2-normalised.

``bd-cspn`` (Liu, Song & Qin, ECCV 2020; card ``fewshot_transductive.md``): the default
is easyfsl's executable form (card section 3), the card's reference: delta = mean of all
supports - mean of all queries is added to the queries; every query gets the hard
pseudo-label of its nearest basic prototype (cosine); the rectified prototype of class c is
the mean of its supports and its pseudo-labelled shifted queries weighted by
``exp(eps * cos(x, P_c))``, normalised per class; queries are classified by cosine to the
rectified prototypes, unshifted. The paper's knobs the card could not pin down are
parameters: ``eps`` (default 1, easyfsl), ``top_z`` (keep only the Z most confident
queries per class; default: all) and ``classify_shifted`` (default false). easyfsl
L2-normalises before the shift, so ``normalise`` defaults to true and ``centre`` to false.

``soft-kmeans`` (Ren et al., ICLR 2018, "ProtoNet + soft k-means"; card section 4.2): with
prototypes p_c = support means, z_jc = softmax_c(-||q_j - p_c||^2) and
p~_c = (sum_{i in c} s_i + sum_j z_jc q_j) / (K + sum_j z_jc); ``steps`` refinements
(default 1, the paper's test-time setting; 0 is ProtoNet), then the nearest refined
prototype in squared euclidean distance. Raw features by default (no centring, no
normalisation), as in the paper.

HCT (the card's section 4) is not implemented: its update rules are not available.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from protobench.errors import UserError
from protobench.methods.base import register_method
from protobench.methods.ncm import NCM


def bd_cspn(support: torch.Tensor, query: torch.Tensor, eps: float = 1.0,
            top_z: int | None = None, classify_shifted: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [e, M, N], rectified prototypes [e, N, D])`` for ``support [e, N, K, D]``
    and ``query [e, M, D]`` (see the module docstring)."""
    e, n, k, _ = support.shape
    basic = F.normalize(support.mean(2), dim=-1)  # cosine to the basic prototypes
    delta = support.flatten(1, 2).mean(1, keepdim=True) - query.mean(1, keepdim=True)
    shifted = query + delta
    a_s = torch.exp(eps * (F.normalize(support, dim=-1) * basic.unsqueeze(2)).sum(-1))
    a_q = torch.exp(eps * F.normalize(shifted, dim=-1) @ basic.transpose(1, 2))  # [e, M, N]
    mask = F.one_hot(a_q.argmax(-1), n).to(a_q.dtype)  # hard pseudo-labels
    if top_z is not None:  # per class, only its Z most confident pseudo-labelled queries
        ranked = (a_q * mask).masked_fill(mask == 0, -1.0)
        keep = ranked.argsort(dim=1, descending=True).argsort(dim=1) < top_z
        mask = mask * keep.to(mask.dtype)
    w_q = a_q * mask
    total = a_s.sum(-1) + w_q.sum(1)  # [e, N]
    protos = ((a_s.unsqueeze(-1) * support).sum(2) + w_q.transpose(1, 2) @ shifted) \
        / total.unsqueeze(-1)
    scored = shifted if classify_shifted else query
    logits = F.normalize(scored, dim=-1) @ F.normalize(protos, dim=-1).transpose(1, 2)
    return logits, protos


def soft_kmeans(support: torch.Tensor, query: torch.Tensor, steps: int = 1
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(-squared distances [e, M, N], refined prototypes [e, N, D])`` after ``steps``
    soft k-means refinements of the support means (see the module docstring)."""
    k = support.shape[2]
    sums = support.sum(2)
    protos = sums / k
    for _ in range(steps):
        z = torch.softmax(-torch.cdist(query, protos) ** 2, dim=-1)  # [e, M, N]
        protos = (sums + z.transpose(1, 2) @ query) / (k + z.sum(1)).unsqueeze(-1)
    return -torch.cdist(query, protos) ** 2, protos


class _Transductive(NCM):
    """NCM's features (backbone or checkpoint, centring, normalisation); episodes scored
    by the method's own rule on the whole query set."""

    transductive = True
    scores_episodes = True
    episode_chunk = 256
    job_options = ("backbone",)

    def _store(self, backbone: str, checkpoint: str, centre: bool, normalise: bool) -> None:
        self.backbone = backbone
        self.checkpoint = checkpoint
        self.centre = centre
        self.normalise = normalise
        self.metric_options = None
        self.geodesic = None
        self.encoder = None
        self.in_shape = None
        self.mean = None


@register_method("bd-cspn")
class BDCSPN(_Transductive):
    """Prototype rectification: query shift + pseudo-labelled, cosine-weighted prototypes."""

    distances = ("cosine",)
    summary = ("BD-CSPN (Liu et al. 2020) prototype rectification, transductive: "
               "easyfsl's form by default")

    def __init__(self, backbone: str = "identity", metric: str = "cosine", centre: bool = False,
                 normalise: bool = True, checkpoint: str = "", eps: float = 1.0,
                 top_z: int | None = None, classify_shifted: bool = False) -> None:
        self._store(backbone, checkpoint, centre, normalise)
        self.metric = metric
        self.eps = eps
        self.top_z = top_z
        self.classify_shifted = classify_shifted
        if metric != "cosine":
            raise UserError(f"bd-cspn scores by cosine similarity; got metric={metric!r}")
        if top_z is not None and int(top_z) < 1:
            raise UserError(f"bd-cspn top_z must be at least 1 (or unset: all), got {top_z}")

    def score_episodes(self, support: torch.Tensor, query: torch.Tensor, classes: torch.Tensor,
                       episode_ids: torch.Tensor) -> torch.Tensor:
        return bd_cspn(support.double(), query.double(), float(self.eps),
                       None if self.top_z is None else int(self.top_z),
                       bool(self.classify_shifted))[0]


@register_method("soft-kmeans")
class SoftKMeans(_Transductive):
    """ProtoNet prototypes refined by soft k-means over the episode's queries."""

    distances = ("sqeuclidean",)
    summary = "ProtoNet + soft k-means prototype refinement (Ren et al. 2018), transductive"

    def __init__(self, backbone: str = "identity", metric: str = "sqeuclidean",
                 centre: bool = False, normalise: bool = False, checkpoint: str = "",
                 steps: int = 1) -> None:
        self._store(backbone, checkpoint, centre, normalise)
        self.metric = metric
        self.steps = steps
        if metric != "sqeuclidean":
            raise UserError(f"soft-kmeans uses squared euclidean distance; got "
                            f"metric={metric!r}")
        if int(steps) < 0:
            raise UserError(f"soft-kmeans steps must be 0 or more, got {steps}")

    def score_episodes(self, support: torch.Tensor, query: torch.Tensor, classes: torch.Tensor,
                       episode_ids: torch.Tensor) -> torch.Tensor:
        return soft_kmeans(support.double(), query.double(), int(self.steps))[0]
