"""OOD test sets read from fake local files in the torchvision / archive layouts."""

import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from protobench.datasets import load_dataset
from protobench.errors import DataError


def _png(path, seed=0, size=(40, 36)):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def test_svhn_mat(tmp_path):
    from scipy.io import savemat

    x = np.random.default_rng(0).integers(0, 255, (32, 32, 3, 5), dtype=np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": x, "y": np.array([[10], [1], [2], [3], [10]])})
    d = load_dataset("svhn", "test", tmp_path, download=False)
    assert d.labels.tolist() == [0, 1, 2, 3, 0]
    assert torch.allclose(d.x[1, :, 4, 7] * 255, torch.tensor(x[4, 7, :, 1], dtype=torch.float32))


def test_flat_sets_and_textures(tmp_path):
    for i in range(3):
        _png(tmp_path / "lsun" / "LSUN" / "test" / f"{i}.jpg", i)
        _png(tmp_path / "tex" / "dtd" / "images" / ("banded" if i else "woven") / f"{i}.jpg", i)
    lsun = load_dataset("lsun", "test", tmp_path / "lsun", download=False)
    assert len(lsun) == 3 and lsun.get(torch.tensor([0])).shape == (1, 3, 32, 32)
    tex = load_dataset("textures", "test", tmp_path / "tex", download=False, image_size=8)
    assert tex.class_names == ("banded", "woven") and tex.get(torch.tensor([2])).shape[-1] == 8
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no isun images"):
        load_dataset("isun", "test", tmp_path / "empty", download=False)


def test_places_subset_follows_palm_seed(tmp_path):
    for i in range(12):
        _png(tmp_path / "test_256" / f"Places365_test_{i:08d}.jpg", i, (8, 8))
    d = load_dataset("places365", "test", tmp_path, download=False, num_samples=5)
    np.random.seed(1)
    pick = np.random.choice(12, 5, replace=False)
    names = sorted(p.name for p in (tmp_path / "test_256").iterdir())
    assert [p.split("/")[-1] for p in d.x.paths] == [names[i] for i in pick]
    assert d.meta["available"] == 12


def test_fashion_mnist_idx(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    header = bytes([0, 0, 8, 3]) + np.array([3, 28, 28], ">i4").tobytes()
    with gzip.open(raw / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + imgs.tobytes())
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + np.array([3], ">i4").tobytes() + bytes([9, 0, 4]))
    d = load_dataset("fashion-mnist", "test", tmp_path, download=False)
    assert d.labels.tolist() == [9, 0, 4] and d.class_names[9] == "Ankle boot"
