"""Geodesic (geo_class) nearest-prototype inference for class-incremental methods.

GeoProto-style (reconstructed, ``shared/methods/geoproto.md`` section 4): one diffusion map
per class on that class's landmarks, the method's class vector (prototype / coding vector)
Nyström-embedded into it, and ``score_c(z) = -||Psi_c(z) - Psi_c(p_c)||^2 / tau_c +
beta log(mean_j k_c,j(z) + 1e-12)``.

A continual method may not keep samples or per-sample features, so a class's landmarks are
not its features but k-means centroids of them (at most ``landmarks`` per class, each the mean
of at least two features; Lloyd iterations from a seeded draw), computed with the encoder
at the end of the experience that introduces the class and frozen afterwards, like the
class vectors of exemplar-free methods. ``normalise=True`` L2-normalises features,
landmarks and class vectors first (the cosine geometry of NAPA-VQ's and PRD's default
prediction). The state is a scoring strategy of the method's
:class:`~protobench.geometry.prototypes.Prototypes` (``scores(z, "geodesic", head=state)``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from protobench.errors import UserError
from protobench.geometry.diffusion import DiffusionMap
from protobench.geometry.geodesic import GeodesicOptions, class_scores, fit, resolve_m
from protobench.geometry.prototypes import Prototypes


def centroids(x: torch.Tensor, count: int, seed: int, iters: int = 20) -> torch.Tensor:
    """At most ``count`` k-means centroids ``[c, D]`` of ``x [n, D]`` (n >= 2), each the mean
    of at least two rows of ``x`` (smaller clusters are dropped), duplicates removed: the
    k-means prototypes of :meth:`Prototypes.from_features` for one class."""
    x = x.double()
    count = max(1, min(count, len(x) // 2))
    one = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    protos = Prototypes.from_features(x, one, count, seed=seed, iters=iters)
    return torch.unique(protos.vectors[0][protos.counts[0] >= 2], dim=0)


class ContinualGeodesic:
    """Per-class landmark state and geodesic scores for a continual method."""

    def __init__(self, options: dict[str, Any] | None) -> None:
        opts = {"mode": "geo_class", "normalise": True, **(options or {})}
        self.options = GeodesicOptions.parse(opts)
        if self.options.mode != "geo_class":
            raise UserError("continual methods use per-class maps: geodesic mode must be "
                            f"geo_class, got {self.options.mode}")
        self.landmarks: list[torch.Tensor] = []  # one [M_c, D] per seen class (float64)
        self._maps: list[DiffusionMap] = []

    def _prep(self, z: torch.Tensor) -> torch.Tensor:
        z = z.double()
        return F.normalize(z, dim=-1) if self.options.normalise else z

    @torch.no_grad()
    def update(self, encoder: torch.nn.Module, x: Any, y: torch.Tensor,
               classes: tuple[int, ...], device: torch.device, batch: int = 512) -> None:
        """Landmarks of the new ``classes`` (stream labels, appended in order) from the
        eval-mode features of their samples ``x``, ``y``."""
        was = encoder.training
        encoder.eval()
        feats = torch.cat([encoder(x[torch.arange(i, min(i + batch, len(y)))].to(device))
                           .double().cpu() for i in range(0, len(y), batch)])
        encoder.train(was)
        feats, y = self._prep(feats), y.cpu()
        for c in classes:
            fc = feats[y == c]
            if len(fc) < 2:
                raise UserError(f"geodesic geo_class needs at least 2 samples of class {c} to "
                                f"build its diffusion map, got {len(fc)} (K = 1)")
            lm = centroids(fc, self.options.n_landmarks, self.options.seed + c)
            if len(lm) < 2:
                raise UserError(f"class {c}: fewer than 2 distinct landmarks (duplicate "
                                "features); geo_class cannot build its diffusion map")
            self.landmarks.append(lm)
            self._maps.append(fit(lm, self.options))

    def scores(self, z: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """``z [B, D]``, class vectors ``vectors [C, D]`` -> scores ``[B, C]`` (float32)."""
        if len(self._maps) != len(vectors):
            raise UserError(f"geodesic state holds {len(self._maps)} classes, the method "
                            f"{len(vectors)}; was it trained with metric=geodesic?")
        zp, vp = self._prep(z).cpu(), self._prep(vectors).cpu()
        cols = []
        for c, dm in enumerate(self._maps):
            m = resolve_m(self.options, dm, len(vectors))
            cols.append(class_scores(dm, m, vp[c][None, None], zp, self.options.beta)[:, 0])
        return torch.stack(cols, 1).float().to(z.device)

    def prototype_scores(self, protos: Prototypes, queries: torch.Tensor) -> torch.Tensor:
        """The scoring strategy of ``Prototypes.scores(z, "geodesic", head=self)``: the
        method's class vectors are the prototypes' centres ``[C, D]``."""
        return self.scores(queries, protos.centres)

    def state_dict(self) -> dict[str, Any]:
        return {"landmarks": [lm.clone() for lm in self.landmarks]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.landmarks = [lm.clone() for lm in state.get("landmarks", [])]
        self._maps = [fit(lm, self.options) for lm in self.landmarks]


def continual_geodesic(metric: str, options: dict[str, Any] | None) -> ContinualGeodesic | None:
    """The geodesic state of a continual method with ``metric`` (None for ``cosine``)."""
    if metric == "geodesic":
        return ContinualGeodesic(options)
    if metric != "cosine":
        raise UserError(f"unknown metric {metric!r} for nearest-prototype prediction; "
                        "choose cosine or geodesic")
    if options:
        raise UserError("metric_options apply to metric=geodesic only")
    return None
