"""benchmarks.training_speed runs end to end in its --quick mode (no timing asserted)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import training_speed
from benchmarks._harness import UsageError


def test_training_speed_quick(quick, tmp_path):
    out = quick("training_speed")
    assert out["device"] == "cpu" and out["variants"] == list(training_speed.QUICK_VARIANTS)
    assert set(out["workloads"]) == {"protonet", "finetune"}
    for work in out["workloads"].values():
        rows = work["rows"]
        assert set(rows) == {*training_speed.QUICK_VARIANTS, training_speed.NOISE}
        assert rows["float32"]["x_float32"] == 1.0 and rows["float32"]["weight_diff"] == 0.0
        for name in training_speed.QUICK_VARIANTS:
            assert rows[name]["median"] > 0 and rows[name]["loss_diff"] < 0.5
        assert rows[training_speed.NOISE]["threads"] == 2  # the quick run has one thread
    assert "| channels_last |" in (tmp_path / "training_speed_quick.md").read_text()


def test_unknown_variants_are_refused_before_any_work():
    with pytest.raises(UsageError, match="unknown \\['fp8'\\]"):
        training_speed.measure(torch.device("cpu"), quick=True, variants=["float32", "fp8"])
    with pytest.raises(UsageError, match="float32, the reference"):
        training_speed.measure("cpu", quick=True, variants=["bf16"])
