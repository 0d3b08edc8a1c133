"""OOD metrics vs the protocol card's worked vectors, scikit-learn and pytorch-ood."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

from protobench.errors import UserError
from protobench.ood.metrics import (
    RULES,
    OODMetricState,
    aupr,
    auroc,
    fpr_at_tpr,
    ood_metrics,
    roc_curve,
    roc_points,
)

A = ([3, 3, 2, 1], [2, 0, 0, -1])
B = (list(range(1, 21)), [2, 0.5, 0.5, 0.5])


def test_worked_vector_a():
    m = ood_metrics(*A)
    assert m["auroc"] == pytest.approx(14.5 / 16, abs=1e-9)
    assert m["fpr95_id_positive"] == pytest.approx(0.25, abs=1e-9)
    assert m["fpr95_ood_positive"] == pytest.approx(0.5, abs=1e-9)
    assert m["aupr_in"] == pytest.approx(0.9125, abs=1e-9)
    assert m["aupr_out"] == pytest.approx(0.92708333333, abs=1e-9)
    assert aupr(*A, "id", kind="ap") == pytest.approx(0.8875, abs=1e-9)
    assert aupr(*A, "ood", kind="ap") == pytest.approx(0.91666666667, abs=1e-9)
    for rule in ("roc_first", "percentile", "order_stat"):
        assert fpr_at_tpr(*A, rule=rule) == pytest.approx(0.25, abs=1e-9)


def test_worked_vector_b_rules_differ():
    assert auroc(*B) == pytest.approx(0.98125, abs=1e-9)
    assert fpr_at_tpr(*B, rule="roc_first") == pytest.approx(0.25, abs=1e-9)
    assert fpr_at_tpr(*B, rule="percentile") == pytest.approx(0.25, abs=1e-9)  # t = 1.95
    assert fpr_at_tpr(*B, rule="order_stat") == pytest.approx(0.0, abs=1e-9)  # t = 2, strict >
    assert fpr_at_tpr(*B, positive="ood") == pytest.approx(0.10, abs=1e-9)
    m = ood_metrics(*B)
    assert m["aupr_in"] == pytest.approx(0.996310, abs=1e-6)
    assert m["aupr_out"] == pytest.approx(0.927083, abs=1e-6)


def _sk_first_fpr(pos, neg, level=0.95):
    from sklearn.metrics import roc_curve as sk_roc

    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    # every threshold: sklearn's default drop_intermediate=True removes collinear points,
    # which with tie blocks can move the first point at TPR >= 0.95 (to a later one)
    fpr, tpr, _ = sk_roc(y, np.r_[pos, neg], drop_intermediate=False)
    return fpr[np.argmax(tpr >= level)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    i = np.round(rng.normal(1, 1, 300), 1)  # rounding makes many ties
    o = np.round(rng.normal(0, 1.5, 200), 1)
    y = np.r_[np.ones(len(i)), np.zeros(len(o))]
    s = np.r_[i, o]
    assert auroc(i, o) == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    p, r, _ = precision_recall_curve(y, s)
    assert aupr(i, o, "id") == pytest.approx(auc(r, p), abs=1e-9)
    p, r, _ = precision_recall_curve(1 - y, -s)
    assert aupr(i, o, "ood") == pytest.approx(auc(r, p), abs=1e-9)
    assert aupr(i, o, "id", "ap") == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert fpr_at_tpr(i, o) == pytest.approx(_sk_first_fpr(i, o), abs=1e-9)
    assert fpr_at_tpr(i, o, positive="ood") == pytest.approx(_sk_first_fpr(-o, -i), abs=1e-9)
    assert fpr_at_tpr(i, o, rule="percentile") == pytest.approx(
        np.mean(o > np.percentile(i, 5)), abs=1e-9)
    assert fpr_at_tpr(i, o, rule="order_stat") == pytest.approx(
        np.mean(o > np.sort(i)[round(0.05 * len(i))]), abs=1e-9)
    fpr, tpr = roc_curve(i, o)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1


def test_conventions_diverge_gaussian():
    rng = np.random.default_rng(0)
    i, o = rng.normal(0, 0.3, 1000), rng.normal(-1, 2, 1000)
    m = ood_metrics(i, o)
    assert m["fpr95_ood_positive"] > 0.95 and m["fpr95_id_positive"] < 0.6
    rng = np.random.default_rng(0)
    m = ood_metrics(rng.normal(1, 1, 1000), rng.normal(0, 1, 1000))
    assert 0.7 < m["auroc"] < 0.8
    assert m["fpr95_id_positive"] != m["fpr95_ood_positive"]


def test_state_merges_chunks():
    rng = np.random.default_rng(3)
    i, o = rng.normal(1, 1, 500), rng.normal(0, 1, 400)
    a = OODMetricState().update(i[:200], o[:100])
    b = OODMetricState().update(i[200:], o[100:])
    assert a.merge(b).compute() == ood_metrics(i, o)


def test_bad_inputs():
    with pytest.raises(UserError):
        ood_metrics([], [1.0])
    with pytest.raises(UserError):
        ood_metrics([float("nan")], [1.0])
    with pytest.raises(UserError):
        fpr_at_tpr(*A, rule="nope")
    assert "closest" in RULES


def test_pytorch_ood_agrees():
    metrics = pytest.importorskip("pytorch_ood.metrics")
    rng = np.random.default_rng(5)
    for i, o in (A, B, (np.round(rng.normal(1, 1, 300), 1), np.round(rng.normal(0, 1, 250), 1))):
        i, o = np.asarray(i, float), np.asarray(o, float)
        m = metrics.OODMetrics()
        # pytorch-ood takes outlier scores (-s) and marks OOD with labels < 0
        m.update(-torch.tensor(np.r_[i, o]), torch.tensor(np.r_[np.zeros(len(i)), -np.ones(len(o))]))
        ref = m.compute()
        ours = ood_metrics(i, o)
        assert ours["auroc"] == pytest.approx(ref["AUROC"], abs=1e-6)
        assert ours["aupr_in"] == pytest.approx(ref["AUPR-IN"], abs=1e-6)
        assert ours["aupr_out"] == pytest.approx(ref["AUPR-OUT"], abs=1e-6)
        assert ours["fpr95_ood_positive"] == pytest.approx(ref["FPR95TPR"], abs=1e-6)


def test_order_stat_rank_at_an_exact_half():
    # the card's KNN rule: t = sorted(I)[round(0.05 * 10)] = sorted(I)[0] = 1 (half to even),
    # so OOD 1.5 and 3 are accepted (> t): 2/3. Float (1 - 0.95) * 10 = 0.5000000000000004
    # rounded to rank 1 (t = 2) and gave 1/3.
    ids = list(range(1, 11))
    assert fpr_at_tpr(ids, [1.5, 0.5, 3], rule="order_stat") == pytest.approx(2 / 3, abs=1e-12)
    assert round(0.05 * 10) == 0 and round(0.05 * 50) == 2  # the card's arithmetic


def _naive_fpr(ids: list[int], ood: list[Fraction], level: Fraction, rule: str) -> Fraction:
    """The card's four threshold rules (section 2) in exact rational arithmetic, by loops."""
    n, x = len(ids), sorted(ids)
    if rule == "order_stat":
        t = Fraction(x[min(n - 1, round(n * (1 - level)))])
        return Fraction(sum(o > t for o in ood), len(ood))
    if rule == "percentile":  # numpy's default linear interpolation, exactly
        h = (n - 1) * (1 - level)
        lo = math.floor(h)
        t = x[lo] + (h - lo) * (x[min(lo + 1, n - 1)] - x[lo])
        return Fraction(sum(o > t for o in ood), len(ood))
    points = []  # (TPR, FPR) at every distinct threshold, descending
    for t in sorted(set(map(Fraction, ids)) | set(ood), reverse=True):
        points.append((Fraction(sum(i >= t for i in ids), n),
                       Fraction(sum(o >= t for o in ood), len(ood))))
    if rule == "roc_first":
        return next(f for tpr, f in points if tpr >= level)
    return min(points, key=lambda p: abs(p[0] - level))[1]  # closest; ties: the first point


@pytest.mark.parametrize("level", ["0.95", "0.9", "0.99", "0.8"])
def test_threshold_rules_match_exact_arithmetic_over_n(level):
    exact = Fraction(level)
    for n in range(1, 81):
        ids = list(range(1, n + 1))
        ood = [Fraction(j, 2) for j in range(0, 2 * n + 3)]  # every rank boundary, ties too
        for rule in RULES:
            want = _naive_fpr(ids, ood, exact, rule)
            got = fpr_at_tpr(ids, [float(o) for o in ood], float(level), rule=rule)
            assert got == pytest.approx(float(want), abs=1e-12), (level, n, rule)


@pytest.mark.parametrize("seed", [0, 1])
def test_roc_points_keep_the_curve_and_its_area(seed):
    rng = np.random.default_rng(seed)
    i = rng.normal(1.0, 1.0, 300).round(1)  # ties: diagonal segments
    o = rng.normal(0.0, 1.0, 700).round(1)
    fpr, tpr = roc_points(i, o)
    y = np.r_[np.ones(len(i)), np.zeros(len(o))]
    assert math.isclose(np.trapezoid(tpr, fpr), roc_auc_score(y, np.r_[i, o]), abs_tol=1e-12)
    full_fpr, full_tpr = roc_curve(i, o)
    assert len(fpr) < len(full_fpr)  # points inside straight segments are gone
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    # every kept point lies on sklearn's curve
    sk_fpr, sk_tpr, _ = __import__("sklearn.metrics", fromlist=["roc_curve"]).roc_curve(
        y, np.r_[i, o], drop_intermediate=False)
    on = {(round(a, 12), round(b, 12)) for a, b in zip(sk_fpr, sk_tpr)}
    assert all((round(a, 12), round(b, 12)) in on for a, b in zip(fpr, tpr))
    few_fpr, few_tpr = roc_points(rng.normal(1, 1, 5000), rng.normal(0, 1, 5000),
                                  max_points=64)
    assert len(few_fpr) <= 64 and (few_fpr[0], few_fpr[-1]) == (0.0, 1.0)
    assert np.all(np.diff(few_fpr) >= 0) and np.all(np.diff(few_tpr) >= 0)
