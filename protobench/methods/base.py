"""The method registry: ``register_method``, ``build_method``, ``load_method``.

The protocols and capabilities live in :mod:`protobench.methods.protocols`.
``load_method`` reads checkpoints with ``torch.load(weights_only=False)``: only load
checkpoint files you trust (this is a research tool; a checkpoint can run code).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from protobench.errors import UserError
from protobench.methods.protocols import (  # noqa: F401  (re-exported)
    ContinualMethod,
    FewShotMethod,
    Method,
    OODMethod,
    check_capabilities,
)
from protobench.registry import Registry


def _check_method(name: str, cls: type[Method]) -> None:
    """Registration-time hook: name the class and check its declared capabilities."""
    cls.name = name
    check_capabilities(cls)


def _describe_method(name: str, cls: type[Method]) -> dict[str, Any]:
    """The method-specific part of ``METHODS.describe(name)``: capabilities, job options
    and presets (``protobench methods NAME``)."""
    from protobench.methods.presets import list_presets

    return {"capabilities": cls.capabilities(), "job_options": list(cls.job_options),
            "presets": {k: asdict(p) for k, p in list_presets(name).items()}}


METHODS: Registry[type[Method]] = Registry("method", on_register=_check_method,
                                           describer=_describe_method)
"""Every registered method class by name (``protobench list methods``)."""


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a :class:`Method` subclass as ``name``; its capabilities
    are checked (:func:`~protobench.methods.protocols.check_capabilities`) and a name
    registered twice is refused."""
    return METHODS.register(name)


def list_methods(task: str | None = None) -> list[type[Method]]:
    """Registered method classes sorted by name, only those supporting ``task`` if given."""
    return [cls for cls in METHODS.list() if task is None or task in cls.tasks]


def get_method_class(name: str) -> type[Method]:
    """The class registered as ``name``; unknown names list the valid ones."""
    return METHODS.get(name)


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
                        f"it takes: {', '.join(sorted(accepted))} (see `protobench methods "
                        f"{name}`)")
    metric = params.get("metric")
    if metric is not None and metric not in cls.distances:
        raise UserError(f"method {name!r} does not support metric {metric!r}; "
                        f"choose one of: {', '.join(cls.distances)}")
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
