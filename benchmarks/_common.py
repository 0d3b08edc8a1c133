"""Helpers shared by the benchmark scripts: machine description, peak-memory sampling."""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": gpu, "torch": torch.__version__, "python": platform.python_version()}


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return 0


def measure(fn: Callable[[], Any], interval: float = 0.002) -> tuple[Any, float, int]:
    """Run ``fn``; return (result, seconds, peak RSS growth in bytes above the RSS at start),
    sampling RSS every ``interval`` s in a thread (catches torch and FAISS allocations alike).
    On CUDA the peak allocated GPU memory is added."""
    start_rss = rss_bytes()
    peak = [start_rss]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(interval)

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_start = torch.cuda.memory_allocated()
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    t = time.perf_counter()
    try:
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
    finally:
        done.set()
        thread.join()
    peak[0] = max(peak[0], rss_bytes())
    grown = peak[0] - start_rss
    if torch.cuda.is_available():
        grown += torch.cuda.max_memory_allocated() - gpu_start
    return out, seconds, grown


def machine_line(m: dict[str, Any]) -> str:
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (f"{m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads){gpu}, "
            f"torch {m['torch']}")


OMNIGLOT_POOL_SEED = 2024


def omniglot_pools(data: Any) -> tuple[list[int], list[int]]:
    """``(validation classes, test classes)``: a seeded half of the characters of ``data``
    (e.g. Omniglot ``all``) is kept for choosing settings, the other half for the test
    streams, so no test character is ever seen while settings are chosen."""
    gen = torch.Generator().manual_seed(OMNIGLOT_POOL_SEED)
    order = torch.randperm(data.num_classes, generator=gen).tolist()
    half = data.num_classes // 2
    return sorted(order[:half]), sorted(order[half:])
