"""Confidence intervals over seeds (Student-t 95%); over episodes see
:func:`protobench.evaluation.episodes.ci95` (normal approximation, many episodes)."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import t as student_t


def mean_ci95(values: list[float]) -> tuple[float, float | None]:
    """Mean and Student-t 95% half-width over seeds (None for one seed)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), None
    half = student_t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)
