"""Measuring helpers shared by the benchmarks: peak-memory sampling, a ``(x, y)`` dataset
for the competitor libraries, the Omniglot validation/test character pools.

Flags, threads, provenance and the result files belong to :mod:`benchmarks._harness`."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from protobench.datasets.omniglot import character_pools

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


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


def omniglot_pools(data: Any) -> tuple[list[int], list[int]]:
    """``(validation classes, test classes)``: a seeded half of the characters of ``data``
    (e.g. Omniglot ``all``) is kept for choosing settings, the other half for the test
    streams, so no test character is ever seen while settings are chosen (the Omniglot
    loader's ``character_pool`` option keeps one of them)."""
    return character_pools(data.num_classes)


class FeatureSet(torch.utils.data.Dataset):
    """``(x_i, y_i)`` items of a ``LabeledData`` with ``get_labels()``: the dataset shape that
    easyfsl's ``TaskSampler`` and learn2learn's ``MetaDataset`` take."""

    def __init__(self, data: Any) -> None:
        self.x, self.y = data.x, data.labels.tolist()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], self.y[i]

    def get_labels(self) -> list[int]:
        return self.y
