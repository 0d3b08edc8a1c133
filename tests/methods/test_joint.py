"""`joint`: the upper bound trains on every class seen so far, and says it keeps data."""

from __future__ import annotations

import pytest
import torch

from protobench.methods import build_method
from protobench.methods.continual_base import holds_rows
from protobench.methods.joint import _ConcatSource
from protobench.tasks.continual_run import run_stream

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture
def stream(digits_stream):
    return digits_stream


def test_joint_does_not_forget_and_beats_finetune(stream):
    joint = run_stream(build_method("joint", backbone="mlp", epochs=5, seed=0), stream, CPU,
                       progress=False)
    fine = run_stream(build_method("finetune", backbone="mlp", epochs=5, seed=0), stream, CPU,
                      progress=False)
    assert joint.accuracy[-1].min() > 0.85  # every experience still known at the end
    assert joint.metrics["average_forgetting"] < 0.1
    assert joint.metrics["final_accuracy"] > fine.metrics["final_accuracy"] + 0.5
    assert joint.metrics["average_incremental_accuracy"] > \
        fine.metrics["average_incremental_accuracy"]


def test_joint_declares_and_keeps_its_data(stream):
    m = build_method("joint", backbone="mlp", epochs=1, seed=0, reinit=True)
    assert m.keeps_data and m.get_params()["reinit"] is True
    run_stream(m, stream, CPU, progress=False)
    x0, _ = stream.inputs(stream.train, stream.experience(0).train_indices)
    assert len(m.kept) == 5 and holds_rows(m.state_dict(), x0[:5])
    again = build_method("joint", **m.get_params())
    again.load_state_dict(m.state_dict())
    assert len(again.kept) == 5
    assert torch.equal(again.predict(x0[:7], CPU), m.predict(x0[:7], CPU))


def test_concat_source_indexes_across_parts():
    a, b = torch.arange(6.0).view(3, 2), torch.arange(6.0, 14.0).view(4, 2)
    src = _ConcatSource([a, b])
    both = torch.cat([a, b])
    idx = torch.tensor([6, 0, 3, 2, 4])
    assert len(src) == 7 and torch.equal(src[idx], both[idx])
