"""Continual metrics against matrices computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from protobench.continual.metrics import (
    AccuracyMatrix,
    average_forgetting,
    average_incremental_accuracy,
    backward_transfer,
    final_average_accuracy,
    summarize,
    up_to_now_accuracy,
)

NAN = float("nan")
# after training on i (rows), accuracy on experience j (columns)
A = [[0.9, NAN, NAN],
     [0.6, 0.8, NAN],
     [0.3, 0.5, 0.7]]


def test_final_average_accuracy():
    assert final_average_accuracy(A) == pytest.approx((0.3 + 0.5 + 0.7) / 3)


def test_up_to_now_and_average_incremental_accuracy_equal_weights():
    # stages: 0.9 ; (0.6+0.8)/2 = 0.7 ; (0.3+0.5+0.7)/3 = 0.5
    assert up_to_now_accuracy(A).tolist() == pytest.approx([0.9, 0.7, 0.5])
    assert average_incremental_accuracy(A) == pytest.approx((0.9 + 0.7 + 0.5) / 3)


def test_up_to_now_is_sample_weighted_with_a_large_base():
    counts = [500, 100, 100]  # e.g. 50 base classes + 2 phases of 10, 10 test images each
    # stage 1: (0.6*500 + 0.8*100) / 600 ; stage 2: (0.3*500 + 0.5*100 + 0.7*100) / 700
    expected = [0.9, 380 / 600, 270 / 700]
    assert up_to_now_accuracy(A, counts).tolist() == pytest.approx(expected)
    assert average_incremental_accuracy(A, counts) == pytest.approx(sum(expected) / 3)


def test_average_forgetting_uses_best_earlier_accuracy():
    # exp 0: best of (0.9, 0.6) = 0.9 -> 0.9 - 0.3 = 0.6 ; exp 1: 0.8 - 0.5 = 0.3
    assert average_forgetting(A) == pytest.approx(0.45)
    # the best earlier accuracy need not be on the diagonal (forward gains)
    b = [[0.5, NAN, NAN], [0.9, 0.8, NAN], [0.4, 0.8, 0.6]]
    assert average_forgetting(b) == pytest.approx(((0.9 - 0.4) + 0.0) / 2)


def test_backward_transfer():
    # (0.3 - 0.9 + 0.5 - 0.8) / 2
    assert backward_transfer(A) == pytest.approx(-0.45)
    b = [[0.5, NAN], [0.7, 0.8]]
    assert backward_transfer(b) == pytest.approx(0.2)


def test_single_experience_has_no_forgetting():
    assert average_forgetting([[0.7]]) == 0.0 and backward_transfer([[0.7]]) == 0.0
    assert average_incremental_accuracy([[0.7]]) == pytest.approx(0.7)


def test_summarize_includes_task_incremental_metrics():
    til = [[1.0, NAN, NAN], [0.9, 1.0, NAN], [0.8, 0.9, 1.0]]
    m = summarize(A, til)
    assert m["til_final_accuracy"] == pytest.approx(0.9)
    assert m["til_average_incremental_accuracy"] == pytest.approx((1.0 + 0.95 + 0.9) / 3)
    assert m["average_forgetting"] == pytest.approx(0.45)
    with pytest.raises(ValueError, match="square"):
        summarize([[0.1, 0.2]])


def test_accuracy_matrix_accumulates_and_merges():
    a, b = AccuracyMatrix(2), AccuracyMatrix(2)
    a.update(0, 0, 3, 4)
    b.update(0, 0, 5, 6)
    b.update(1, 0, 1, 10)
    b.update(1, 1, 10, 10)
    m = a.merge(b).compute()
    assert m[0, 0] == pytest.approx(0.8) and m[1, 0] == pytest.approx(0.1)
    assert math.isnan(m[0, 1]) and m[1, 1] == 1.0
    again = AccuracyMatrix.from_state(a.merge(b).state_dict()).compute()
    assert torch.equal(again.nan_to_num(-1), m.nan_to_num(-1))
