"""`image-folder`: class-per-folder trees, class (not image) splits, lazy decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from protobench.datasets import load_dataset
from protobench.datasets.folder import ImageFileSource
from protobench.errors import DataError, UserError


def _tree(root: Path, classes: int, per_class: int = 3, size: tuple[int, int] = (12, 10)) -> Path:
    """``root/class_k/img_j.png``; every pixel of class k's images has red value 10 * k."""
    for k in range(classes):
        d = root / f"class_{k:02d}"
        d.mkdir(parents=True)
        for j in range(per_class):
            a = np.zeros((size[1], size[0], 3), dtype=np.uint8)
            a[..., 0], a[..., 1] = 10 * k, 20 * j
            Image.fromarray(a).save(d / f"img_{j}.png")
    return root


def test_classes_are_split_not_images(tmp_path):
    _tree(tmp_path, 10)
    parts = {s: load_dataset("image-folder", s, tmp_path) for s in ("train", "test", "all")}
    assert parts["test"].num_classes == 4 and parts["train"].num_classes == 6
    assert set(parts["train"].class_names).isdisjoint(parts["test"].class_names)
    assert set(parts["train"].class_names) | set(parts["test"].class_names) == \
        set(parts["all"].class_names)
    assert all((d.class_counts == 3).all() for d in parts.values())
    with pytest.raises(UserError, match="val_fraction"):
        load_dataset("image-folder", "val", tmp_path)
    val = load_dataset("image-folder", "val", tmp_path, val_fraction=0.2)
    assert val.num_classes == 2 and set(val.class_names).isdisjoint(parts["test"].class_names)


def test_split_is_seeded(tmp_path):
    _tree(tmp_path, 10)
    a = load_dataset("image-folder", "test", tmp_path, split_seed=3)
    b = load_dataset("image-folder", "test", tmp_path, split_seed=3)
    c = load_dataset("image-folder", "test", tmp_path, split_seed=4)
    assert a.class_names == b.class_names and a.checksum == b.checksum
    assert a.class_names != c.class_names
    with pytest.raises(UserError, match="test_fraction"):
        load_dataset("image-folder", "test", tmp_path, test_fraction=0.7, val_fraction=0.5)


def test_images_are_decoded_lazily_resized_and_scaled(tmp_path):
    _tree(tmp_path, 5)
    d = load_dataset("image-folder", "all", tmp_path, image_size=16)
    assert isinstance(d.x, ImageFileSource) and len(d.x) == 15
    batch = d.get(torch.tensor([0, 14]))
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == torch.float32
    k = d.class_names.index("class_04")
    assert d.labels[14] == k
    assert torch.allclose(batch[1, 0], torch.full((16, 16), 40 / 255))  # red = 10 * 4
    assert torch.allclose(batch[1, 1], torch.full((16, 16), 40 / 255))  # green = 20 * 2
    grey = load_dataset("image-folder", "all", tmp_path, channels=1, image_size=8)
    assert grey.get(torch.tensor([3, 4])).shape == (2, 1, 8, 8)
    with pytest.raises(UserError, match="channels"):
        load_dataset("image-folder", "all", tmp_path, channels=2)


def test_split_subfolders_are_used_when_present(tmp_path):
    _tree(tmp_path / "train", 3)
    _tree(tmp_path / "test", 2)
    (tmp_path / "test" / "class_00").rename(tmp_path / "test" / "zebra")
    train = load_dataset("image-folder", "train", tmp_path)
    test = load_dataset("image-folder", "test", tmp_path)
    every = load_dataset("image-folder", "all", tmp_path)
    assert train.class_names == ("class_00", "class_01", "class_02")
    assert test.class_names == ("class_01", "zebra") and test.meta["layout"] == "split-folders"
    assert every.num_classes == 4 and every.class_counts.tolist() == [3, 6, 3, 3]
    with pytest.raises(DataError, match="no val/"):
        load_dataset("image-folder", "val", tmp_path)


def test_empty_or_broken_trees_are_clear_errors(tmp_path):
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_dataset("image-folder", "all", tmp_path)
    (tmp_path / "empty_class" / "bad.png").write_bytes(b"not a png")
    d = load_dataset("image-folder", "all", tmp_path)
    with pytest.raises(DataError, match="cannot read image"):
        d.get(torch.tensor([0]))
