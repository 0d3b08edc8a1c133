"""``prototype``: maximum cosine to the nearest class prototype (OOD protocol card
section 3, harness-defined).

Prototypes p_c = the normalised mean of the L2-normalised ID training features of class
c (feature layer: whatever the method's ``features`` returns, the penultimate layer for
``ce`` and ``palm``); score(x) = max_c z(x).p_c = 1 - 0.5 min_c ||z - p_c||^2, searched
through the cached index of a :class:`~protobench.geometry.Prototypes` (cosine metric).
"""

from __future__ import annotations

import torch

from protobench.errors import UserError
from protobench.geometry.prototypes import Prototypes
from protobench.ood.scores.base import OODScore, check_features, l2_normalise, register_score


@register_score("prototype")
class PrototypeScore(OODScore):
    needs_labels = True
    summary = "max cosine to the nearest class-mean prototype (Prototypes index)"

    def __init__(self, backend: str = "auto") -> None:
        self.backend = backend
        self.protos: Prototypes | None = None

    def fit(self, train_features: torch.Tensor, train_labels: torch.Tensor | None = None,
            train_logits: torch.Tensor | None = None) -> PrototypeScore:
        if train_labels is None:
            raise UserError("the prototype score needs ID training labels")
        z = l2_normalise(check_features(train_features, "ID training features"))
        means = Prototypes.from_features(z, train_labels)
        if (means.counts == 0).any():
            raise UserError("every class must have training samples for the prototype score")
        self.protos = Prototypes.from_vectors(l2_normalise(means.centres).float(), means.labels)
        self.protos.index("cosine", self.backend)  # built once, here
        return self

    def score(self, features: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        if self.protos is None:
            raise RuntimeError("prototype scores only after fit")
        d, _ = self.protos.search(features.float(), "cosine", 1, self.backend)
        return (1.0 - d[:, 0]).float().cpu()
