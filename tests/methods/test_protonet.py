"""The ProtoNet card's exact properties (section 9)."""

import pytest
import torch
import torch.nn.functional as F

from protobench.backbones import Conv4, count_parameters
from protobench.datasets import load_dataset
from protobench.methods import build_method, load_method
from protobench.methods.protonet import episode_loss, lr_at, proto_logits, prototypes


def test_conv4_shapes_and_parameter_counts():
    assert Conv4(1)(torch.zeros(2, 1, 28, 28)).shape == (2, 64)
    assert Conv4(3, image_size=84)(torch.zeros(2, 3, 84, 84)).shape == (2, 1600)
    assert count_parameters(Conv4(1)) == 111_936
    assert count_parameters(Conv4(3, image_size=84)) == 113_088


def _z(seed=0, shape=(5, 3, 8)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_prototype_is_mean_regardless_of_order():
    z = _z()
    perm = torch.randperm(3, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(prototypes(z), z.sum(1) / 3, atol=1e-12)
    assert torch.allclose(prototypes(z[:, perm]), prototypes(z), atol=1e-12)


def test_logits_are_negative_squared_distances_brute_force():
    q, c = _z(1, (7, 8)), _z(2, (5, 8))
    brute = torch.tensor([[-sum((q[i, j] - c[k, j]) ** 2 for j in range(8)) for k in range(5)]
                          for i in range(7)], dtype=torch.float64)
    assert torch.allclose(proto_logits(q, c), brute, atol=1e-10)


def test_translation_invariance_and_linear_identity():
    q, c = _z(1, (7, 8)), _z(2, (5, 8))
    shift = _z(3, (8,))
    p = F.softmax(proto_logits(q, c), 1)
    assert torch.allclose(F.softmax(proto_logits(q + shift, c + shift), 1), p, atol=1e-10)
    linear = 2 * q @ c.T - (c * c).sum(1)
    assert torch.allclose(F.softmax(linear, 1), p, atol=1e-10)


def test_one_shot_prototypes_are_the_supports():
    z = _z(4, (5, 1, 8))
    assert torch.equal(prototypes(z), z[:, 0])


def test_loss_is_cross_entropy_and_gradients_use_both_paths():
    torch.manual_seed(0)
    enc = torch.nn.Linear(6, 4).double()
    x = _z(5, (3, 4, 6))  # 3 ways, 1 shot + 3 queries
    loss, _ = episode_loss(enc, x, ways=3, shots=1)
    z = enc(x.flatten(0, 1)).view(3, 4, -1)
    logits = proto_logits(z[:, 1:].flatten(0, 1), z[:, :1].mean(1))
    ref = F.cross_entropy(logits, torch.arange(3).repeat_interleave(3))
    assert torch.allclose(loss, ref, atol=1e-12)
    # gradient through the support path alone, and through the query path alone
    w = enc.weight
    zs, zq = enc(x[:, :1].flatten(0, 1)), enc(x[:, 1:].flatten(0, 1))
    y = torch.arange(3).repeat_interleave(3)
    g_support = torch.autograd.grad(F.cross_entropy(proto_logits(zq.detach(), zs), y), w)[0]
    g_query = torch.autograd.grad(F.cross_entropy(proto_logits(zq, zs.detach()), y), w)[0]
    g_both = torch.autograd.grad(episode_loss(enc, x, 3, 1)[0], w)[0]
    assert g_support.abs().sum() > 0 and g_query.abs().sum() > 0
    assert torch.allclose(g_both, g_support + g_query, atol=1e-10)


def test_lr_schedule():
    assert [lr_at(e) for e in (0, 1999, 2000, 4000)] == [1e-3, 1e-3, 5e-4, 2.5e-4]


def test_smoke_training_lowers_loss_and_evaluates_in_eval_mode(tmp_path):
    train = load_dataset("digits", "train", image_size=16)
    m = build_method("protonet", train_ways=5, train_shots=1, train_queries=5, train_steps=60,
                     seed=0)
    stats = m.fit(train, torch.device("cpu"), progress=False)
    assert stats["train_loss_last"] < stats["train_loss_first"]
    assert m.encoder.training  # left in train mode after fitting
    test = load_dataset("digits", "test", image_size=16)
    f1 = m.features(test, torch.device("cpu"))
    f2 = m.features(test.subset_classes([0]), torch.device("cpu"))
    # eval-mode BN: a sample's features do not depend on the rest of the batch
    assert torch.allclose(f1[test.labels == 0], f2, atol=1e-5)
    m.save(tmp_path / "m.pt")
    back = load_method(tmp_path / "m.pt")
    assert back.get_params() == m.get_params()
    assert torch.allclose(back.features(test, torch.device("cpu")), f1)


def test_get_params_round_trips():
    m = build_method("protonet", metric="cosine", train_ways=20)
    assert build_method("protonet", **m.get_params()).get_params() == m.get_params()


@pytest.mark.parametrize("bad, match", [({"metric": "manhattan"}, "does not support metric"),
                                        ({"ways": 3}, "has no parameter")])
def test_bad_parameters(bad, match):
    from protobench.errors import UserError

    with pytest.raises(UserError, match=match):
        build_method("protonet", **bad)


def test_amp_keeps_distances_and_loss_in_float32():
    torch.manual_seed(0)
    enc = Conv4(1)
    x = torch.rand(5, 3, 1, 28, 28)
    loss32, _ = episode_loss(enc, x, ways=5, shots=1)
    loss16, _ = episode_loss(enc, x, ways=5, shots=1, amp=True)
    assert loss16.dtype == torch.float32
    assert torch.allclose(loss16, loss32, rtol=0.05)
    loss16.backward()
    assert all(p.grad.dtype == torch.float32 for p in enc.parameters())
