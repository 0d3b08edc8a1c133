"""CIDER (card cider.md section 9): the losses and the sequential EMA by hand, gradient
paths, the reference's learning-rate schedule, prototype initialisation, the KNN score,
and a digits run from the CLI."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from protobench.cli import app
from protobench.datasets import load_dataset
from protobench.methods import build_method
from protobench.methods.cider import (
    cider_lr,
    compactness_loss,
    dispersion_loss,
    ema_update,
)
from protobench.ood.scores import build_score
from protobench.tasks import ResultStore

runner = CliRunner()


def test_dispersion_by_hand():
    assert dispersion_loss(torch.eye(2)).item() == pytest.approx(0.0, abs=1e-12)
    assert dispersion_loss(torch.eye(3)).item() == pytest.approx(0.0, abs=1e-12)
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
    p = torch.stack([angles.cos(), angles.sin()], 1)
    assert dispersion_loss(p).item() == pytest.approx(-5.0, abs=1e-9)
    nan = torch.cat([p, torch.full((1, 2), float("nan"), dtype=torch.float64)])
    assert math.isnan(dispersion_loss(nan).item())  # NaN propagates into every row here


def test_compactness_by_hand():
    eye = torch.eye(2, dtype=torch.float64)
    loss = compactness_loss(eye, eye, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(0.1 / 0.07 * math.log(1 + math.exp(-10)), rel=1e-5)
    assert loss.item() == pytest.approx(6.485557e-05, rel=1e-5)


def naive_ema(protos, z, y, alpha):
    p = protos.clone()
    for j in range(len(y)):
        p[y[j]] = F.normalize(alpha * p[y[j]] + (1 - alpha) * z[j], dim=0)
    return p


def test_ema_is_sequential_per_sample():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    z = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    out = ema_update(p, z, torch.tensor([0, 0]), 0.5)
    assert torch.allclose(out[0], torch.tensor([0.382683, 0.923880], dtype=torch.float64),
                          atol=1e-6)
    batch_mean = F.normalize(0.5 * p[0] + 0.5 * z.mean(0), dim=0)
    assert not torch.allclose(out[0], batch_mean, atol=1e-3)  # (0.7071, 0.7071): not this
    assert torch.equal(out[1], p[1])  # an absent class is untouched
    g = torch.Generator().manual_seed(0)
    protos = F.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=1)
    zs = F.normalize(torch.randn(30, 4, generator=g, dtype=torch.float64), dim=1)
    ys = torch.randint(0, 4, (30,), generator=g)  # class 4 absent
    fast = ema_update(protos, zs, ys, 0.5)
    assert torch.allclose(fast, naive_ema(protos, zs, ys, 0.5), atol=1e-12)
    assert torch.allclose(fast.norm(dim=1), torch.ones(5, dtype=torch.float64))
    assert torch.equal(fast[4], protos[4])


def test_gradient_paths():
    g = torch.Generator().manual_seed(1)
    protos = F.normalize(torch.randn(3, 4, generator=g), dim=1)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    for alpha, nonzero in ((0.5, True), (1.0, False)):
        z = F.normalize(torch.randn(6, 4, generator=g), dim=1).requires_grad_(True)
        dispersion_loss(ema_update(protos, z, y, alpha)).backward()
        grad = z.grad
        assert (grad is not None and bool(grad.abs().sum() > 0)) == nonzero
    z = F.normalize(torch.randn(6, 4, generator=g), dim=1).requires_grad_(True)
    p = protos.clone().requires_grad_(True)
    compactness_loss(z, p, y).backward()
    assert p.grad is None and z.grad is not None  # the prototypes are detached in L_comp


def test_reference_learning_rate_schedule():
    cfg = {"lr": 0.5, "epochs": 500}
    eta = 0.5 * 1e-3
    warmup_to = eta + (0.5 - eta) * (1 + math.cos(math.pi * 10 / 500)) / 2
    assert warmup_to == pytest.approx(0.4995072, abs=1e-7)
    assert cider_lr(0, 0, 98, cfg, True, False) == pytest.approx(-0.0488507, abs=1e-7)
    assert cider_lr(1, 0, 98, cfg, True, False) == pytest.approx(0.001, abs=1e-12)
    assert cider_lr(10, 97, 98, cfg, True, False) == pytest.approx(0.4990, abs=1e-4)
    assert cider_lr(0, 0, 98, cfg, True, True) == pytest.approx(0.001)  # counted from 1
    assert cider_lr(250, 0, 98, cfg, True, False) == pytest.approx(
        eta + (0.5 - eta) * 0.5, abs=1e-12)  # the cosine after the warm-up
    assert cider_lr(3, 5, 98, cfg, False, False) == pytest.approx(
        eta + (0.5 - eta) * (1 + math.cos(math.pi * 3 / 500)) / 2)


def test_knn_score_on_the_card_bank():
    knn = build_score("knn", k=2).fit(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
    s = knn.score(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    # the card's -D_K is the squared distance; this score is its negative square root
    # (same ranking, so the same AUROC and FPR)
    assert torch.allclose(s, -torch.tensor([0.8, 3.6]).sqrt(), atol=1e-6)


def test_prototypes_start_at_the_class_means_and_training_runs(tmp_path):
    data = load_dataset("digits", "train", image_size=8)
    data = data.subset_classes(range(3))
    m = build_method("cider", task="ood", epochs=2, seed=0)
    fit = m.fit(data, torch.device("cpu"), progress=False)
    assert fit["config"]["preset"] == "toy" and len(fit["loss_curve"]) == 2
    m2 = build_method("cider", task="ood", seed=0)
    m2._build(m2.config((1, 8, 8), 3))
    m2.input_mean, m2.input_std = m.input_mean, m.input_std
    init = m2._initial_prototypes(data, torch.device("cpu"))
    with torch.no_grad():
        z = F.normalize(m2.head.eval()(m2.encoder.eval()(m2._normalise(data.x))), dim=1)
    means = torch.stack([z[data.labels == c].mean(0) for c in range(3)])
    assert torch.allclose(init, F.normalize(means, dim=1), atol=1e-6)
    assert torch.allclose(m.protos.norm(dim=1), torch.ones(3), atol=1e-5)


def test_cli_digits_near_ood_and_bad_input(tmp_path):
    store = tmp_path / "r.sqlite"
    res = runner.invoke(app, ["ood", "--id", "digits:0-4", "--ood", "digits:5-9", "-m",
                              "cider", "--epochs", "10", "-o", "image_size=8", "--store",
                              str(store), "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    (row,) = ResultStore(store).records()
    assert row.board == "ood/digits" and row.method == "cider+knn"
    assert row.metrics["auroc"].value > 0.6  # better than chance on the near pair
    for args, why in ((["-p", "alpha=2"], "alpha"), (["-s", "msp"], "msp"),
                      (["-p", "preset=huge"], "unknown preset")):
        res = runner.invoke(app, ["ood", "--id", "digits:0-4", "--ood", "digits:5-9", "-m",
                                  "cider", "--epochs", "1", *args, "--store",
                                  str(tmp_path / "bad.sqlite"), "--no-progress"])
        assert res.exit_code == 2 and why in res.output, (args, res.output)
    assert not (tmp_path / "bad.sqlite").exists()
