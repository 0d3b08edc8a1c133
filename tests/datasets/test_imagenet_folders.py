"""`tiny-imagenet` (official layout) and `imagenet-subset` (folders + class list)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protobench.datasets import load_dataset
from protobench.errors import DataError

WNIDS = ["n02", "n01", "n03"]


def _jpeg(path: Path, value: int, size: int = 64) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def write_fake_tiny(root: Path, per_class: int = 3, val: int = 2) -> Path:
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (base / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tcat\n"
                                    "n03\tcat, true cat\nn99\tunused\n")
    notes = []
    for c, w in enumerate(WNIDS):
        for k in range(per_class):
            _jpeg(base / "train" / w / "images" / f"{w}_{k}.JPEG", 40 * c)
        for k in range(val):
            name = f"val_{c * val + k}.JPEG"
            _jpeg(base / "val" / "images" / name, 40 * c)
            notes.append(f"{name}\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(notes) + "\n")
    return base


def test_tiny_imagenet_official_layout(tmp_path):
    write_fake_tiny(tmp_path)
    train = load_dataset("tiny-imagenet", "train", tmp_path, image_size=16)
    val = load_dataset("tiny-imagenet", "val", tmp_path / "tiny-imagenet-200", image_size=16)
    assert train.meta["wnid"] == ["n01", "n02", "n03"]  # sorted wnids
    assert train.class_names == ("goldfish", "cat (n02)", "cat (n03)")
    assert len(train) == 9 and len(val) == 6 and val.class_names == train.class_names
    x = val.get(val.class_table[0, :1])
    assert x.shape == (1, 3, 16, 16)
    assert abs(float(x.mean()) - 40 / 255) < 0.02  # class n01 images have value 40


def test_tiny_imagenet_missing_or_broken(tmp_path):
    with pytest.raises(DataError, match="tiny-imagenet-200.zip"):
        load_dataset("tiny-imagenet", "train", tmp_path)
    base = write_fake_tiny(tmp_path)
    (base / "val" / "images" / "val_0.JPEG").unlink()
    with pytest.raises(DataError, match="incomplete"):
        load_dataset("tiny-imagenet", "val", tmp_path)


def test_imagenet_subset_with_a_class_list(tmp_path):
    for split, n in (("train", 3), ("val", 1)):
        for c, w in enumerate(["n05", "n04", "n06", "n07"]):
            for k in range(n):
                _jpeg(tmp_path / split / w / f"{k}.JPEG", 30 * c, size=20)
    (tmp_path / "classes.txt").write_text("# subset\nn06 extra\nn04\n")
    train = load_dataset("imagenet-subset", "train", tmp_path, image_size=8)
    val = load_dataset("imagenet-subset", "val", tmp_path, image_size=8)
    assert train.meta["wnid"] == ["n06", "n04"] and len(train) == 6 and len(val) == 2
    assert train.get(train.class_table[0, :1]).shape == (1, 3, 8, 8)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("imagenet-subset", "train", tmp_path, class_list="other.txt")
    (tmp_path / "classes.txt").write_text("n09\n")
    with pytest.raises(DataError, match="n09"):
        load_dataset("imagenet-subset", "train", tmp_path)
    (tmp_path / "classes.txt").unlink()
    assert load_dataset("imagenet-subset", "train", tmp_path).num_classes == 4
