"""`ResultRecord`: one leaderboard row, with everything needed to compare and rebuild it.

A row keeps apart what made the number:

``method_name`` / ``method_params``
    the registered method and exactly its ``get_params()``: ``record.build_method()``
    rebuilds it (untrained);
``setting``
    the protocol numbers that make rows comparable (ways, shots, experiences, ID/OOD sets);
``data``
    dataset options, meta-train data, episode manifests / stream seeds;
``config``
    the job context: preset label, training statistics (``fit``), scores, ... (never the
    method's parameters);
``job``
    the task name and the job configuration that re-runs the row (``protobench rerun``);
provenance
    ``versions``, ``git_revision``, ``device``, ``machine``, ``wall_time_s``, ``timestamp``.

With several seeds a row's metrics are the mean over seeds with a Student-t 95% CI
(``n`` = number of seeds), ``seeds`` lists them and ``per_seed`` keeps each seed's
metrics (a few-shot seed keeps its CI over episodes there).

``samples`` keeps the per-unit values of the primary metric that paired comparisons need:
a few-shot row maps its episode manifest hash to the per-episode accuracies in episode
order (one entry per seed's manifest; ``HASH#seedN`` when seeds share one manifest, e.g. a
dataset's fixed episodes). The store keeps them in a side table and loads them only when
asked (``ResultStore.records(board, samples=True)``). An OOD row keeps its ROC curve per
OOD set there too, as ``roc:<set>:seed<N>:fpr`` / ``:tpr`` (:func:`curve_key`; the points
of :func:`protobench.ood.metrics.roc_points`, for plots); :func:`episode_samples` leaves
those out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from protobench.errors import UserError
from protobench.methods import build_method
from protobench.tasks.provenance import (  # noqa: F401  (re-exported)
    Stopwatch,
    device_name,
    git_revision,
    now_utc,
    package_versions,
)

CURVE_PREFIX = "roc:"


def curve_key(ood_set: str, seed: int, axis: str) -> str:
    """The ``samples`` key of one axis (``fpr`` or ``tpr``) of an OOD row's ROC curve."""
    return f"{CURVE_PREFIX}{ood_set}:seed{seed}:{axis}"


def episode_samples(samples: dict[str, list[float]]) -> dict[str, list[float]]:
    """The per-unit values of ``samples`` (paired comparisons), without ROC curves."""
    return {k: v for k, v in samples.items() if not k.startswith(CURVE_PREFIX)}


@dataclass(frozen=True)
class Metric:
    """A metric value with its 95% CI half-width and the number of units it averages."""

    value: float
    ci95: float | None = None
    n: int | None = None


@dataclass(frozen=True)
class ResultRecord:
    """One leaderboard row (see the module docstring); the board is ``task/dataset``."""

    task: str
    dataset: str
    split: str
    method: str
    setting: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Metric]
    seed: int
    manifest_hash: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    git_revision: str = ""
    device: str = "cpu"
    wall_time_s: float = 0.0
    timestamp: str = ""
    primary_metric: str = "accuracy"
    method_name: str = ""
    method_params: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    per_seed: list[dict[str, Any]] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)  # manifest hash -> [E]
    id: int | None = field(default=None, compare=False)  # the store's row id

    @property
    def board(self) -> str:
        return f"{self.task}/{self.dataset}"

    @property
    def primary(self) -> Metric | None:
        return self.metrics.get(self.primary_metric)

    def parameters(self) -> dict[str, Any]:
        """What identifies the row's configuration: the method's parameters, then the job
        context (rows written before the split kept both in ``config``)."""
        return {**self.method_params, **self.config}

    def build_method(self) -> Any:
        """The method that made this row, rebuilt from ``method_name`` and ``method_params``
        (untrained: ``protobench rerun`` retrains it)."""
        if not self.method_name:
            raise UserError(f"row {self.id} predates records that rebuild their run (no "
                            "method_name); re-run its command to get one")
        return build_method(self.method_name, **self.method_params)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResultRecord:
        known = {f.name for f in fields(cls)}
        metrics = {k: Metric(**v) for k, v in d["metrics"].items()}
        return cls(**{**{k: v for k, v in d.items() if k in known}, "metrics": metrics})
