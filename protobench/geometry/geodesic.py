"""GeoProto-style geodesic prototype matching: options and the three few-shot modes.

A reconstruction after ``shared/methods/geoproto.md`` (section 5; the paper's method section
was not available), never a reproduction. Diffusion coordinates come from
:mod:`protobench.geometry.diffusion`; prototypes and logits:

* ``geo_pool`` (inductive, default): one diffusion map on ``M`` landmarks drawn from an
  unlabelled pool declared by ``pool``: ``train`` = the meta-train split (base classes, the
  default) or ``test`` = the evaluated split without labels. Supports and queries are
  Nyström-embedded one by one, ``c_k`` = mean support coordinates,
  ``logit = -||Psi(x) - c_k||^2 / tau``. Because each point is embedded independently, the
  evaluation embeds the features once and reuses the batched euclidean evaluator.
* ``geo_trans`` (transductive): one map per episode on support + query; same head. Rows go to
  the board ``fewshot-transductive/<dataset>``, never mixed with inductive rows.
* ``geo_class`` (per-class maps, for many-shot and continual use): class ``c``'s map is built on
  its own landmarks (the episode's supports), prototypes are the supports' coordinates
  (nearest of them), ``score = -min_p ||Psi_c(z) - Psi_c(p)||^2 / tau_c + beta log(mean_j
  k_c,j(z) + 1e-12)`` (the membership term, without which per-class distances collapse).

``m`` (number of coordinates) defaults to the episode's ways, clipped to ``M - 1`` (card
section 5); ``m=delta`` applies the delta rule. Training (ProtoNet episodes): the geo_pool
landmarks are re-embedded from the meta-train split every ``refresh`` episodes under
``no_grad`` (BatchNorm in train mode, its running statistics restored) and the map is
detached; gradients flow into the encoder through the Nyström kernel rows only. Diffusion
coordinates are bounded (convex hull of the landmarks' coordinates), so ``-d2/tau`` logits
have a small range: train with a temperature below 1 (ProtoNet's ``temperature``, e.g. 0.1).

Non-positive eigenvalues carry no coordinates (dropped, see :mod:`~protobench.geometry.diffusion`),
so a non-integer ``t`` with a local-scaling kernel stays finite; coordinates and episode
scores are checked finite before any argmax (a UserError, never a silent NaN accuracy).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from protobench.errors import UserError
from protobench.geometry.diffusion import (
    BANDWIDTHS,
    DiffusionMap,
    delta_rule,
    distance_scale,
    fit_diffusion_map,
    nystrom,
    sq_dists,
)
from protobench.geometry.prototypes import Prototypes
from protobench.utils import counter_seed

MODES = ("geo_pool", "geo_trans", "geo_class")
POOLS = ("train", "test")
SELECT = ("random", "fps")


@dataclass(frozen=True)
class GeodesicOptions:
    """Options of ``--metric geodesic`` (``--metric-option key=value`` / ``metric_options``)."""

    mode: str = "geo_pool"
    pool: str = "train"
    landmarks: int | None = None  # geo_pool: 1000; geo_class (continual): 32 per class
    select: str = "random"
    bandwidth: str | float = "knn"
    k: int = 7
    alpha: float = 1.0
    t: float = 8.0
    m: int | str | None = None  # None: "ways" (geo_pool/trans), 5 (geo_class)
    delta: float = 0.1
    beta: float = 1.0
    refresh: int = 100
    normalise: bool = False
    seed: int = 0

    @classmethod
    def parse(cls, options: dict[str, Any] | None) -> GeodesicOptions:
        options = dict(options or {})
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise UserError(f"unknown geodesic option(s) {', '.join(unknown)}; "
                            f"choose from: {', '.join(names)}")
        o = cls(**options)
        for value, allowed, key in ((o.mode, MODES, "mode"), (o.pool, POOLS, "pool"),
                                    (o.select, SELECT, "select")):
            if value not in allowed:
                raise UserError(f"geodesic {key}={value!r}; choose one of {', '.join(allowed)}")
        if isinstance(o.bandwidth, str) and o.bandwidth not in BANDWIDTHS:
            raise UserError(f"geodesic bandwidth={o.bandwidth!r}; choose one of "
                            f"{', '.join(BANDWIDTHS)} or a positive number")
        if isinstance(o.m, str) and o.m not in ("ways", "delta"):
            raise UserError(f"geodesic m={o.m!r}; give a positive integer, 'ways' or 'delta'")
        for key in ("k", "refresh", "landmarks"):
            v = getattr(o, key)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise UserError(f"geodesic {key} must be a positive integer, got {v!r}")
        if o.t < 1:
            raise UserError(f"geodesic t must be >= 1, got {o.t}")
        return o

    @property
    def n_landmarks(self) -> int:
        return self.landmarks or (32 if self.mode == "geo_class" else 1000)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit(landmarks: torch.Tensor, o: GeodesicOptions, ways: int | None = None) -> DiffusionMap:
    """The map of ``landmarks`` under ``o``; with ``ways`` known and ``m`` not the delta rule,
    only the eigenpairs that ``m`` needs are computed."""
    n_eigs = None
    if ways is not None and o.m != "delta":
        n_eigs = o.m if isinstance(o.m, int) else (5 if o.mode == "geo_class" else ways)
    return fit_diffusion_map(landmarks, o.alpha, o.bandwidth, o.k, o.t, n_eigs)


def resolve_m(o: GeodesicOptions, dm: DiffusionMap, ways: int) -> int:
    """Number of coordinates: an explicit ``m`` (checked), the delta rule, or ``ways`` /
    5 (geo_class) clipped to ``M - 1``."""
    if isinstance(o.m, int):
        return dm.check_m(o.m)
    if o.m == "delta":
        return min(delta_rule(dm.lam, o.t, o.delta), dm.n - 1)
    return max(1, min(5 if o.mode == "geo_class" else ways, dm.n - 1))


def select_landmarks(features: torch.Tensor, count: int, how: str = "random",
                     seed: int = 0) -> torch.Tensor:
    """``count`` distinct rows of ``features [n, D]``: seeded random or farthest-point."""
    x = torch.unique(features.detach(), dim=0)
    if len(x) <= count:
        return x
    g = torch.Generator().manual_seed(seed)
    if how == "random":
        return x[torch.randperm(len(x), generator=g)[:count].to(x.device)]
    chosen = [int(torch.randint(len(x), (1,), generator=g))]
    dist = sq_dists(x, x[chosen[-1]][None]).squeeze(1)
    for _ in range(count - 1):
        chosen.append(int(dist.argmax()))
        dist = torch.minimum(dist, sq_dists(x, x[chosen[-1]][None]).squeeze(1))
    return x[chosen]


def pool_logits(dm: DiffusionMap, m: int, tau: torch.Tensor, support: torch.Tensor,
                query: torch.Tensor) -> torch.Tensor:
    """geo_pool head: ``support [..., N, K, D]``, ``query [..., B, D]`` -> ``[..., B, N]``."""
    protos = nystrom(support.flatten(-3, -2), dm, m).unflatten(-2, support.shape[-3:-1])
    return -sq_dists(nystrom(query, dm, m), protos.mean(-2)) / tau.to(query)


def trans_logits(o: GeodesicOptions, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """geo_trans head: one map per episode on support + query ``[e, N*K + B, D]`` (detached)."""
    e, N, K, D = support.shape
    pts = torch.cat([support.reshape(e, N * K, D), query], 1)
    dm = fit(pts, o)
    m = resolve_m(o, dm, N)
    tau = distance_scale(dm.coords(m))[:, None, None]
    return pool_logits(dm, m, tau, support, query)


def class_scores(dm: DiffusionMap, m: int, protos: torch.Tensor, z: torch.Tensor,
                 beta: float) -> torch.Tensor:
    """Per-class maps ``dm`` (batch ``[..., C]``), prototypes ``protos [..., C, P, D]``,
    points ``z [..., B, D]`` -> scores ``[..., B, C]`` = ``-min_p d2 / tau_c + beta g_c(z)``."""
    zc = z.unsqueeze(-3).expand(*protos.shape[:-2], *z.shape[-2:])  # [..., C, B, D]
    e = nystrom(zc, dm, m)
    ep = nystrom(protos, dm, m)
    tau = distance_scale(dm.coords(m))[..., None]
    d2 = sq_dists(e, ep).amin(-1) / tau.to(e)  # [..., C, B]
    score = -d2 + beta * dm.log_membership(zc.to(torch.float64)).to(e)
    return score.transpose(-1, -2)


def class_logits(o: GeodesicOptions, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """geo_class head for episodes: class maps on the supports ``[e, N, K, D]`` (K >= 2)."""
    if support.shape[-2] < 2:
        raise UserError(f"geo_class builds one diffusion map per class from its supports and "
                        f"needs at least 2 per class (got K={support.shape[-2]}); use "
                        "mode=geo_pool or geo_trans for 1-shot")
    dm = fit(support, o)
    return class_scores(dm, resolve_m(o, dm, support.shape[-3]), support, query, o.beta)


class GeodesicHead:
    """What a few-shot method holds for ``metric="geodesic"``: options, the geo_pool
    landmarks and (in training) the current detached map. It is the scoring strategy of
    the support prototypes (``Prototypes.scores(q, "geodesic", head=head)``), so neither the
    methods nor the evaluators carry geodesic code of their own."""

    def __init__(self, options: dict[str, Any] | None) -> None:
        self.options = GeodesicOptions.parse(options)
        self.pool: torch.Tensor | None = None  # geo_pool landmarks [M, D]
        self._train: tuple[DiffusionMap, int, torch.Tensor] | None = None

    @property
    def transductive(self) -> bool:
        return self.options.mode == "geo_trans"

    @property
    def task(self) -> str:
        """Leaderboard task: transductive rows live on their own board."""
        return "fewshot-transductive" if self.transductive else "fewshot"

    @property
    def needs_train_pool(self) -> bool:
        return self.options.mode == "geo_pool" and self.options.pool == "train"

    def set_pool(self, features: torch.Tensor) -> None:
        """Draw the geo_pool landmarks from unlabelled ``features [n, D]``."""
        o = self.options
        self.pool = select_landmarks(features, o.n_landmarks, o.select, o.seed).cpu()

    def embed(self, features: torch.Tensor, ways: int, chunk: int = 4096) -> torch.Tensor:
        """geo_pool: diffusion coordinates ``[n, m]`` of ``features [n, D]`` scaled by
        ``1/sqrt(tau)`` (float32), the euclidean evaluator's input."""
        if self.pool is None:
            if self.options.pool == "train":
                raise UserError("geo_pool with pool=train needs landmarks from the meta-train "
                                "split; give one (--train-dataset) or use pool=test")
            self.set_pool(features)
        assert self.pool is not None
        dm = fit(self.pool.to(features.device), self.options, ways)
        m = resolve_m(self.options, dm, ways)
        scale = distance_scale(dm.coords(m)).rsqrt()
        parts = [nystrom(features[i:i + chunk].double(), dm, m) * scale
                 for i in range(0, len(features), chunk)]
        return torch.cat(parts).float()

    @property
    def pointwise(self) -> bool:
        """geo_pool embeds every point on its own: an evaluation embeds the features once
        (:meth:`embed`) and scores them as squared euclidean distances to support means."""
        return self.options.mode == "geo_pool"

    def episode_scores(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Scores ``[e, B, N]`` (float64) of ``query [e, B, D]`` for ``support [e, N, K, D]`` in
        the per-episode modes (geo_trans, geo_class)."""
        if self.options.mode == "geo_trans":
            return trans_logits(self.options, support.double(), query.double())
        if self.options.mode == "geo_class":
            return class_logits(self.options, support.double(), query.double())
        raise UserError("episode_scores serves geo_trans and geo_class; geo_pool embeds once")

    def episode_bytes(self, ways: int, samples: int, dim: int) -> int:
        """float64 working set of one episode of ``ways`` classes with ``samples`` rows each
        in the per-episode modes (geo_class expands the queries once per class)."""
        return ways * samples * dim * 8 * (ways if self.options.mode == "geo_class" else 4)

    def prototype_scores(self, protos: Prototypes, queries: torch.Tensor) -> torch.Tensor:
        """The scoring strategy of ``Prototypes.scores(q, "geodesic", head=self)``: logits
        ``[..., B, N]`` of ``queries [..., B, D]`` from the support rows the prototypes keep
        (``[..., N, K, D]``, :meth:`Prototypes.from_support`). geo_pool: the training map of
        the last :meth:`refresh` (differentiable); geo_trans, geo_class: per-episode maps
        (detached, float64)."""
        support = protos.support
        if support is None:
            raise UserError("geodesic scores embed the support rows: build the prototypes "
                            "with Prototypes.from_support")
        if self.options.mode == "geo_pool":
            if self._train is None:
                raise UserError("geo_pool training needs refresh() before the first episode")
            dm, m, tau = self._train
            return pool_logits(dm, m, tau, support, queries)
        if support.dim() == 3:  # one episode
            return self.episode_scores(support[None], queries[None])[0]
        return self.episode_scores(support, queries)

    # -- training -------------------------------------------------------------------------
    def refresh(self, landmark_features: torch.Tensor, ways: int) -> None:
        """Fit the detached training map on ``landmark_features [M, D]`` (geo_pool)."""
        o = self.options
        dm = fit(torch.unique(landmark_features.detach(), dim=0), o, ways)
        m = resolve_m(o, dm, ways)
        self._train = (dm, m, distance_scale(dm.coords(m)))

    def logits(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, N]`` for one episode ``support [N, K, D]``, ``query [B, D]``:
        :meth:`prototype_scores` of its support prototypes (per-episode modes in ``query``'s
        dtype)."""
        scores = self.prototype_scores(Prototypes.from_support(support), query)
        return scores if self.pointwise else scores.to(query.dtype)


def check_metric_options(metric: str, options: dict[str, Any] | None) -> GeodesicHead | None:
    """A method's geodesic head (``metric == "geodesic"``), or None; options given to another
    metric are an error."""
    if metric == "geodesic":
        return GeodesicHead(options)
    if options:
        raise UserError(f"metric options apply to --metric geodesic, not {metric!r}")
    return None


def refresh_pool(head: GeodesicHead, encoder: torch.nn.Module, train: Any, step: int,
                 ways: int, device: torch.device) -> None:
    """Training (geo_pool): every ``refresh`` episodes re-embed ``landmarks`` random samples of
    ``train`` with the current encoder (no_grad, BatchNorm in train mode with its running
    statistics restored afterwards) and refit the detached map."""
    o = head.options
    if o.mode != "geo_pool" or step % o.refresh:
        return
    g = torch.Generator().manual_seed(counter_seed(o.seed, step))
    idx = torch.randperm(len(train), generator=g)[:o.n_landmarks]
    buffers = [(b, b.detach().clone()) for b in encoder.buffers()]
    with torch.no_grad():
        z = encoder(train.get(idx).to(device)).float()
    for b, saved in buffers:
        b.copy_(saved)
    head.refresh(z, ways)
