"""``mahalanobis``: class-conditional Gaussians with one shared covariance (Lee et al. 2018;
OpenOOD ``mds`` postprocessor).

mu_c = mean of the ID training features of class c; Sigma = covariance of the
class-centred features with 1/N (sklearn ``EmpiricalCovariance``, as OpenOOD), inverted
once at fit time (pseudo-inverse, float64). score(x) = max_c -(h - mu_c)^T Sigma^-1
(h - mu_c), on features as the network returns them (no normalisation, no input
perturbation). Means, covariance and precision are one
:class:`~protobench.geometry.Prototypes` (``from_features(x, y, cov="shared")``,
``scores(h, "mahalanobis")``): matmul form in batches, no ``[B, C, D]`` tensor.
"""

from __future__ import annotations

import torch

from protobench.errors import UserError
from protobench.geometry.prototypes import Prototypes
from protobench.ood.scores.base import OODScore, check_features, register_score


@register_score("mahalanobis")
class Mahalanobis(OODScore):
    needs_labels = True
    summary = "max_c -Mahalanobis distance to class means, shared covariance"

    def __init__(self, batch_size: int = 4096) -> None:
        self.batch_size = batch_size
        self.protos: Prototypes | None = None

    def fit(self, train_features: torch.Tensor, train_labels: torch.Tensor | None = None,
            train_logits: torch.Tensor | None = None) -> Mahalanobis:
        if train_labels is None:
            raise UserError("the mahalanobis score needs ID training labels")
        x = check_features(train_features, "ID training features").double()
        self.protos = Prototypes.from_features(x, train_labels, cov="shared")
        if (self.protos.counts == 0).any():
            raise UserError("every class must have training samples for the mahalanobis score")
        self.protos.precision()  # inverted once, here
        return self

    def score(self, features: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        if self.protos is None:
            raise RuntimeError("mahalanobis scores only after fit")
        out = [self.protos.scores(features[s:s + int(self.batch_size)].double(), "mahalanobis")
               .amax(dim=1) for s in range(0, len(features), int(self.batch_size))]
        return torch.cat(out).float() if out else torch.empty(0)
