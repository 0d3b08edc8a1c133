"""No silent swaps: a trained encoder is never replaced by a fresh one, and meta-train
classes never overlap the evaluated ones unless asked for (and then recorded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from protobench.cli import app
from protobench.errors import ShapeError
from protobench.methods import build_method
from protobench.tasks import ResultStore

runner = CliRunner()
FAST = ("--episodes", 50, "--no-progress", "--device", "cpu")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def protonet_16(tmp_path_factory) -> str:
    """A ProtoNet trained on digits at 16x16 (20 steps), saved as a checkpoint."""
    path = tmp_path_factory.mktemp("ckpt") / "pn16.pt"
    res = run("fewshot", "-d", "digits", "-m", "protonet", "--train-steps", 20,
              "-o", "image_size=16", "--save-checkpoint", path,
              "--store", path.with_suffix(".sqlite"), *FAST)
    assert res.exit_code == 0, res.output
    return str(path)


def _one_line_error(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and "Traceback" not in res.output
    for needle in needles:
        assert needle in res.output, res.output


@pytest.mark.usefixtures("one_thread")
def test_checkpoint_at_another_image_size_stops_instead_of_a_fresh_encoder(tmp_path,
                                                                          protonet_16):
    store = tmp_path / "r.sqlite"
    res = run("fewshot", "-d", "digits", "--checkpoint", protonet_16, "-o", "image_size=8",
              "--store", store, *FAST)
    _one_line_error(res, "[1, 16, 16]", "[1, 8, 8]", "image_size")
    assert not store.exists() or ResultStore(store).records() == []
    ok = run("fewshot", "-d", "digits", "--checkpoint", protonet_16, "-o", "image_size=16",
             "--store", store, *FAST)
    assert ok.exit_code == 0, ok.output
    # the trained weights are the ones evaluated: not the untrained encoder's result
    fresh = run("fewshot", "-d", "digits", "-m", "protonet", "--train-steps", 0,
                "-o", "image_size=16", "--store", store, *FAST)
    assert fresh.exit_code == 0, fresh.output
    trained, untrained = ResultStore(store).records("fewshot/digits")
    assert trained.metrics["accuracy"].value != untrained.metrics["accuracy"].value


@pytest.mark.usefixtures("one_thread")
def test_ncm_with_a_checkpoint_refuses_another_shape(tmp_path, protonet_16):
    res = run("fewshot", "-d", "digits", "-m", "ncm", "-p", f"checkpoint={protonet_16}",
              "-o", "image_size=8", "--store", tmp_path / "r.sqlite", *FAST)
    _one_line_error(res, "[1, 16, 16]", "[1, 8, 8]")


@pytest.mark.usefixtures("one_thread")
def test_train_dataset_takes_the_evaluated_options(tmp_path):
    store = tmp_path / "r.sqlite"
    common = ("fewshot", "-d", "digits", "-m", "protonet", "--train-steps", 5,
              "--train-dataset", "digits:train", "-o", "image_size=20", "--store", store, *FAST)
    res = run(*common)  # image_size carried over to the same dataset's train split
    assert res.exit_code == 0, res.output
    # an explicit, different train option: shapes differ, so the run stops
    clash = run(*common, "--train-option", "image_size=16")
    _one_line_error(clash, "[1, 16, 16]", "[1, 20, 20]")
    assert len(ResultStore(store).records()) == 1


def test_protonet_never_rebuilds_an_existing_encoder():
    from protobench.datasets import load_dataset

    m = build_method("protonet", train_steps=2, train_ways=3, train_queries=2)
    m.fit(load_dataset("digits", "train", image_size=16), torch.device("cpu"), progress=False)
    with pytest.raises(ShapeError, match=r"\[1, 16, 16\].*\[1, 20, 20\]"):
        m.features(load_dataset("digits", "test", image_size=20), torch.device("cpu"))


@pytest.mark.parametrize("name", ["finetune", "napa-vq", "prd", "joint"])
def test_continual_methods_never_rebuild_an_existing_encoder(name):
    m = build_method(name, backbone="mlp")
    m._new_encoder((1, 8, 8))
    encoder = m.encoder
    assert m._new_encoder((1, 8, 8)) is False and m.encoder is encoder
    with pytest.raises(ShapeError, match=r"\[1, 8, 8\].*\[1, 9, 9\]"):
        m._new_encoder((1, 9, 9))
    assert m.encoder is encoder


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("method", ["ce", "palm"])
def test_ood_checkpoint_refuses_another_shape_and_other_classes(tmp_path, method):
    ckpt, store = tmp_path / f"{method}.pt", tmp_path / "r.sqlite"
    common = ("ood", "--id", "digits:0-4", "--ood", "digits:5-9", "-m", method, "--epochs", 1,
              "--device", "cpu", "--no-progress", "--store", store, "--run-dir", tmp_path)
    assert run(*common, "-o", "image_size=8", "--save-checkpoint", ckpt).exit_code == 0
    before = len(ResultStore(store).records())
    res = run(*common, "-o", "image_size=12", "--checkpoint", ckpt)
    _one_line_error(res, "[1, 8, 8]", "[1, 12, 12]")
    other = ("ood", "--id", "digits:0-3", "--ood", "digits:5-9", "-m", method,
             "--device", "cpu", "--no-progress", "--store", store, "--run-dir", tmp_path)
    _one_line_error(run(*other, "-o", "image_size=8", "--checkpoint", ckpt),
                    "5 ID classes but --id gives 4")
    assert len(ResultStore(store).records()) == before


def _overlapping_features(path) -> None:
    """A feature file whose train and test splits hold the same three classes."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    x = rng.normal(size=(120, 8)).astype(np.float32) + labels[:, None] * 3
    split = np.where(np.arange(120) % 2 == 0, "train", "test")
    np.savez(path, features=x, labels=labels, split=split,
             class_names=np.array(["ant", "bee", "cat"]))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("method", ["ncm", "protonet"])
def test_meta_train_classes_that_overlap_the_test_classes_are_refused(tmp_path, method):
    _overlapping_features(tmp_path / "f.npz")
    store = tmp_path / "r.sqlite"
    args = ("fewshot", "-d", "features", "--data-root", tmp_path / "f.npz", "-m", method,
            "--ways", 3, "--shots", 1, "--queries", 5, "--store", store, *FAST)
    extra = ("--backbone", "mlp", "--train-steps", 3, "--train-ways", 3) \
        if method == "protonet" else ()
    res = run(*args, *extra)
    _one_line_error(res, "share 3 of the 3 evaluated classes", "'ant'", "--allow-class-overlap")
    assert not store.exists() or ResultStore(store).records() == []
    ok = run(*args, *extra, "--allow-class-overlap")
    assert ok.exit_code == 0, ok.output
    (row,) = ResultStore(store).records()
    assert row.config["allow_class_overlap"] is True and row.config["shared_classes"] == 3


def test_digits_few_shot_split_is_class_disjoint(tmp_path):
    from protobench.datasets import load_dataset
    from protobench.datasets.base import shared_classes

    assert shared_classes(load_dataset("digits", "train"), load_dataset("digits", "test")) == []


@pytest.mark.usefixtures("one_thread")
def test_mnist_train_split_is_refused_for_few_shot(tmp_path):
    from tests.datasets.test_torchvision_sets import write_fake_mnist

    write_fake_mnist(tmp_path / "mnist", n_train=100, n_test=100)
    res = run("fewshot", "-d", "mnist", "--data-root", tmp_path / "mnist", "-m", "ncm",
              "--shots", 1, "--queries", 2, "--store", tmp_path / "r.sqlite", *FAST)
    _one_line_error(res, "share 10 of the 10 evaluated classes", "cifar-fs")


@pytest.mark.usefixtures("one_thread")
def test_a_checkpoint_trained_on_the_test_classes_is_refused(tmp_path):
    store = tmp_path / "r.sqlite"
    ckpt = tmp_path / "on_test.pt"
    res = run("fewshot", "-d", "digits", "-m", "protonet", "--train-steps", 3,
              "--train-dataset", "digits:test", "--allow-class-overlap", "-o", "image_size=16",
              "--save-checkpoint", ckpt, "--store", store, *FAST)
    assert res.exit_code == 0, res.output
    again = run("fewshot", "-d", "digits", "--checkpoint", ckpt, "-o", "image_size=16",
                "--store", store, *FAST)
    _one_line_error(again, "share 5 of the 5 evaluated classes")
