"""`mnist`, `cifar10`, `cifar100` on tiny fake files in torchvision's on-disk layout."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from protobench.continual.stream import StreamSpec, stream_from_dataset
from protobench.datasets import get_dataset, load_dataset
from protobench.datasets.torchvision_sets import read_idx
from protobench.errors import DataError


def _idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    code = 0x08  # unsigned byte
    head = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    data = head + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def write_fake_mnist(root: Path, n_train: int = 30, n_test: int = 10) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n, gz in (("train", n_train, False), ("t10k", n_test, True)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 256, (n, 28, 28))
        images[:, 0, 0] = labels  # traceable
        _idx(raw / f"{prefix}-images-idx3-ubyte", images, gz)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz)


def write_fake_cifar10(root: Path, per_batch: int = 10) -> None:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = (np.arange(per_batch) % 10).tolist()
        blob = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                "labels": labels, "batch_label": name}
        (base / name).write_bytes(pickle.dumps(blob))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))


def write_fake_cifar100(root: Path) -> None:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for half, n in (("train", 2), ("test", 1)):
        fine = np.tile(np.arange(100), n)
        blob = {"data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8),
                "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist()}
        (base / half).write_bytes(pickle.dumps(blob))
    meta = {"fine_label_names": [f"class{i:02d}" for i in range(100)],
            "coarse_label_names": [f"super{i}" for i in range(20)]}
    (base / "meta").write_bytes(pickle.dumps(meta))


def test_idx_reader_plain_and_gzipped(tmp_path):
    a = np.arange(24).reshape(2, 3, 4)
    _idx(tmp_path / "a", a)
    _idx(tmp_path / "b", a, gz=True)
    assert (read_idx(tmp_path / "a") == a).all() and (read_idx(tmp_path / "b.gz") == a).all()
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01")
    with pytest.raises(DataError, match="IDX"):
        read_idx(tmp_path / "bad")


def test_mnist(tmp_path):
    write_fake_mnist(tmp_path)
    train = load_dataset("mnist", "train", tmp_path, download=False)
    test = load_dataset("mnist", "test", tmp_path, download=False)
    assert train.x.shape == (30, 1, 28, 28) and test.x.shape == (10, 1, 28, 28)
    assert torch.equal((train.x[:, 0, 0, 0] * 255).round().long(), train.labels)
    assert train.class_names == tuple("0123456789") and train.x.max() <= 1
    assert get_dataset("mnist").stream_splits == ("train", "test")


def test_cifar10(tmp_path):
    write_fake_cifar10(tmp_path)
    train = load_dataset("cifar10", "train", tmp_path, download=False)
    test = load_dataset("cifar10", "test", tmp_path, download=False)
    assert train.x.shape == (50, 3, 32, 32) and len(test) == 10
    assert train.class_names[0] == "airplane" and train.labels.tolist()[:3] == [0, 1, 2]


def test_cifar100_and_a_stream_over_its_halves(tmp_path):
    write_fake_cifar100(tmp_path)
    train = load_dataset("cifar100", "train", tmp_path, download=False)
    assert train.x.shape == (200, 3, 32, 32) and train.num_classes == 100
    s = stream_from_dataset("cifar100", StreamSpec(6, base_classes=50, class_order="pass"),
                            tmp_path, download=False)
    assert s.sizes == (50, 10, 10, 10, 10, 10) and len(s.test) == 100 and len(s.train) == 200
    assert s.class_order[:5] == (68, 56, 78, 8, 23)
    assert s.class_names[0] == "class68"


@pytest.mark.parametrize("name, what", [("mnist", "MNIST"), ("cifar10", "CIFAR-10"),
                                        ("cifar100", "CIFAR-100")])
def test_missing_files_without_download_name_the_fix(tmp_path, name, what):
    with pytest.raises(DataError, match=f"{what} is not in .*--data-root"):
        load_dataset(name, "train", tmp_path, download=False)
