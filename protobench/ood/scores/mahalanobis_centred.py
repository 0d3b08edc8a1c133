"""``mahalanobis-centred``: the clean version of PALM's ``ssd`` score.

Same fit (L2-normalised features, per-dimension standardisation, 1/N covariance of the
standardised training features, pseudo-inverse once), but the score is centred where
the training data are: score(x) = -u(x)^T S u(x). Class-agnostic (no labels).
"""

from __future__ import annotations

from protobench.ood.scores.base import register_score
from protobench.ood.scores.ssd import _StandardisedGaussian


@register_score("mahalanobis-centred")
class MahalanobisCentred(_StandardisedGaussian):
    summary = "-u^T S u on standardised normalised features (clean SSD+); class-agnostic"
    offset_by_mu = False
