"""LwF: Li & Hoiem's distillation loss by hand and against a loop; with lambda_old = 0 it is
fine-tuning exactly; distillation keeps the old classes' logits nearer the teacher's."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from protobench.errors import UserError
from protobench.methods import build_method
from protobench.methods.lwf import lwf_loss
from protobench.methods.protocols import ExperienceInfo

CPU = torch.device("cpu")


def test_distillation_loss_by_hand_and_by_loop():
    t = torch.tensor([[2.0, 0.0]])
    s = torch.tensor([[1.0, 1.0]])
    assert lwf_loss(s, t, 2.0).item() == pytest.approx(math.log(2), abs=1e-7)
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    total = 0.0
    for i in range(6):
        p = [math.exp(v / 2) for v in t[i].tolist()]
        q = [math.exp(v / 2) for v in s[i].tolist()]
        total -= sum(pc / sum(p) * math.log(qc / sum(q)) for pc, qc in zip(p, q))
    assert lwf_loss(s, t, 2.0).item() == pytest.approx(total / 6, rel=1e-6)
    assert lwf_loss(t, t, 2.0) <= lwf_loss(s, t, 2.0)  # minimal at the teacher's logits


def _stream():
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(4, 10, generator=g) * 2
    x = centres.repeat_interleave(30, 0) + torch.randn(120, 10, generator=g)
    y = torch.arange(4).repeat_interleave(30)
    return x, y


def _run(name: str, **params):
    x, y = _stream()
    m = build_method(name, task="class-incremental", backbone="mlp", epochs=4, batch_size=16,
                     seed=0, **params)
    snaps = []
    for t in range(2):
        sel = (y >= 2 * t) & (y < 2 * t + 2)
        m.train_experience(x[sel], y[sel], ExperienceInfo(t, (2 * t, 2 * t + 1), 2, t), CPU,
                           progress=False)
        snaps.append(copy.deepcopy(m))
    return m, snaps, x, y


def test_lambda_zero_is_finetuning_exactly():
    lwf, _, x, _ = _run("lwf", lambda_old=0.0, new_classes_only=False)
    ft, _, _, _ = _run("finetune")
    for a, b in zip(lwf.state_dict()["encoder"].values(), ft.state_dict()["encoder"].values()):
        assert torch.equal(a, b)
    assert torch.equal(lwf.predict(x, CPU), ft.predict(x, CPU))


def test_the_new_classes_cross_entropy_leaves_the_old_rows_to_distillation():
    lwf, snaps, _, _ = _run("lwf", lambda_old=0.0, weight_decay=0.0)
    before, after = snaps[0].head.weight[:2], lwf.head.weight[:2]
    assert torch.equal(before, after)  # no gradient reaches the old rows without distillation
    both, snaps, _, _ = _run("lwf", lambda_old=0.0, weight_decay=0.0, new_classes_only=False)
    assert not torch.equal(snaps[0].head.weight[:2], both.head.weight[:2])


def test_distillation_keeps_old_logits_nearer_the_teacher():
    lwf, snaps, x, y = _run("lwf", lambda_old=5.0)
    ft, _, _, _ = _run("finetune")
    old = x[y < 2]
    teacher = snaps[0].predict(old, CPU) / 0.1  # the logits the student distils
    gap = {name: lwf_loss(m.predict(old, CPU)[:, :2] / 0.1, teacher).item()
           for name, m in (("lwf", lwf), ("finetune", ft))}
    assert gap["lwf"] < gap["finetune"]
    assert lwf.state_dict().keys() == ft.state_dict().keys()  # no teacher kept after training


def test_bad_parameters_exit_with_a_clear_error():
    with pytest.raises(UserError, match="distill_temperature"):
        build_method("lwf", task="class-incremental", distill_temperature=0)
