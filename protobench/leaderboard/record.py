"""`ResultRecord`: one run's result with everything needed to compare and reproduce it."""

from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

TRACKED_PACKAGES = ("protobench", "torch", "torchvision", "numpy", "faiss-gpu", "faiss-cpu",
                    "scikit-learn")


@dataclass(frozen=True)
class Metric:
    """A metric value with its 95% CI half-width and the number of units it averages."""

    value: float
    ci95: float | None = None
    n: int | None = None


@dataclass(frozen=True)
class ResultRecord:
    """One leaderboard row.

    ``task`` is ``fewshot``, ``continual`` or ``ood``; the board is ``task/dataset``.
    ``setting`` holds the few numbers that make rows comparable (ways, shots, ...);
    ``config`` holds the method's full configuration (it rebuilds the method).
    """

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

    @property
    def board(self) -> str:
        return f"{self.task}/{self.dataset}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResultRecord:
        metrics = {k: Metric(**v) for k, v in d["metrics"].items()}
        return cls(**{**d, "metrics": metrics})


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_revision(path: str | Path | None = None) -> str:
    """The git commit of the working tree (``+dirty`` when modified), or ``""``."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Stopwatch:
    """``with Stopwatch() as sw: ...; sw.seconds``"""

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
