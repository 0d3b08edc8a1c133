"""The OOD score protocol and its registry.

A score is fitted once on cached ID training features (and labels / logits when it needs
them) and then maps features ``[n, D]`` (and logits ``[n, C]``) to ``[n]`` scores, higher =
more in-distribution. Every per-class statistic (means, covariance inverses, indexes) is
computed in ``fit``, never per batch. ``needs_logits`` scores (MSP, max-logit, energy)
need a classifier head; ``needs_labels`` scores need ID training labels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from protobench.errors import UserError
from protobench.registry import Registry, parameters


class OODScore(ABC):
    """Base class; the constructor only stores its keyword arguments (``get_params``)."""

    name: ClassVar[str] = ""
    needs_logits: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (``build_score(name, **s.get_params())`` rebuilds it); a
        score without a constructor of its own (msp, max-logit) has none."""
        return {p["name"]: getattr(self, p["name"]) for p in parameters(type(self))}

    def fit(self, train_features: torch.Tensor, train_labels: torch.Tensor | None = None,
            train_logits: torch.Tensor | None = None) -> OODScore:
        """Learn what the score needs from ID training data ``[n, D]`` / ``[n]`` / ``[n, C]``."""
        return self

    @abstractmethod
    def score(self, features: torch.Tensor, logits: torch.Tensor | None = None
              ) -> torch.Tensor:
        """``[n]`` scores (CPU float) of ``features`` ``[n, D]`` / ``logits`` ``[n, C]``."""

    def _logits(self, logits: torch.Tensor | None) -> torch.Tensor:
        if logits is None:
            raise UserError(f"score {self.name!r} needs logits (a classifier head); use a "
                            "feature score (knn, mahalanobis, ssd, prototype, ...)")
        return logits.float()


def _describe_score(name: str, cls: type[OODScore]) -> dict[str, Any]:
    """The score-specific part of ``SCORES.describe(name)``: what ``fit``/``score`` need."""
    return {"needs_logits": cls.needs_logits, "needs_labels": cls.needs_labels}


SCORES: Registry[type[OODScore]] = Registry(
    "score", on_register=lambda name, cls: setattr(cls, "name", name), describer=_describe_score)
"""Every registered OOD score class by name (``protobench list scores``)."""


def register_score(name: str) -> Callable[[type[OODScore]], type[OODScore]]:
    """Class decorator: register an :class:`OODScore` subclass as ``name`` (once)."""
    return SCORES.register(name)


def list_scores() -> list[type[OODScore]]:
    """Registered score classes sorted by name."""
    return SCORES.list()


def get_score_class(name: str) -> type[OODScore]:
    """The score class registered as ``name``; unknown names list the valid ones."""
    return SCORES.get(name)


def score_parameters(name: str | type[OODScore]) -> set[str]:
    """Names of the constructor parameters of the score ``name`` (or class), without
    ``self``, ``*args`` and ``**kwargs``."""
    cls = get_score_class(name) if isinstance(name, str) else name
    return {p["name"] for p in parameters(cls)}


def build_score(name: str, **params: Any) -> OODScore:
    """Instantiate a registered score; unknown parameters are errors."""
    cls = get_score_class(name)
    unknown = sorted(set(params) - score_parameters(name))
    if unknown:
        raise UserError(f"score {name!r} has no parameter(s) {', '.join(unknown)}; it takes: "
                        f"{', '.join(sorted(score_parameters(name))) or 'none'}")
    return cls(**params)


def resolve_scores(method: str, has_classifier: bool, default: str, names: tuple[str, ...],
                   params: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, dict[str, Any]]]:
    """The scores a job computes (``names``, de-duplicated, or the method's ``default``)
    and each one's parameters taken from ``params``. A logit score for a method without a
    classifier head, and a parameter no requested score takes, are errors."""
    scores = tuple(dict.fromkeys(names)) or (default,)
    for s in scores:
        if get_score_class(s).needs_logits and not has_classifier:
            raise UserError(f"score {s!r} needs logits but method {method!r} has no "
                            "classifier head; use a feature score (knn, mahalanobis, "
                            "ssd, mahalanobis-centred, prototype) or --method ce")
    per_score = {s: {k: v for k, v in params.items() if k in score_parameters(s)}
                 for s in scores}
    unused = sorted(set(params) - {k for p in per_score.values() for k in p})
    if unused:
        raise UserError(f"no requested score takes parameter(s) {', '.join(unused)}; "
                        f"scores: {', '.join(scores)}")
    return scores, per_score


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    """Rows divided by ``||x|| + 1e-10`` (float64), as PALM's and KNN's normalisers."""
    x = x.double()
    return x / (x.norm(dim=1, keepdim=True) + 1e-10)


def check_features(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.dim() != 2 or len(x) == 0:
        raise UserError(f"{what} must be a non-empty [n, D] tensor, got {list(x.shape)}")
    if not torch.isfinite(x).all():
        raise UserError(f"{what} contain NaN or inf; the model diverged or the inputs are "
                        "broken (lower the learning rate or check the data)")
    return x
