"""The PALM OOD method: configuration, gradient path, toy run, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from protobench.datasets.digits import load_digits
from protobench.errors import UserError
from protobench.methods import build_method, load_method
from protobench.methods.palm import PALM, palm_lr
from protobench.methods.palm_loss import (
    class_mask,
    ema_update,
    mle_loss,
    palm_assign,
    proto_contrastive_loss,
    sinkhorn,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits() -> tuple:
    """ID train / ID test (digits 0-4, 70/30, seeded) and OOD (digits 5-9), 8x8."""
    idd, ood = load_digits("train", image_size=8), load_digits("test", image_size=8)
    perm = torch.randperm(len(idd), generator=torch.Generator().manual_seed(0))
    cut = int(0.7 * len(idd))
    return idd.subset(perm[:cut]), idd.subset(perm[cut:]), ood


@pytest.fixture(scope="module")
def trained(digits: tuple) -> tuple[PALM, dict]:
    method = build_method("palm", task="ood", seed=0)
    stats = method.fit(digits[0], CPU, epochs=6, progress=False)
    return method, stats


def centred_mahalanobis(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Higher = more ID: -(h - mu)^T pinv(cov) (h - mu) on L2-normalised features."""
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    train, test = unit(train.astype(np.float64)), unit(test.astype(np.float64))
    mu = train.mean(0)
    prec = np.linalg.pinv(np.cov(train - mu, rowvar=False, bias=True))
    d = test - mu
    return -np.einsum("ij,jk,ik->i", d, prec, d)


def test_registration_and_capabilities() -> None:
    method = build_method("palm", task="ood")
    assert method.name == "palm" and method.tasks == frozenset({"ood"})
    assert PALM.has_classifier is False and PALM.default_score == "ssd"
    with pytest.raises(UserError, match="no classifier head"):
        method.logits(torch.zeros(2, 1, 8, 8), CPU)
    with pytest.raises(UserError, match="fit"):
        method.features(torch.zeros(2, 1, 8, 8), CPU)
    with pytest.raises(UserError):
        build_method("palm", task="fewshot")


def test_get_params_round_trip() -> None:
    method = build_method("palm", labelled=False, top_k=3, alpha=0.9, seed=4, select="last")
    params = method.get_params()
    assert build_method("palm", **params).get_params() == params
    assert params["labelled"] is False and params["top_k"] == 3


def test_presets_follow_the_card() -> None:
    m = PALM()
    paper = m.config((3, 32, 32), 100)
    assert paper["backbone"] == "resnet34" and paper["preset"] == "paper"
    assert (paper["prototypes_per_class"], paper["top_k"], paper["alpha"]) == (6, 5, 0.999)
    assert (paper["batch_size"], paper["epochs"], paper["lr"]) == (512, 500, 0.5)
    assert paper["projection_dim"] == 128 and paper["num_prototypes"] == 600
    assert paper["warmup_epochs"] == 10 and paper["augment"] == "paper"
    toy = m.config((1, 8, 8), 5)
    assert toy["backbone"] == "mlp" and toy["preset"] == "toy" and toy["num_prototypes"] == 15
    assert (toy["prototypes_per_class"], toy["top_k"], toy["alpha"], toy["lr"]) == (
        3, 2, 0.99, 0.05)
    assert m.config((1, 28, 28), 5)["backbone"] == "conv4"
    assert PALM(backbone="resnet18", top_k=4).config((3, 32, 32), 10)["top_k"] == 4
    unl = PALM(labelled=False).config((1, 8, 8), 5)
    assert unl["variant"] == "PALM-unlabelled (reconstruction)"
    assert unl["unlabelled_pc"] == "self"
    with pytest.raises(UserError, match="preset"):
        PALM(preset="huge").config((1, 8, 8), 5)


def test_lr_schedule_by_hand() -> None:
    assert palm_lr(0, 100, 10, 0.5) == 0.0
    assert palm_lr(5, 100, 10, 0.5) == pytest.approx(0.25)
    assert palm_lr(10, 100, 10, 0.5) == pytest.approx(0.5)
    assert palm_lr(55, 100, 10, 0.5) == pytest.approx((0.5 + 0.5e-3) / 2)
    assert palm_lr(100, 100, 10, 0.5) == pytest.approx(0.5e-3)
    q = 0.5 * (1 + math.cos(math.pi * 30 / 90))
    assert palm_lr(40, 100, 10, 0.5) == pytest.approx(0.5 * q + 0.5e-3 * (1 - q))


@pytest.mark.parametrize("alpha", [1.0, 0.99])
def test_pc_gradient_reaches_the_encoder_only_through_ema(alpha: float, digits: tuple) -> None:
    method = PALM(alpha=alpha)
    method._build(method.config((1, 8, 8), 5))
    assert method.encoder is not None and method.head is not None
    crit = method.criterion
    assert crit is not None
    x, y = digits[0].x[:32], digits[0].labels[:32]
    z = F.normalize(method.head(method.encoder(x)), dim=1)
    mask = class_mask(y, crit.labels)
    update, index = palm_assign(sinkhorn(z.detach() @ crit.protos.T), mask, crit.top_k)
    new = ema_update(crit.protos, z, update, alpha)
    params = list(method.encoder.parameters())
    g_pc = torch.autograd.grad(proto_contrastive_loss(new, crit.labels), params,
                               retain_graph=True)
    total = sum(float(g.abs().sum()) for g in g_pc)
    if alpha == 1.0:
        assert all(bool((g == 0).all()) for g in g_pc)
    else:
        assert total > 0
    g_mle = torch.autograd.grad(mle_loss(z, new, torch.ones_like(mask) / mask.shape[1]), params)
    assert sum(float(g.abs().sum()) for g in g_mle) > 0


def test_toy_run_loss_falls_and_separates_digits(trained: tuple, digits: tuple) -> None:
    method, stats = trained
    curve = stats["loss_curve"]
    assert len(curve) == 6 and curve[-1] < 0.8 * curve[0]
    assert stats["variant"] == "PALM" and stats["config"]["backbone"] == "mlp"
    assert stats["kept_epoch"] == int(np.argmin(curve))
    train, test, ood = digits
    h_train, h_test, h_ood = (method.features(d.x, CPU).numpy() for d in (train, test, ood))
    assert h_train.shape == (len(train), 64)  # backbone output, not the 16-d projection
    scores = centred_mahalanobis(h_train, np.concatenate([h_test, h_ood]))
    labels = np.r_[np.ones(len(h_test)), np.zeros(len(h_ood))]
    assert roc_auc_score(labels, scores) > 0.5
    protos = method.prototypes
    assert protos.shape == (15, 16)
    torch.testing.assert_close(protos.norm(dim=1), torch.ones(15))


def test_class_prototypes_hold_each_class_mixture(trained: tuple, digits: tuple) -> None:
    method, _ = trained
    protos, mix = method.prototypes, method.class_prototypes
    assert mix.vectors.shape == (5, 3, 16) and mix.labels.tolist() == list(range(5))
    z = method.embed(digits[1].x[:20], CPU)
    scores = mix.scores(z, "cosine")
    for c in range(5):  # rows j with j mod C == c belong to class c (interleaved buffer)
        mine = [j for j in range(15) if j % 5 == c]
        assert all(torch.equal(mix.vectors[c, i], protos[j]) for i, j in enumerate(mine))
        ref = (z @ protos[mine].T).max(1).values - 1  # unit rows: cos - 1
        torch.testing.assert_close(scores[:, c], ref, atol=1e-5, rtol=0)


def test_state_dict_and_checkpoint_round_trip(trained: tuple, digits: tuple,
                                              tmp_path) -> None:
    method, _ = trained
    x = digits[1].x
    fresh = build_method("palm", **method.get_params())
    fresh.load_state_dict(method.state_dict())
    assert torch.equal(fresh.features(x, CPU), method.features(x, CPU))
    assert torch.equal(fresh.prototypes, method.prototypes)
    assert torch.equal(fresh.embed(x, CPU), method.embed(x, CPU))
    method.save(tmp_path / "palm.pt")
    loaded = load_method(tmp_path / "palm.pt")
    assert torch.equal(loaded.features(x, CPU), method.features(x, CPU))


def test_training_is_seeded(trained: tuple, digits: tuple) -> None:
    method, stats = trained
    again = build_method("palm", seed=0)
    again_stats = again.fit(digits[0], CPU, epochs=6, progress=False)
    assert again_stats["loss_curve"] == stats["loss_curve"]
    assert torch.equal(again.features(digits[1].x, CPU), method.features(digits[1].x, CPU))


def test_unlabelled_variant_reads_no_labels(digits: tuple) -> None:
    train = digits[0]
    shuffled = train.subset(torch.arange(len(train)))
    object.__setattr__(shuffled, "labels", train.labels.flip(0))
    runs = []
    for data in (train, shuffled):
        method = build_method("palm", labelled=False, seed=1)
        stats = method.fit(data, CPU, epochs=2, progress=False)
        runs.append((method.features(digits[1].x, CPU), stats))
    assert torch.equal(runs[0][0], runs[1][0])
    stats = runs[0][1]
    assert stats["variant"] == "PALM-unlabelled (reconstruction)"
    assert stats["config"]["unlabelled_pc"] == "self"
    off = build_method("palm", labelled=False, unlabelled_pc="off", select="last")
    off_stats = off.fit(train, CPU, epochs=1, progress=False)
    assert off_stats["pc_curve"] == [0.0] and off_stats["kept_epoch"] == 0


def test_paper_preset_path_on_rgb_images() -> None:
    """The 32x32 path (crop/flip/jitter/grey views, per-channel normalisation) runs; a
    Conv-4 stands in for ResNet-34 to stay fast."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(24, 3, 32, 32, generator=gen)
    x[:, 0] *= 0.5
    from protobench.datasets.base import LabeledData

    data = LabeledData(x=x, labels=torch.arange(24) % 3, class_names=("a", "b", "c"),
                       name="rgb", split="train")
    method = build_method("palm", backbone="conv4", batch_size=8, seed=0)
    stats = method.fit(data, CPU, epochs=1, progress=False)
    cfg = stats["config"]
    assert cfg["preset"] == "paper" and cfg["augment"] == "paper"
    assert cfg["num_prototypes"] == 18 and cfg["projection_dim"] == 128
    assert stats["steps"] == 3 and math.isfinite(stats["loss_curve"][0])
    torch.testing.assert_close(method.input_mean, x.mean((0, 2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(method.input_std, x.std((0, 2, 3), unbiased=False),
                               atol=1e-5, rtol=0)
    assert method.features(x[:5], CPU).shape == (5, 256)


def test_resnet34_backbone_is_the_cifar_variant() -> None:
    from protobench.backbones import build_backbone, count_parameters

    net = build_backbone("resnet34", (3, 32, 32))
    assert [len(s) for s in (net.layers[:3], net.layers[3:7], net.layers[7:13],
                             net.layers[13:])] == [3, 4, 6, 3]
    assert len(net.layers) == 16 and net.stem[0].stride == (1, 1)
    # torchvision resnet34 (21,797,672) - fc (513,000) - 7x7 stem (9,408) + 3x3 stem (1,728)
    assert count_parameters(net) == 21_276_992
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 512)
