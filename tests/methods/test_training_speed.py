"""Training-speed options (``protobench.backbones.speed_up``): channels-last, bf16 autocast
and torch.compile against the plain float32 model; bad values; unchanged identities.

Tolerances: channels-last float32 and compile reorder float32 sums; on these small batches
they agree with the plain model to 1e-5 on a forward pass, on gradients and after a few SGD
steps (on 60-way Omniglot episodes channels-last picks other kernels and moves gradients by
~1e-2, see benchmarks/results/training_speed.md). Through the methods' Adam loops (which
turn rounding noise in near-zero gradients into steps of size lr): 1e-4 on conv weights
and 1e-2 on what the trained network computes, where today's float32 loop run with 2
threads instead of 1 already differs by ~2e-3.
bfloat16 keeps ~3 significant digits: its forward agrees within 3e-2 relative and its
losses within 5e-2.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from protobench.backbones import TrainSpeed, build_backbone, speed_up
from protobench.datasets import load_dataset
from protobench.errors import UserError
from protobench.leaderboard.labels import flatten
from protobench.methods import ExperienceInfo, build_method

CPU = torch.device("cpu")
CONTINUAL = ("finetune", "lwf", "joint", "napa-vq", "prd", "efc", "fecam")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def digits16():
    return load_dataset("digits", "all", image_size=16)


def _conv4() -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("conv4", (1, 16, 16))


def _train_mode_output(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the trained network computes in training mode (batch statistics) on ``x``:
    independent of the biases of the convolutions before each BatchNorm, whose gradient is
    ~0 (Adam turns its rounding noise into steps of size lr)."""
    net = copy.deepcopy(encoder).train()
    with torch.no_grad():
        return net(x)


def _finetune(x: torch.Tensor, y: torch.Tensor, backbone: str = "conv4", **options):
    m = build_method("finetune", backbone=backbone, epochs=1, batch_size=16, seed=0, **options)
    stats = m.train_experience(x, y, ExperienceInfo(0, (0, 1), 1, 0), CPU, progress=False)
    return m, stats


def _two_classes(data, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    keep = torch.nonzero(data.labels < 2).flatten()[:n]
    return data.get(keep), data.labels[keep]


def test_defaults_run_the_encoder_itself():
    m = _conv4()
    with speed_up(m, TrainSpeed()) as fast:
        assert fast is m  # bit-identical to the loop before the options existed


def test_channels_last_forward_matches_float32_and_restores_layout():
    m, x = _conv4(), torch.randn(8, 1, 16, 16)
    ref = copy.deepcopy(m)
    with speed_up(m, TrainSpeed(channels_last=True)) as fast:
        assert m.encoder[0][0].weight.is_contiguous(memory_format=torch.channels_last)
        out = fast(x)
    torch.testing.assert_close(out, ref(x), rtol=1e-5, atol=1e-5)
    assert all(p.is_contiguous() for p in m.parameters())
    assert list(m.state_dict()) == list(ref.state_dict())


def test_channels_last_gradients_and_sgd_steps_match_float32():
    m, x = _conv4(), torch.randn(16, 1, 16, 16)
    ref = copy.deepcopy(m)
    target = torch.randn(16, m.out_dim)

    def steps(net: nn.Module, params: list[nn.Parameter]) -> list[float]:
        opt, losses = torch.optim.SGD(params, lr=0.1), []
        for _ in range(3):
            loss = (net(x) - target).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    ref_losses = steps(ref, list(ref.parameters()))
    with speed_up(m, TrainSpeed(channels_last=True)) as fast:
        losses = steps(fast, list(m.parameters()))
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    for (name, w), w_ref in zip(m.named_parameters(), ref.parameters()):
        torch.testing.assert_close(w, w_ref, rtol=1e-5, atol=1e-5, msg=name)
        torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_channels_last_protonet_trains_like_float32(digits16):
    def fit(**options):
        m = build_method("protonet", train_ways=5, train_shots=1, train_queries=3,
                         train_steps=3, seed=0, **options)
        return m, m.fit(digits16, CPU, progress=False)

    ref, ref_stats = fit()
    m, stats = fit(channels_last=True)
    assert stats["train_loss_first"] == pytest.approx(ref_stats["train_loss_first"], rel=1e-4)
    assert stats["train_loss_last"] == pytest.approx(ref_stats["train_loss_last"], rel=1e-3)
    x = digits16.get(torch.arange(40))
    torch.testing.assert_close(_train_mode_output(m.encoder, x),
                               _train_mode_output(ref.encoder, x), rtol=0, atol=1e-2)
    for (name, w), w_ref in zip(m.encoder.named_parameters(), ref.encoder.parameters()):
        if w.dim() == 4:  # conv weights (their biases: see _train_mode_output)
            torch.testing.assert_close(w, w_ref, rtol=0, atol=1e-4, msg=name)


def test_channels_last_finetune_trains_like_float32(digits16):
    x, y = _two_classes(digits16)
    ref, ref_stats = _finetune(x, y)
    m, stats = _finetune(x, y, channels_last=True)
    assert stats["loss_last_epoch"] == pytest.approx(ref_stats["loss_last_epoch"], rel=1e-3)
    torch.testing.assert_close(_train_mode_output(m.encoder, x),
                               _train_mode_output(ref.encoder, x), rtol=0, atol=1e-2)
    for (name, w), w_ref in zip(m.encoder.named_parameters(), ref.encoder.parameters()):
        if w.dim() == 4:
            torch.testing.assert_close(w, w_ref, rtol=0, atol=1e-4, msg=name)
    assert all(p.is_contiguous() for p in m.encoder.parameters())


def test_bf16_forward_is_float32_within_bf16_precision():
    m, x = _conv4(), torch.randn(8, 1, 16, 16)
    ref = m(x)
    with speed_up(m, TrainSpeed(amp=True)) as fast:
        out = fast(x)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() <= 3e-2 * ref.abs().max()


def test_bf16_finetune_loss_within_looser_tolerance(digits16):
    x, y = _two_classes(digits16)
    _, ref_stats = _finetune(x, y)
    m, stats = _finetune(x, y, amp=True)
    assert stats["loss_last_epoch"] == pytest.approx(ref_stats["loss_last_epoch"], rel=5e-2)
    assert all(p.dtype == torch.float32 for p in m.encoder.parameters())


def test_outer_autocast_stays_in_force_without_amp():
    """ProtoNet's ``amp`` autocasts around the fast encoder; channels-last must not undo it."""
    m, x = _conv4(), torch.randn(4, 1, 16, 16)
    with speed_up(m, TrainSpeed(channels_last=True)) as fast, \
            torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast(x).dtype == torch.bfloat16


def test_compile_matches_eager(digits16):
    """One small compile (a 2-layer MLP on 8x8 inputs): forward and a training epoch."""
    pytest.importorskip("torch._inductor")
    x, y = _two_classes(load_dataset("digits", "all", image_size=8), 64)
    ref, ref_stats = _finetune(x, y, backbone="mlp")
    m, stats = _finetune(x, y, backbone="mlp", compile=True)
    assert stats["loss_last_epoch"] == pytest.approx(ref_stats["loss_last_epoch"], rel=1e-5)
    assert list(m.encoder.state_dict()) == list(ref.encoder.state_dict())  # no _orig_mod.
    for w, w_ref in zip(m.encoder.parameters(), ref.encoder.parameters()):
        torch.testing.assert_close(w, w_ref, rtol=1e-5, atol=1e-6)
    with speed_up(m.encoder.train(), TrainSpeed(compile=True)) as fast:  # the compiled graph
        torch.testing.assert_close(fast(x[:16]), m.encoder(x[:16]), rtol=1e-5, atol=1e-6)


def test_compile_failure_names_the_fix(monkeypatch):
    from torch._dynamo.exc import BackendCompilerFailed

    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise BackendCompilerFailed(
                lambda: None, RuntimeError("No working C++ compiler found"), None)

    monkeypatch.setattr(torch, "compile", lambda module, **kw: Broken())
    with pytest.raises(UserError, match="C\\+\\+ compiler.*drop -p compile=true"), \
            speed_up(_conv4(), TrainSpeed(compile=True)) as fast:
        fast(torch.randn(2, 1, 16, 16))


@pytest.mark.parametrize("name", ["protonet", *CONTINUAL])
def test_bad_values_are_refused(name):
    for key, bad in (("compile", "fast"), ("channels_last", 1), ("amp", "yes")):
        if name == "protonet" and key == "amp":
            continue  # ProtoNet's own amp predates the options
        with pytest.raises(UserError, match=f"{key} must be true or false"):
            build_method(name, **{key: bad})


@pytest.mark.parametrize("name", ["protonet", *CONTINUAL])
def test_off_options_stay_out_of_the_identity(name):
    """Off (default or False) is stored as None, which a row's identity leaves out: a new
    row with the options off has the identity of every row recorded before them."""
    keys = ("compile", "channels_last") if name == "protonet" else \
        ("amp", "compile", "channels_last")
    for params in ({}, dict.fromkeys(keys, False)):
        got = build_method(name, **params).get_params()
        assert all(got[k] is None for k in keys)
        assert not set(keys) & set(flatten(got))
    on = build_method(name, **dict.fromkeys(keys, True)).get_params()
    assert all(flatten(on)[k] is True for k in keys)
    assert build_method(name, **on).get_params() == on


@pytest.mark.parametrize("name", CONTINUAL)
def test_every_continual_method_trains_with_the_options(name, digits16):
    x, y = _two_classes(digits16, 32)
    m = build_method(name, backbone="conv4", epochs=1, batch_size=16, seed=0, amp=True,
                     channels_last=True)
    m.train_experience(x, y, ExperienceInfo(0, (0, 1), 1, 0), CPU, progress=False)
    assert all(p.is_contiguous() for p in m.encoder.parameters())
    assert m.predict(x[:4], CPU).shape == (4, 2)
