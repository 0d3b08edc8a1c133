"""`finetune`: growing head, forgetting, state round trip, protocol."""

from __future__ import annotations

import pytest
import torch

from protobench.methods import ContinualMethod, ExperienceInfo, build_method
from protobench.methods.continual_base import holds_rows
from protobench.methods.finetune import grow_linear
from protobench.tasks.continual_run import run_stream

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture
def stream(digits_stream):
    return digits_stream


def test_registered_for_both_incremental_tasks():
    m = build_method("finetune", task="class-incremental", backbone="mlp")
    assert isinstance(m, ContinualMethod) and not m.keeps_data
    assert m.tasks == {"class-incremental", "task-incremental"}
    assert build_method("finetune", **m.get_params()).get_params() == m.get_params()


def test_grow_linear_keeps_old_rows():
    old = torch.nn.Linear(4, 2)
    new = grow_linear(old, 4, 5)
    assert new.out_features == 5
    assert torch.equal(new.weight[:2], old.weight) and torch.equal(new.bias[:2], old.bias)


def test_finetune_forgets_old_experiences(stream):
    res = run_stream(build_method("finetune", backbone="mlp", epochs=5, seed=0), stream, CPU,
                     progress=False)
    acc = res.accuracy
    assert acc.diagonal().min() > 0.9  # learns each experience
    assert acc[-1, :-1].mean() < 0.1  # and then forgets all older ones
    assert res.metrics["average_forgetting"] > 0.8
    assert res.til_accuracy[-1, :-1].mean() > acc[-1, :-1].mean()  # task id helps


def test_state_round_trip_predicts_identically(stream):
    m = build_method("finetune", backbone="mlp", epochs=1, seed=0)
    exp = stream.experience(0)
    x, y = stream.inputs(stream.train, exp.train_indices)
    m.train_experience(x, y, ExperienceInfo(0, exp.classes, 5, 0), CPU, progress=False)
    again = build_method("finetune", **m.get_params())
    again.load_state_dict(m.state_dict())
    xt = stream.test.x[:20]
    assert torch.equal(m.predict(xt, CPU), again.predict(xt, CPU))
    assert m.predict(xt, CPU).shape == (20, 2)
    assert not holds_rows(m.state_dict(), x)  # no training sample in the state


def test_auto_backbone_follows_the_input_shape(stream):
    m = build_method("finetune", epochs=1, batch_size=256)
    exp = stream.experience(0)
    x, y = stream.inputs(stream.train, exp.train_indices)
    m.train_experience(x, y, ExperienceInfo(0, exp.classes, 5, 0), CPU, progress=False)
    assert m.backbone_name == "mlp"  # 8x8 inputs
