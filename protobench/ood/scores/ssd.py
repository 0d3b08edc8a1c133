"""``ssd``: PALM's test-time score ("SSD+", ``util/evaluations/mahalanobis.py`` L32-66;
card ``palm.md`` section 5), faithful including its quirk.

1. h <- h / (||h|| + 1e-10);  2. mu, sigma = per-dimension mean and std (ddof 0) of the
normalised training features;  3. u = (h - mu) / (sigma + 1e-10), Sigma = cov(u_train)
with 1/N, S = pinv(Sigma);  4. score(x) = -(u(x) - mu)^T S (u(x) - mu).

The quirk: step 4 subtracts mu (the mean of the *unstandardised* normalised features) from
the *standardised* u, whose training mean is already 0. The clean version is
``mahalanobis-centred``. Class-agnostic: no labels, no prototypes, one Gaussian for the
whole ID training set. Computed in float64.
"""

from __future__ import annotations

import torch

from protobench.ood.scores.base import OODScore, check_features, l2_normalise, register_score


class _StandardisedGaussian(OODScore):
    """Shared fit of ``ssd`` and ``mahalanobis-centred``: mu, sigma, S on normalised features."""

    offset_by_mu: bool = True

    def __init__(self, batch_size: int = 4096) -> None:
        self.batch_size = batch_size
        self.mu: torch.Tensor | None = None
        self.sigma: torch.Tensor | None = None
        self.precision: torch.Tensor | None = None

    def fit(self, train_features: torch.Tensor, train_labels: torch.Tensor | None = None,
            train_logits: torch.Tensor | None = None) -> _StandardisedGaussian:
        h = l2_normalise(check_features(train_features, "ID training features"))
        self.mu = h.mean(0)
        self.sigma = h.std(0, correction=0)
        u = (h - self.mu) / (self.sigma + 1e-10)
        uc = u - u.mean(0)
        self.precision = torch.linalg.pinv(uc.T @ uc / len(u), hermitian=True)
        return self

    def score(self, features: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        if self.mu is None or self.sigma is None or self.precision is None:
            raise RuntimeError(f"{self.name} scores only after fit")
        out = []
        for s in range(0, len(features), int(self.batch_size)):
            u = (l2_normalise(features[s:s + int(self.batch_size)]) - self.mu) / \
                (self.sigma + 1e-10)
            v = u - self.mu if self.offset_by_mu else u
            out.append(-(v @ self.precision * v).sum(1))
        return torch.cat(out).float() if out else torch.empty(0)


@register_score("ssd")
class SSD(_StandardisedGaussian):
    summary = "PALM's SSD+ score (faithful, incl. its mu quirk); class-agnostic"
    offset_by_mu = True
