"""OOD scores (higher = more in-distribution), one module each, registered by name."""

from protobench.ood.scores import (  # noqa: F401  (registers)
    energy,
    knn,
    mahalanobis,
    mahalanobis_centred,
    max_logit,
    msp,
    prototype,
    ssd,
)
from protobench.ood.scores.base import (
    OODScore,
    build_score,
    get_score_class,
    list_scores,
    register_score,
    resolve_scores,
    score_parameters,
)

__all__ = ["OODScore", "build_score", "get_score_class", "list_scores", "register_score",
           "resolve_scores", "score_parameters"]
