"""`cifar-fs` and `fc100`: the shipped split lists, and the loaders on a tiny fake CIFAR-100
written in torchvision's pickle layout."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from protobench.datasets import cifar, load_dataset
from protobench.errors import DataError

FINE = sorted(f for fines in cifar.CIFAR100_HIERARCHY.values() for f in fines)
COARSE = list(cifar.CIFAR100_HIERARCHY)
PER_CLASS = (3, 1)  # fake images per class in the train / test halves


def _write_fake_cifar100(root: Path) -> None:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    coarse_of = {f: COARSE.index(c) for c, fines in cifar.CIFAR100_HIERARCHY.items() for f in fines}
    rng = np.random.default_rng(0)
    for half, n in zip(("train", "test"), PER_CLASS):
        fine = np.tile(np.arange(100), n)
        rng.shuffle(fine)
        data = rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)
        data[:, 0] = fine  # red channel, pixel (0, 0) = fine label id: lets the test trace images
        data[:, 1024] = 200 if half == "train" else 100  # green (0, 0) marks the half
        blob = {"data": data, "fine_labels": fine.tolist(),
                "coarse_labels": [coarse_of[FINE[f]] for f in fine]}
        (base / half).write_bytes(pickle.dumps(blob))
    meta = {"fine_label_names": FINE, "coarse_label_names": COARSE}
    (base / "meta").write_bytes(pickle.dumps(meta))


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    _write_fake_cifar100(root)
    return root


def test_hierarchy_is_cifar100():
    assert len(COARSE) == 20 and len(FINE) == len(set(FINE)) == 100
    assert COARSE == sorted(COARSE)  # coarse label id = alphabetical position


@pytest.mark.parametrize("dataset,sizes", [("cifar-fs", (64, 16, 20)), ("fc100", (60, 20, 20))])
def test_split_lists_are_disjoint_valid_and_complete(dataset, sizes):
    lists = [cifar.split_classes(dataset, s) for s in ("train", "val", "test")]
    assert tuple(len(x) for x in lists) == sizes
    assert all(len(set(x)) == len(x) for x in lists)
    assert set(lists[0]).isdisjoint(lists[1]) and set(lists[0]).isdisjoint(lists[2])
    assert set(lists[1]).isdisjoint(lists[2])
    assert set().union(*lists) == set(FINE)


def test_published_anchors():
    assert cifar.split_classes("cifar-fs", "val")[:4] == ["beaver", "beetle", "butterfly", "camel"]
    assert "whale" in cifar.split_classes("cifar-fs", "test")
    assert cifar.split_classes("fc100", "test")[:3] == ["baby", "beaver", "bee"]  # people, ...
    supers = [COARSE[c] for c in cifar.FC100_SUPERCLASSES["val"]]
    assert supers == ["large_carnivores", "large_omnivores_and_herbivores",
                      "non-insect_invertebrates", "small_mammals"]


@pytest.mark.parametrize("dataset,split", [("cifar-fs", "train"), ("fc100", "test")])
def test_loader_pools_both_halves_of_the_split_classes(fake_root, dataset, split):
    d = load_dataset(dataset, split, fake_root, download=False)
    names = cifar.split_classes(dataset, split)
    assert list(d.class_names) == names  # sorted names = fine-label-id order
    assert d.x.shape == (len(names) * sum(PER_CLASS), 3, 32, 32) and d.x.dtype == torch.float32
    assert (d.class_counts == sum(PER_CLASS)).all()
    assert 0.0 <= d.x.min() and d.x.max() <= 1.0
    red = torch.round(d.x[:, 0, 0, 0] * 255).long()
    expected = torch.tensor([FINE.index(n) for n in names])[d.labels]
    assert torch.equal(red, expected)  # each image carries its own class
    halves = torch.round(d.x[:, 1, 0, 0] * 255).long()
    assert (halves == 200).sum() == len(names) * PER_CLASS[0]
    assert (halves == 100).sum() == len(names) * PER_CLASS[1]
    assert all(n in cifar.CIFAR100_HIERARCHY[s] for n, s in zip(names, d.meta["superclass"]))


def test_fc100_classes_come_from_their_superclasses(fake_root):
    d = load_dataset("fc100", "val", fake_root, download=False)
    assert set(d.meta["superclass"]) == {COARSE[c] for c in cifar.FC100_SUPERCLASSES["val"]}


def test_missing_cifar_without_download_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="--data-root") as err:
        load_dataset("cifar-fs", "test", tmp_path, download=False)
    assert "\n" not in str(err.value)


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    import inspect

    import torchvision.datasets

    # the call the loader makes fits torchvision's real signature
    inspect.signature(torchvision.datasets.CIFAR100).bind(str(tmp_path), train=True, download=True)
    calls = []

    class FakeCIFAR100:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            _write_fake_cifar100(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR100)
    d = load_dataset("fc100", "train", tmp_path)
    assert calls == [(str(tmp_path), True, True)] and d.num_classes == 60

    class FailingCIFAR100:
        def __init__(self, root, train, download):
            raise RuntimeError("Dataset not found or corrupted.")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FailingCIFAR100)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="download failed"):
        load_dataset("cifar-fs", "train", empty)
