"""``mahalanobis``: class-conditional Gaussians with one shared covariance (Lee et al. 2018;
OpenOOD ``mds`` postprocessor).

mu_c = mean of the ID training features of class c; Sigma = covariance of the
class-centred features with 1/N (sklearn ``EmpiricalCovariance``, as OpenOOD), inverted
once at fit time (pseudo-inverse, float64). score(x) = max_c -(h - mu_c)^T Sigma^-1
(h - mu_c), on features as the network returns them (no normalisation, no input
perturbation). Evaluated in matmul form in batches: no ``[B, C, D]`` tensor.
"""

from __future__ import annotations

import torch

from protobench.errors import UserError
from protobench.ood.scores.base import OODScore, check_features, register_score


def class_means(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[C, D]`` means of the classes present in ``labels`` (``C`` = max label + 1)."""
    c = int(labels.max()) + 1
    sums = torch.zeros(c, x.shape[1], dtype=x.dtype).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=c).to(x.dtype)
    if (counts == 0).any():
        raise UserError("every class must have training samples for the mahalanobis score")
    return sums / counts[:, None]


@register_score("mahalanobis")
class Mahalanobis(OODScore):
    needs_labels = True
    summary = "max_c -Mahalanobis distance to class means, shared covariance"

    def __init__(self, batch_size: int = 4096) -> None:
        self.batch_size = batch_size
        self.means: torch.Tensor | None = None
        self.precision: torch.Tensor | None = None

    def fit(self, train_features: torch.Tensor, train_labels: torch.Tensor | None = None,
            train_logits: torch.Tensor | None = None) -> Mahalanobis:
        if train_labels is None:
            raise UserError("the mahalanobis score needs ID training labels")
        x = check_features(train_features, "ID training features").double()
        self.means = class_means(x, train_labels)
        centred = x - self.means[train_labels]
        cov = centred.T @ centred / len(x)
        self.precision = torch.linalg.pinv(cov, hermitian=True)
        return self

    def score(self, features: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        if self.means is None or self.precision is None:
            raise RuntimeError("mahalanobis scores only after fit")
        p, mu = self.precision, self.means
        mu_p = mu @ p  # [C, D]
        mu_term = (mu_p * mu).sum(1)  # [C]
        out = []
        for s in range(0, len(features), int(self.batch_size)):
            h = features[s:s + int(self.batch_size)].double()
            d = (h @ p * h).sum(1, keepdim=True) - 2 * h @ mu_p.T + mu_term  # [b, C]
            out.append(-d.amin(dim=1))
        return torch.cat(out).float() if out else torch.empty(0)
