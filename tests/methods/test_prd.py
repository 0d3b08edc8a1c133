"""`prd`: the exact properties of the method card (shared/methods/prd.md, section 7)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from protobench.errors import UserError
from protobench.methods import ContinualMethod, ExperienceInfo, build_method, prd
from protobench.methods.continual_base import holds_rows

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def images(n_per_class: int, classes: range, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiny 1x6x6 images: a class-specific pattern plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(classes).repeat_interleave(n_per_class)
    base = torch.randn(max(classes) + 1, 1, 6, 6, generator=torch.Generator().manual_seed(99))
    return base[y] + 0.3 * torch.randn(len(y), 1, 6, 6, generator=g), y


def small(**kw) -> prd.PRD:
    return build_method("prd", backbone="mlp", epochs=2, warmup_epochs=1, batch_size=8,
                        projection_hidden=16, projection_dim=8, seed=0, **kw)


def train(m: prd.PRD, t: int, classes: range, num: int = 3) -> dict:
    x, y = images(8, classes, seed=t)
    torch.manual_seed(t)
    return m.train_experience(x, y, ExperienceInfo(t, tuple(classes), num, 100 + t), CPU,
                              progress=False)


def test_registered_with_the_cards_defaults():
    m = build_method("prd", task="class-incremental")
    assert isinstance(m, ContinualMethod) and not m.keeps_data
    p = m.get_params()
    assert (p["lr"], p["momentum"], p["weight_decay"], p["prototypes_lr"]) == (0.01, 0.9, 1e-4, 0.01)
    assert (p["epochs"], p["batch_size"], p["supcon_temperature"], p["base_temperature"]) == \
        (100, 128, 0.1, 0.07)
    assert (p["prototypes_coef"], p["distill_coef"], p["distill_temp"]) == (2.0, 4.0, 1.0)
    assert (p["relation_axis"], p["relation_sim"]) == ("classes", "proj")  # released code
    assert m._schedule(True) == (220, (120, 160)) and m._schedule(False)[0] == 100
    assert build_method("prd", **p).get_params() == p


# --- losses on tiny tensors ---------------------------------------------------------

def test_supcon_matches_the_loop_definition():
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(6, 3, generator=g), dim=1)
    y = torch.tensor([0, 1, 2, 0, 1, 2])  # two views of three samples
    total = 0.0
    for i in range(6):
        denom = sum(math.exp(float(z[i] @ z[a]) / 0.1) for a in range(6) if a != i)
        pos = [p for p in range(6) if p != i and y[p] == y[i]]
        total += sum(math.log(math.exp(float(z[i] @ z[p]) / 0.1) / denom) for p in pos) / len(pos)
    expected = -(0.1 / 0.07) * total / 6
    assert prd.supcon_loss(z, y).item() == pytest.approx(expected, rel=1e-5)


def test_prototype_loss_is_zero_for_aligned_prototypes_and_trains_only_current_ones():
    enc = torch.nn.Linear(4, 3)
    h = enc(torch.randn(6, 4))
    y = torch.tensor([3, 3, 3, 4, 4, 4])
    protos = torch.nn.Parameter(torch.randn(5, 3))
    loss = prd.prototype_loss(h, y, protos)
    expected = (1 - F.cosine_similarity(h.detach(), protos.detach()[y], dim=1)).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    loss.backward()
    assert enc.weight.grad is None and enc.bias.grad is None  # stop-gradient on features
    assert torch.equal(protos.grad[:3], torch.zeros(3, 3)) and protos.grad[3:].abs().min() > 0
    feats = torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 3.0]])
    aligned = torch.tensor([[0.5, 1.0, 0.0], [0.0, 0.0, 7.0]])  # positive multiples
    assert prd.prototype_loss(feats, torch.tensor([0, 0, 1]), aligned).item() == \
        pytest.approx(0.0, abs=1e-6)


def hand_relation(h, p, h_old, p_old, bounds, axis, sim, tau):
    def scores(hh, pp):
        hh = F.normalize(hh, dim=1) if sim == "cosine" else hh
        return hh @ F.normalize(pp, dim=1).T / tau

    new, old = scores(h, p), scores(h_old, p_old)
    if axis == "classes":  # each row normalised over one old experience's prototypes
        out = 0.0
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            for i in range(len(h)):
                q = torch.softmax(old[i, lo:hi], 0)
                r = torch.softmax(new[i, lo:hi], 0)
                out += float((q * (q / r).log()).sum()) / len(h)
        return out
    out = 0.0  # each prototype's distribution normalised over the rows
    for k in range(p.shape[0]):
        q, r = torch.softmax(old[:, k], 0), torch.softmax(new[:, k], 0)
        assert q.sum().item() == pytest.approx(1.0)
        out += float((q * (q / r).log()).sum())
    return out


@pytest.mark.parametrize("axis,sim,tau", [("classes", "proj", 1.0), ("samples", "cosine", 0.1),
                                          ("classes", "cosine", 0.5), ("samples", "proj", 2.0)])
def test_relation_loss_hand_computed_and_zero_for_an_unchanged_model(axis, sim, tau):
    g = torch.Generator().manual_seed(1)
    h, h_old = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    p, p_old = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    bounds = [0, 2, 5]
    value = prd.relation_loss(h, p, h_old, p_old, bounds, axis, sim, tau).item()
    assert value == pytest.approx(hand_relation(h, p, h_old, p_old, bounds, axis, sim, tau),
                                  rel=1e-5)
    assert value > 0
    assert prd.relation_loss(h, p, h.clone(), p.clone(), bounds, axis, sim, tau).item() == \
        pytest.approx(0.0, abs=1e-7)


def test_the_two_axes_are_different_constraints():
    g = torch.Generator().manual_seed(2)
    h, p = torch.randn(6, 3, generator=g), torch.randn(4, 3, generator=g)
    shifted = h + torch.tensor([0.0, 0.0, 5.0])  # moves every sample's score differently
    a = prd.relation_loss(shifted, p, h, p, [0, 2, 4], "classes", "proj", 1.0)
    b = prd.relation_loss(shifted, p, h, p, [0, 2, 4], "samples", "proj", 1.0)
    assert a.item() != pytest.approx(b.item())
    with pytest.raises(UserError):
        prd.relation_loss(h, p, h, p, [0, 4], "rows", "proj", 1.0)


@pytest.mark.parametrize("axis", ["classes", "samples"])
def test_relation_gradients_reach_encoder_and_old_prototypes_only(axis):
    enc = torch.nn.Linear(4, 3)
    teacher = copy.deepcopy(enc).requires_grad_(False)
    with torch.no_grad():
        enc.weight.add_(0.3)
    protos = torch.nn.Parameter(torch.randn(5, 3))  # 0..2 old, 3..4 current
    p_old = protos.detach()[:3].clone() + 0.1
    x = torch.randn(6, 4)
    loss = prd.relation_loss(enc(x), protos[:3], teacher(x), p_old, [0, 1, 3], axis, "cosine",
                             0.2)
    loss.backward()
    assert torch.equal(protos.grad[3:], torch.zeros(2, 3))
    assert protos.grad[:3].abs().sum() > 0 and enc.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


# --- training ------------------------------------------------------------------------

@pytest.mark.parametrize("axis,sim", [("classes", "proj"), ("samples", "cosine")])
def test_training_distils_from_zero_with_a_frozen_teacher(monkeypatch, axis, sim):
    values, copies = [], []
    real_loss, real_copy = prd.relation_loss, prd.teacher_copy

    def spy_loss(*args):
        out = real_loss(*args)
        values.append(out.item())
        return out

    def spy_copy(module):
        copies.append((real_copy(module), copy.deepcopy(module.state_dict())))
        return copies[-1][0]

    monkeypatch.setattr(prd, "relation_loss", spy_loss)
    monkeypatch.setattr(prd, "teacher_copy", spy_copy)
    m = small(relation_axis=axis, relation_sim=sim, distill_temp=0.2)
    train(m, 0, range(0, 2))
    assert not values and not copies  # no distillation on the first experience
    p0 = m.prototypes.clone()
    train(m, 1, range(2, 4))
    assert values[0] == pytest.approx(0.0, abs=1e-6) and max(values) > 0
    assert not torch.equal(m.prototypes[:2], p0)  # old prototypes keep evolving through L_d
    teacher, before = copies[-1]
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_without_distillation_old_prototypes_never_move():
    m = small(distill_coef=0.0)
    train(m, 0, range(0, 2))
    p0 = m.prototypes.clone()
    train(m, 1, range(2, 4))
    assert torch.equal(m.prototypes[:2], p0) and m.prototypes.shape == (4, 128)


def test_prediction_is_cosine_to_the_seen_prototypes_only():
    m = small()
    train(m, 0, range(0, 2))
    x, _ = images(3, range(0, 4), seed=5)
    scores = m.predict(x, CPU)
    assert scores.shape == (12, 2)  # classes 2, 3 are not seen yet: no column for them
    h = m.encoder.eval()(x)
    expected = F.normalize(h, dim=1) @ F.normalize(m.prototypes, dim=1).T - 1
    assert torch.allclose(scores, expected, atol=1e-5)
    train(m, 1, range(2, 4))
    scores = m.predict(x, CPU)
    assert scores.shape == (12, 4) and scores.isfinite().all()


def test_state_holds_no_samples_and_resumes_exactly():
    m = small()
    train(m, 0, range(0, 2))
    state = m.state_dict()
    assert set(state) == {"in_shape", "backbone", "encoder", "projector", "prototypes",
                          "bounds", "optimizer"}
    assert state["bounds"] == [0, 2] and state["optimizer"]["state"]  # momentum is carried
    x, _ = images(8, range(0, 2), seed=0)
    assert not holds_rows(state, x)
    assert not holds_rows(state, m.encoder.eval()(x).detach())
    again = build_method("prd", **m.get_params())
    again.load_state_dict(copy.deepcopy(state))
    xt, _ = images(2, range(0, 4), seed=9)
    assert torch.equal(m.predict(xt, CPU), again.predict(xt, CPU))
    train(m, 1, range(2, 4))
    train(again, 1, range(2, 4))
    assert torch.equal(m.prototypes, again.prototypes)
    assert torch.equal(m.predict(xt, CPU), again.predict(xt, CPU))


def test_views_keep_shapes_and_follow_the_generator():
    rgb = torch.rand(4, 3, 8, 8)
    a = prd.augment_view(rgb, torch.Generator().manual_seed(0))
    b = prd.augment_view(rgb, torch.Generator().manual_seed(0))
    assert a.shape == rgb.shape and torch.equal(a, b) and not torch.equal(a, rgb)
    vec = torch.randn(5, 7)
    assert prd.augment_view(vec, torch.Generator().manual_seed(0)).shape == vec.shape
    gray = torch.zeros(2, 1, 8, 8)
    gray[:, :, 2, 3] = 1.0  # a one-pixel shift moves the bright pixel by at most one
    out = prd.augment_view(gray, torch.Generator().manual_seed(3))
    for img in out:
        r, c = divmod(int(img[0].argmax()), 8)
        assert abs(r - 2) <= 1 and abs(c - 3) <= 1


def test_the_index_is_built_once_per_experience_not_per_predict(index_builds):
    builds = index_builds
    m = small()
    train(m, 0, range(0, 2))
    x, _ = images(2, range(0, 4), seed=5)
    first = m.predict(x, CPU)
    for _ in range(3):
        assert torch.equal(m.predict(x, CPU), first)
    assert builds == [2]
    train(m, 1, range(2, 4))
    m.predict(x, CPU)
    m.predict(x, CPU)
    assert builds == [2, 4]
