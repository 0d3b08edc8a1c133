"""OOD detection metrics, exactly per the OOD protocol card (``ood_protocol.md`` section 2).

Inputs are harness scores (higher = more in-distribution): ``id_scores`` ``[n_I]`` of the
ID test set and ``ood_scores`` ``[n_O]`` of ONE OOD set. Computed in float64 numpy over the
distinct score values, so tied samples always enter together.

- ``auroc``: P(I > O) + 0.5 P(I = O); the same whichever class is called positive.
- ``aupr_in`` (ID positive, ranked by s) / ``aupr_out`` (OOD positive, ranked by -s):
  trapezoid rule over the precision-recall curve (OpenOOD, pytorch-ood), or
  ``kind="ap"`` for sklearn's step-sum average precision.
- Two different quantities are both called "FPR@95TPR" in the field; they are stored under
  names that say which:

  * ``fpr95_id_positive`` (classic: ODIN, KNN, CIDER, PALM; OpenOOD v1): the fraction of
    OOD accepted as ID at the threshold that accepts >= 95% of ID.
  * ``fpr95_ood_positive`` (OpenOOD v1.5, pytorch-ood): the fraction of ID flagged as OOD
    at the first ROC point that flags >= 95% of OOD.

  Both default to threshold rule ``roc_first`` (first ROC point reaching the level, no
  interpolation, whole tie blocks: pessimistic). ``fpr_at_tpr`` also offers PALM's
  ``percentile`` (t = ``np.percentile(P, 5)``, negatives with score > t counted),
  the KNN/CIDER ``order_stat`` (t = sorted(P)[round(0.05 n_P)], strict >) and Hendrycks'
  ``closest`` (the ROC point whose TPR is closest to the level).

  Rank and TPR arithmetic is exact: ``level`` is read as the nearest fraction with a
  denominator <= 10^6 (0.95 -> 19/20), because in floats ``(1 - 0.95) * 10`` is
  0.5000000000000004 and rounds to rank 1 instead of the half-to-even rank 0. So
  ``order_stat`` rounds ``(1 - level) n_P`` exactly (half to even, as Python's ``round``
  on the card's ``0.05 * n``), ``roc_first`` needs ``tp >= ceil(level n_P)``, and an exact
  tie in ``closest`` goes to the lower TPR (the first ROC point; what Hendrycks' float code
  picks at 0.95). ``np.percentile`` is exact at integer virtual indices (checked for
  n <= 200,000), so ``percentile`` keeps it.

:class:`OODMetricState` accumulates scores over chunks and merges across processes
(torchmetrics-style update / merge / compute); the metrics need every score, so the state
is the score buffers themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch

from protobench.errors import UserError

RULES = ("roc_first", "percentile", "order_stat", "closest")
POSITIVES = ("id", "ood")
METRIC_NAMES = ("auroc", "aupr_in", "aupr_out", "fpr95_id_positive", "fpr95_ood_positive")
LOWER_IS_BETTER = frozenset({"fpr95_id_positive", "fpr95_ood_positive"})

Scores = np.ndarray | torch.Tensor | list[float]


def _arr(x: Scores, what: str) -> np.ndarray:
    a = (x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor)
         else np.asarray(x, dtype=np.float64)).reshape(-1)
    if a.size == 0:
        raise UserError(f"no {what} scores: every OOD metric needs ID and OOD samples")
    if not np.isfinite(a).all():
        raise UserError(f"{what} scores contain NaN or inf; check the features (or the score's "
                        "fit data) for degenerate values")
    return a


def _curve(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts at every distinct threshold t (descending): ``tp[i] = #(pos >= t_i)``,
    ``fp[i] = #(neg >= t_i)``; returns ``(thresholds, tp, fp)``."""
    thr = np.unique(np.concatenate([pos, neg]))[::-1]
    tp = len(pos) - np.searchsorted(np.sort(pos), thr, side="left")
    fp = len(neg) - np.searchsorted(np.sort(neg), thr, side="left")
    return thr, tp.astype(np.float64), fp.astype(np.float64)


def roc_curve(id_scores: Scores, ood_scores: Scores) -> tuple[np.ndarray, np.ndarray]:
    """ROC with ID positive: ``(fpr, tpr)`` from (0, 0) to (1, 1), one point per threshold."""
    i, o = _arr(id_scores, "ID"), _arr(ood_scores, "OOD")
    _, tp, fp = _curve(i, o)
    return np.r_[0.0, fp / len(o)], np.r_[0.0, tp / len(i)]


def roc_points(id_scores: Scores, ood_scores: Scores, max_points: int = 512
               ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`roc_curve` with the points inside straight segments dropped (the area under
    it is unchanged), then at most ``max_points`` of them kept, evenly spaced along the
    curve and always including both ends: the curve a leaderboard row stores for plots."""
    fpr, tpr = roc_curve(id_scores, ood_scores)
    if len(fpr) > 2:
        d = np.diff(np.c_[fpr, tpr], axis=0)
        turn = d[1:, 0] * d[:-1, 1] - d[1:, 1] * d[:-1, 0]  # 0 where three points align
        keep = np.r_[True, np.abs(turn) > 1e-15, True]
        fpr, tpr = fpr[keep], tpr[keep]
    if len(fpr) > max_points:
        idx = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[idx], tpr[idx]
    return fpr, tpr


def auroc(id_scores: Scores, ood_scores: Scores) -> float:
    """Area under the ROC curve (ties count 1/2)."""
    fpr, tpr = roc_curve(id_scores, ood_scores)
    return float(np.trapezoid(tpr, fpr))


def aupr(id_scores: Scores, ood_scores: Scores, positive: str = "id",
         kind: str = "trapezoid") -> float:
    """Area under the precision-recall curve with ``positive`` ("id": AUPR-In, ranked by s;
    "ood": AUPR-Out, ranked by -s); ``kind`` "trapezoid" (OpenOOD) or "ap" (step sum)."""
    pos, neg = _oriented(id_scores, ood_scores, positive)
    _, tp, fp = _curve(pos, neg)
    precision = tp / (tp + fp)
    recall = tp / len(pos)
    if kind == "ap":
        return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    if kind != "trapezoid":
        raise UserError(f"unknown AUPR kind {kind!r}; use trapezoid or ap")
    return float(np.trapezoid(np.r_[1.0, precision], np.r_[0.0, recall]))


def _oriented(id_scores: Scores, ood_scores: Scores, positive: str
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(positive scores, negative scores)``, both ranked so that higher = more positive."""
    if positive not in POSITIVES:
        raise UserError(f"unknown positive class {positive!r}; use id or ood")
    i, o = _arr(id_scores, "ID"), _arr(ood_scores, "OOD")
    return (i, o) if positive == "id" else (-o, -i)


def fpr_at_tpr(id_scores: Scores, ood_scores: Scores, level: float = 0.95,
               positive: str = "id", rule: str = "roc_first") -> float:
    """False-positive rate at true-positive rate ``level`` (see the module docstring)."""
    if not 0 < level <= 1:
        raise UserError(f"TPR level {level} must be in (0, 1]")
    pos, neg = _oriented(id_scores, ood_scores, positive)
    exact, n = exact_level(level), len(pos)
    if rule in ("roc_first", "closest"):
        _, tp, fp = _curve(pos, neg)
        if rule == "roc_first":
            i = int(np.argmax(tp >= math.ceil(exact * n)))
        else:  # |tp/n - level| * n * den, in integers; argmin: first (lower TPR) on ties
            gap = np.abs(tp.astype(np.int64) * exact.denominator - exact.numerator * n)
            i = int(np.argmin(gap))
        return float(fp[i] / len(neg))
    if rule == "percentile":
        t = np.percentile(pos, float(100 * (1 - exact)))
    elif rule == "order_stat":
        t = np.sort(pos)[min(n - 1, order_stat_rank(n, level))]
    else:
        raise UserError(f"unknown FPR threshold rule {rule!r}; choose one of: {', '.join(RULES)}")
    return float(np.mean(neg > t))


def exact_level(level: float) -> Fraction:
    """``level`` as the nearest fraction with denominator <= 10^6 (0.95 -> 19/20)."""
    return Fraction(float(level)).limit_denominator(10**6)


def order_stat_rank(n: int, level: float = 0.95) -> int:
    """KNN/CIDER rank ``round((1 - level) n)`` computed exactly, half to even (n=10 -> 0)."""
    return round((1 - exact_level(level)) * n)


def ood_metrics(id_scores: Scores, ood_scores: Scores, rule: str = "roc_first"
                ) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` for one OOD set (values in [0, 1])."""
    return {
        "auroc": auroc(id_scores, ood_scores),
        "aupr_in": aupr(id_scores, ood_scores, "id"),
        "aupr_out": aupr(id_scores, ood_scores, "ood"),
        "fpr95_id_positive": fpr_at_tpr(id_scores, ood_scores, 0.95, "id", rule),
        "fpr95_ood_positive": fpr_at_tpr(id_scores, ood_scores, 0.95, "ood", rule),
    }


PRESETS = {"classic": ("id", "roc_first"), "palm": ("id", "percentile"),
           "knn": ("id", "order_stat"), "openood_v1.5": ("ood", "roc_first"),
           "pytorch_ood": ("ood", "roc_first")}
"""Named FPR@95 conventions: (positive class, threshold rule)."""


@dataclass
class OODMetricState:
    """Mergeable accumulator: ``update(id_scores=..., ood_scores=...)`` over chunks,
    ``merge(other)`` across processes, ``compute()`` -> :func:`ood_metrics`."""

    rule: str = "roc_first"
    _id: list[np.ndarray] = field(default_factory=list)
    _ood: list[np.ndarray] = field(default_factory=list)

    def update(self, id_scores: Scores | None = None, ood_scores: Scores | None = None
               ) -> OODMetricState:
        if id_scores is not None:
            self._id.append(_arr(id_scores, "ID"))
        if ood_scores is not None:
            self._ood.append(_arr(ood_scores, "OOD"))
        return self

    def merge(self, other: OODMetricState) -> OODMetricState:
        self._id += other._id
        self._ood += other._ood
        return self

    def reset(self) -> None:
        self._id, self._ood = [], []

    def compute(self) -> dict[str, float]:
        if not self._id or not self._ood:
            raise UserError("no ID or no OOD scores were added; OOD metrics need both")
        return ood_metrics(np.concatenate(self._id), np.concatenate(self._ood), self.rule)
