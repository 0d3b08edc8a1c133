"""The OOD method protocol: a model trained on in-distribution (ID) data that exposes
features (and, when it has a classifier head, logits) for post-hoc OOD scores.

``fit(train)`` learns from labelled ID training data; ``features(x)`` returns the
embeddings the feature-based scores (KNN, Mahalanobis, prototype, ...) work on;
``logits(x)`` the class scores the logit-based scores (MSP, max-logit, energy) need.
A method without a classifier head (``has_classifier = False``, e.g. PALM) raises a
:class:`~protobench.errors.UserError` from ``logits`` so the CLI can refuse a score
that needs logits with a clear message. ``default_score`` names the score its paper
reports.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from protobench.datasets.base import LabeledData
from protobench.errors import UserError
from protobench.methods.base import Method


class OODMethod(Method, ABC):
    """Base class of methods trained for OOD detection (see the module docstring)."""

    tasks = frozenset({"ood"})
    metrics = ()
    trainable = True
    has_classifier: ClassVar[bool] = True
    default_score: ClassVar[str] = "msp"

    @abstractmethod
    def fit(self, train: LabeledData, device: torch.device, epochs: int | None = None,
            progress: bool = True) -> dict[str, Any]:
        """Train on labelled ID data ``train``; returns training statistics."""

    @abstractmethod
    def features(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Test-time embeddings ``[B, D]`` (CPU float32) of a batch ``x`` ``[B, ...]``;
        eval mode, batched internally."""

    def logits(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Class scores ``[B, C]`` (CPU float32) of a batch ``x`` ``[B, ...]``."""
        raise UserError(f"method {self.name!r} has no classifier head, so logit-based scores "
                        "(msp, max-logit, energy) do not apply; choose a feature score "
                        "(knn, mahalanobis, prototype, ...) or --method ce")

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the trained model (networks, prototypes, ...)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into a method built with the same parameters."""
