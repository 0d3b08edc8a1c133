"""Method registry and the few-shot method protocol.

A method is a class registered with ``@register_method(name)``. It declares the
tasks it supports (``fewshot``, ``class-incremental``, ``task-incremental``,
``ood``) and the metrics it accepts; the CLI refuses other combinations. Its
constructor only stores keyword arguments, so ``get_params()`` round-trips:
``build_method(name, **m.get_params())`` rebuilds it.

Few-shot methods work on features: ``fit`` (optional training on the meta-train
split), ``features(data)`` -> ``[n, D]`` frozen embeddings, and ``metric`` for the
nearest-prototype decision. Evaluation then needs no backbone.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch

from protobench.datasets.base import LabeledData
from protobench.errors import UserError, unknown_name
from protobench.feature_cache import FeatureCache

_METHODS: dict[str, type[Method]] = {}


class Method:
    """Base class: stores constructor arguments and declares capabilities."""

    name: ClassVar[str] = ""
    tasks: ClassVar[frozenset[str]] = frozenset()
    metrics: ClassVar[tuple[str, ...]] = ("sqeuclidean",)
    trainable: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (scikit-learn style)."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self"}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def save(self, path: str | Path) -> None:
        torch.save({"method": self.name, "params": self.get_params(),
                    "state": self.state_dict()}, path)


class FewShotMethod(Method, ABC):
    """Support-then-query on frozen features."""

    tasks = frozenset({"fewshot"})
    metric: str = "sqeuclidean"
    feature_cache: FeatureCache | None = None  # set by the runner; not a parameter

    def fit(self, train: LabeledData | None, device: torch.device, steps: int | None = None,
            progress: bool = True) -> dict[str, float]:
        """Learn from the meta-train split; returns training statistics (may be empty)."""
        return {}

    @abstractmethod
    def features(self, data: LabeledData, device: torch.device) -> torch.Tensor:
        """Frozen embeddings ``[n, D]`` of every sample of ``data`` (CPU)."""

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        """Post-processing applied to evaluation features (identity by default)."""
        return features

    def feature_key(self, data: LabeledData) -> str | None:
        """What determines ``features(data)`` besides the data (backbone, weights hash), or
        None when there is nothing worth caching (e.g. the data already are features)."""
        return None

    def cached_features(self, data: LabeledData, device: torch.device) -> torch.Tensor:
        """``features(data)``, through ``feature_cache`` when one is set and the method has a
        feature key: an unchanged encoder never re-runs on the same split."""
        key = self.feature_key(data) if self.feature_cache is not None else None
        if key is None or self.feature_cache is None:
            return self.features(data, device)
        return self.feature_cache.get(data, key, lambda: self.features(data, device),
                                      data.meta.get("load_options", {}))


def register_method(name: str):
    def deco(cls: type[Method]) -> type[Method]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is already registered")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def list_methods(task: str | None = None) -> list[type[Method]]:
    return [_METHODS[k] for k in sorted(_METHODS) if task is None or task in _METHODS[k].tasks]


def get_method_class(name: str) -> type[Method]:
    if name not in _METHODS:
        raise unknown_name("method", name, list(_METHODS))
    return _METHODS[name]


def build_method(name: str, task: str | None = None, **params: Any) -> Method:
    """Instantiate a registered method; unknown parameters and unsupported tasks are errors."""
    cls = get_method_class(name)
    if task is not None and task not in cls.tasks:
        raise UserError(f"method {name!r} does not support {task}; it supports: "
                        f"{', '.join(sorted(cls.tasks))} (see `protobench methods`)")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise UserError(f"method {name!r} has no parameter(s) {', '.join(unknown)}; "
                        f"it takes: {', '.join(sorted(accepted))}")
    metric = params.get("metric")
    if metric is not None and metric not in cls.metrics:
        raise UserError(f"method {name!r} does not support metric {metric!r}; "
                        f"choose one of: {', '.join(cls.metrics)}")
    return cls(**params)


def load_method(path: str | Path, **overrides: Any) -> Method:
    """Rebuild a method saved with :meth:`Method.save`."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError) as exc:
        raise UserError(f"cannot read checkpoint {path}: {exc}; pass a file written by "
                        "--save-checkpoint") from exc
    method = build_method(blob["method"], **{**blob["params"], **overrides})
    method.load_state_dict(blob["state"])
    return method
