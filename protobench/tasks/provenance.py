"""Provenance of a run or a benchmark: versions, git revision, device, machine, time.

``Provenance.capture(device)`` is taken once per job (and by every benchmark script);
``Stopwatch`` measures wall time. Leaderboard rows keep these fields separately from
the method's parameters and the protocol.
"""

from __future__ import annotations

import os
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


def machine() -> dict[str, Any]:
    """The machine: CPU model, cores, torch threads, GPU, torch and Python versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": gpu, "torch": torch.__version__, "python": platform.python_version()}


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Provenance:
    """Where and with what a result was made."""

    versions: dict[str, str] = field(default_factory=dict)
    git_revision: str = ""
    device: str = "cpu"
    machine: dict[str, Any] = field(default_factory=dict)
    timestamp: str = ""

    @classmethod
    def capture(cls, device: torch.device | str = "cpu") -> Provenance:
        dev = torch.device(device) if isinstance(device, str) else device
        return cls(package_versions(), git_revision(), device_name(dev), machine(), now_utc())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Stopwatch:
    """``with Stopwatch() as sw: ...; sw.seconds``"""

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
