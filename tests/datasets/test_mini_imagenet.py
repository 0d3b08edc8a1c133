"""`mini-imagenet`: Ravi & Larochelle CSV layout and the split-folder layout, on fakes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from protobench.datasets import load_dataset
from protobench.errors import DataError

WNIDS = {"train": ["n01532829", "n01558993", "n01704323"], "test": ["n01930112", "n01981276"]}


def _jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 30, 3), value, dtype=np.uint8)).save(path, quality=95)


def _csv_layout(root: Path, per_class: int = 2) -> Path:
    for split, wnids in WNIDS.items():
        rows = ["filename,label"]
        for k, wnid in enumerate(wnids):
            for j in range(1, per_class + 1):
                name = f"{wnid}{j:08d}.jpg"
                _jpeg(root / "images" / name, 40 * k + 10)
                rows.append(f"{name},{wnid}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def test_csv_layout(tmp_path):
    _csv_layout(tmp_path)
    d = load_dataset("mini-imagenet", "train", tmp_path)
    assert d.class_names == tuple(WNIDS["train"]) and d.meta["layout"] == "csv"
    assert len(d) == 6 and d.class_counts.tolist() == [2, 2, 2]
    x = d.get(torch.arange(6))
    assert x.shape == (6, 3, 84, 84) and x.dtype == torch.float32
    means = x.mean(dim=(1, 2, 3)) * 255  # a flat image stays flat through JPEG and resizing
    assert torch.allclose(means, (40 * d.labels + 10).float(), atol=2)
    test = load_dataset("mini-imagenet", "test", tmp_path, image_size=32)
    assert test.num_classes == 2 and test.get(torch.tensor([0])).shape == (1, 3, 32, 32)
    assert set(test.class_names).isdisjoint(d.class_names)


def test_folder_layout(tmp_path):
    for k, wnid in enumerate(WNIDS["test"]):
        for j in range(3):
            _jpeg(tmp_path / "test" / wnid / f"{j}.jpg", 50 * k)
    d = load_dataset("mini-imagenet", "test", tmp_path)
    assert d.class_names == tuple(WNIDS["test"]) and d.meta["layout"] == "folders"
    assert d.class_counts.tolist() == [3, 3]


def test_missing_data_tells_where_to_put_it(tmp_path):
    with pytest.raises(DataError, match="no public download") as err:
        load_dataset("mini-imagenet", "val", tmp_path)
    assert "val.csv" in str(err.value) and "\n" not in str(err.value)


def test_missing_images_and_bad_csv(tmp_path):
    _csv_layout(tmp_path)
    (tmp_path / "images" / "n0153282900000002.jpg").unlink()
    with pytest.raises(DataError, match="1 images listed in train.csv are missing"):
        load_dataset("mini-imagenet", "train", tmp_path)
    (tmp_path / "test.csv").write_text("path;class\nx;y\n")
    with pytest.raises(DataError, match="filename,label"):
        load_dataset("mini-imagenet", "test", tmp_path)
