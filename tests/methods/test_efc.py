"""EFC (card efc.md section 8): the EFM closed form and toy values, the EFM loss by hand, the
drift update's worked example with the global min-max, the buffer's count split, the
rotation labels, the loss shapes and gradients, frozen BatchNorm with trained old heads,
the class-weighted accuracy, the class order, and an empty buffer between experiences."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from protobench.continual.metrics import average_incremental_accuracy, up_to_now_accuracy
from protobench.continual.stream import class_order
from protobench.methods import build_method
from protobench.methods.efc import (
    count_split,
    drift_update,
    efm_loss,
    efm_terms,
    replay_indices,
    rotation_labels,
)
from protobench.methods.protocols import ExperienceInfo

T = torch.float64
CPU = torch.device("cpu")
TOY_E = 0.25 * torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=T)


def test_efm_closed_form_equals_the_sum_over_classes_of_p_g_gT():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 4, generator=g, dtype=T)
    f = torch.randn(5, 4, generator=g, dtype=T)
    z = f @ w.T
    loop = torch.zeros(4, 4, dtype=T)
    for i in range(5):  # autograd's gradient of log p_c w.r.t. the feature, class by class
        for c in range(3):
            fi = f[i].clone().requires_grad_(True)
            gc, = torch.autograd.grad(F.log_softmax(fi @ w.T, 0)[c], fi)
            loop += F.softmax(z[i], 0)[c] * torch.outer(gc, gc)
    e = efm_terms(z, w)
    assert torch.allclose(e, loop, atol=1e-12)
    assert torch.allclose(e, e.T) and torch.linalg.eigvalsh(e).min() > -1e-12


def test_efm_toy_values():
    eye = torch.eye(2, dtype=T)
    assert torch.allclose(efm_terms(torch.zeros(1, 2, dtype=T), eye), TOY_E)
    skew = torch.tensor([[math.log(3), 0.0]], dtype=T)
    assert torch.allclose(efm_terms(skew, eye), 0.1875 * TOY_E / 0.25)
    both = efm_terms(torch.cat([torch.zeros(1, 2, dtype=T), skew]), eye) / 2  # the mean
    assert torch.allclose(both, (TOY_E + 0.75 * TOY_E) / 2)


@pytest.mark.parametrize(("d", "expected"), [((1.0, 1.0), 0.2), ((1.0, -1.0), 10.2),
                                             ((0.5, 0.0), 0.65)])
def test_efm_loss_by_hand(d, expected):
    f = torch.tensor([d], dtype=T)
    assert efm_loss(f, torch.zeros(1, 2, dtype=T), TOY_E, 10, 0.1).item() == \
        pytest.approx(expected, abs=1e-12)


def test_efm_loss_is_zero_without_drift_and_reaches_the_current_features_only():
    f = torch.randn(4, 2, dtype=T, requires_grad=True)
    old = f.detach().clone().requires_grad_(True)
    assert efm_loss(f, old, TOY_E).item() == 0
    loss = efm_loss(f + 1, old, TOY_E)
    loss.backward()
    assert f.grad is not None and old.grad is None


def test_drift_worked_example_with_the_global_min_max():
    o = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]], dtype=T)
    delta = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=T)
    eye = torch.eye(2, dtype=T)
    one = drift_update(torch.zeros(1, 2, dtype=T), o, o + delta, eye, 0.2)
    assert torch.allclose(one, torch.tensor([[0.957909, 0.042088]], dtype=T), atol=1e-6)
    two = drift_update(torch.tensor([[0.0, 0.0], [10.0, 0.0]], dtype=T), o, o + delta, eye, 0.2)
    w1, w2 = (0.401763, 0.354555, 0.243682), (0.009826, 0.105642, 0.884532)
    assert torch.allclose(two[0], torch.tensor([w1[0], w1[1]], dtype=T), atol=1e-6)
    assert torch.allclose(two[1], torch.tensor([10 + w2[0], w2[1]], dtype=T), atol=1e-6)


def test_drift_and_gaussian_rows_match_naive_loops():
    from protobench.methods.efc import gaussian_rows

    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, generator=g, dtype=T)
    e = a @ a.T
    mu, o, n = (torch.randn(k, 4, generator=g, dtype=T) for k in (3, 7, 7))
    q = torch.tensor([[float((oj - m) @ e @ (oj - m)) for oj in o] for m in mu], dtype=T)
    s = (q.max() - q) / (q.max() - q.min())
    w = torch.softmax(s / (2 * 0.3 ** 2), dim=1)
    assert torch.allclose(drift_update(mu, o, n, e, 0.3), mu + w @ (n - o), atol=1e-12)
    b = torch.randn(5, 4, 4, generator=g, dtype=T)
    factors = torch.linalg.cholesky(b @ b.transpose(1, 2) + torch.eye(4, dtype=T))
    labels = torch.tensor([4, 0, 4, 2, 4, 0])  # classes 1 and 3 absent
    z = torch.randn(6, 4, generator=g, dtype=T)
    loop = torch.stack([factors[c] @ z[i] for i, c in enumerate(labels.tolist())])
    assert torch.allclose(gaussian_rows(labels, z, factors), loop, atol=1e-12)
    assert gaussian_rows(labels[:0], z[:0], factors).shape == (0, 4)


def test_count_split():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):  # S = C = 10, b = 64: every class twice
        assert count_split(replay_indices(10, 10, 64, g), 10) == (20, 20)
    identity = torch.cat([torch.arange(40), torch.arange(24)])  # S = 30, C = 10
    assert count_split(identity, 30) == (54, 10)
    assert len(replay_indices(30, 10, 64, g)) == 64
    big = replay_indices(50, 30, 64, g)
    assert len(big) == 64 and len(set(big.tolist())) == 64  # S + C >= b: distinct


def test_rotation_labels():
    labels = rotation_labels(torch.tensor([0, 9]), 10)
    assert labels[:, 0].tolist() == [10, 11, 12] and labels[:, 1].tolist() == [37, 38, 39]
    assert int(rotation_labels(torch.arange(10), 10).max()) + 1 == 40


def test_class_weighted_step_accuracy():
    acc = torch.tensor([[70.0, float("nan")], [60.0, 40.0]])
    assert up_to_now_accuracy(acc, [50, 10])[1].item() == pytest.approx(56.6667, abs=1e-4)
    assert average_incremental_accuracy(acc, [50, 10]) == pytest.approx(63.3333, abs=1e-4)


def test_the_reference_class_order():
    assert class_order(100, "efc", 0)[:10] == [57, 6, 15, 62, 42, 96, 21, 3, 1, 74]


def _stream(side: int = 8):
    """Three 2-class experiences of 1 x side x side blob images."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 1, side, side, generator=g)
    x = centres.repeat_interleave(30, 0) + 0.3 * torch.randn(180, 1, side, side, generator=g)
    return x, torch.arange(6).repeat_interleave(30)


def _train(m, x, y, t):
    sel = (y >= 2 * t) & (y < 2 * t + 2)
    info = ExperienceInfo(t, (2 * t, 2 * t + 1), 3, t)
    return m.train_experience(x[sel], y[sel], info, CPU, progress=False), info, sel


def test_losses_shapes_gradients_and_frozen_batchnorm():
    x, y = _stream(16)
    m = build_method("efc", task="class-incremental", backbone="conv4", epochs=2,
                     batch_size=16, seed=0)
    _train(m, x, y, 0)
    assert m.head.weight.shape[0] == 2 and len(m.means) == 2 and m.buffer is None
    bn = [mod for mod in m.encoder.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    bn_state = [{k: v.clone() for k, v in b.state_dict().items()} for b in bn]
    old_head = m.head.weight.detach().clone()
    _, info, sel = _train(m, x, y, 1)
    assert m.buffer is None  # emptied at the end of the experience
    for b, before in zip(bn, bn_state, strict=True):  # running stats and affine unchanged
        assert all(torch.equal(v, before[k]) for k, v in b.state_dict().items())
    assert not torch.equal(m.head.weight[:2].detach(), old_head)  # old rows DO train
    # one step's losses: current rows only for CE, every seen class for prototypes + replay
    g = torch.Generator().manual_seed(0)
    teacher = copy.deepcopy(m.encoder).eval()
    factors = torch.linalg.cholesky(m.covs[:2].double()
                                    + 1e-5 * torch.eye(m.covs.shape[1], dtype=T))
    m.means, m.covs = m.means[:2], m.covs[:2]
    m.buffer = (x[sel][:16], y[sel][:16])
    xb, yb = x[sel][16:32], y[sel][16:32]
    for p in m.encoder.parameters():
        p.grad = None
    out = m.step_losses(m.encoder, teacher, xb, yb, info, g, factors)
    assert out["ce_logits"].shape == (16, 2) and set(out["ce_targets"].tolist()) <= {0, 1}
    assert out["pr_logits"].shape[1] == 4 and out["n"] + out["m"] == 8  # 2 (S + C) < 64
    assert out["n"] == 4 and out["m"] == 4
    assert not out["prototypes"].requires_grad
    out["pr"].backward(retain_graph=True)  # replayed rows reach the encoder ...
    assert any(p.grad is not None for p in m.encoder.parameters())
    for p in m.encoder.parameters():
        p.grad = None
    m.buffer = None  # ... prototype rows alone do not
    first = m.step_losses(m.encoder, teacher, xb, yb, info, g, factors)
    assert (first["n"], first["m"]) == (64, 0)
    first["pr"].backward()
    assert all(p.grad is None for p in m.encoder.parameters())
    assert m.head.weight.grad is not None


def test_a_stream_is_learned_and_the_state_holds_means_and_covariances():
    x, y = _stream()
    m = build_method("efc", task="class-incremental", backbone="mlp", epochs=20,
                     batch_size=16, seed=0)
    for t in range(3):
        _train(m, x, y, t)
    state = m.state_dict()
    d = m.encoder.out_dim
    assert state["means"].shape == (6, d) and state["covs"].shape == (6, d, d)
    assert state["matrix"].shape == (d, d)
    assert torch.allclose(state["matrix"], state["matrix"].T, atol=1e-6)
    scores = m.predict(x, CPU)
    assert scores.shape == (180, 6)
    assert (scores.argmax(1) == y).double().mean() > 0.5  # separable blobs are learned


def test_bad_parameters_are_refused():
    from protobench.errors import UserError

    with pytest.raises(UserError, match="proto_batch"):
        build_method("efc", task="class-incremental", proto_batch=0)


def test_warm_start_a_large_first_experience_then_small_ones():
    x, y = _stream()
    m = build_method("efc", task="class-incremental", backbone="mlp", epochs=2,
                     batch_size=16, seed=0)
    first = y < 4
    m.train_experience(x[first], y[first], ExperienceInfo(0, (0, 1, 2, 3), 2, 0), CPU,
                       progress=False)
    assert m.head.weight.shape[0] == 4 and len(m.means) == 4
    m.train_experience(x[~first], y[~first], ExperienceInfo(1, (4, 5), 2, 1), CPU,
                       progress=False)
    assert m.head.weight.shape[0] == 6 and m.predict(x, CPU).shape == (180, 6)


class _Stop(Exception):
    pass


def test_resume_from_a_checkpoint_gives_the_uninterrupted_matrix(digits_stream, tmp_path):
    from protobench.tasks.continual_run import run_stream

    def efc():
        return build_method("efc", backbone="mlp", epochs=1, batch_size=32, seed=0)

    full = run_stream(efc(), digits_stream, CPU, seed=3, progress=False)

    def stop(t, _acc):
        if t == 2:
            raise _Stop

    with pytest.raises(_Stop):
        run_stream(efc(), digits_stream, CPU, seed=3, run_dir=tmp_path, progress=False,
                   on_experience_end=stop)
    resumed = run_stream(efc(), digits_stream, CPU, seed=3, run_dir=tmp_path, resume=True,
                         progress=False)
    assert resumed.resumed_from == 3
    assert torch.equal(resumed.accuracy.nan_to_num(-1), full.accuracy.nan_to_num(-1))
