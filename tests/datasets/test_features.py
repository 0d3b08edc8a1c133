"""`features`: .npz / .pt feature files, optional split array, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protobench.datasets import load_dataset
from protobench.errors import DataError


def _arrays(n: int = 12, dim: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), n // 4)
    return {"features": rng.normal(size=(n, dim)).astype(np.float32), "labels": labels,
            "class_names": np.array(["ant", "bee", "cat", "dog"]),
            "split": np.where(labels < 2, "train", "test")}


def test_npz_all_and_splits(tmp_path):
    a = _arrays()
    np.savez(tmp_path / "f.npz", **a)
    full = load_dataset("features", "all", tmp_path / "f.npz")
    assert full.is_features and full.x.shape == (12, 5) and full.x.dtype == torch.float32
    assert torch.equal(full.x, torch.from_numpy(a["features"]))
    assert full.class_names == ("ant", "bee", "cat", "dog")
    test = load_dataset("features", "test", tmp_path / "f.npz")
    assert test.class_names == ("cat", "dog") and test.labels.tolist() == [0] * 3 + [1] * 3
    assert test.meta["parent_classes"] == [2, 3]
    assert torch.equal(test.x, torch.from_numpy(a["features"][6:]))
    with pytest.raises(DataError, match="no 'val' samples"):
        load_dataset("features", "val", tmp_path / "f.npz")


def test_pt_file_with_short_keys_and_string_labels(tmp_path):
    x = torch.randn(6, 3)
    torch.save({"x": x, "y": ["b", "a", "b", "c", "a", "c"]}, tmp_path / "f.pt")
    d = load_dataset("features", "all", root=None, path=tmp_path / "f.pt")
    assert d.class_names == ("a", "b", "c") and d.labels.tolist() == [1, 0, 1, 2, 0, 2]
    assert torch.equal(d.x, x)
    with pytest.raises(DataError, match="no per-sample 'split' array"):
        load_dataset("features", "train", tmp_path / "f.pt")


def test_missing_labels_names_are_generated_and_gaps_compacted(tmp_path):
    np.savez(tmp_path / "f.npz", x=np.ones((3, 2)), y=np.array([0, 5, 5]))
    d = load_dataset("features", "all", tmp_path / "f.npz")
    assert d.class_names == ("class 0", "class 5") and d.labels.tolist() == [0, 1, 1]


@pytest.mark.parametrize("change,match", [
    ({"features": np.ones((12,))}, "numeric \\[n, D\\]"),
    ({"labels": np.zeros(11, dtype=int)}, "numeric \\[n, D\\]"),
    ({"features": np.full((12, 5), np.nan)}, "60 feature values are NaN"),
    ({"labels": np.full(12, 1.5)}, "integer class ids"),
    ({"labels": -np.ones(12, dtype=int)}, "integer class ids"),
    ({"class_names": np.array(["ant"])}, "1 class_names"),
    ({"split": np.array(["train"])}, "one split name per sample"),
])
def test_bad_arrays_are_one_line_data_errors(tmp_path, change, match):
    np.savez(tmp_path / "f.npz", **{**_arrays(), **change})
    with pytest.raises(DataError, match=match) as err:
        load_dataset("features", "test", tmp_path / "f.npz")
    assert "\n" not in str(err.value)


def test_missing_file_wrong_format_and_missing_arrays(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("features", "all", tmp_path / "nope.npz")
    with pytest.raises(DataError, match="not a file"):
        load_dataset("features", "all", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("features", "all", path=tmp_path / "nope.pt")
    (tmp_path / "f.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="neither .npz nor .pt"):
        load_dataset("features", "all", tmp_path / "f.csv")
    np.savez(tmp_path / "g.npz", feats=np.ones((2, 2)))
    with pytest.raises(DataError, match="no 'features' \\(or 'x'\\) array"):
        load_dataset("features", "all", tmp_path / "g.npz")
    np.savez(tmp_path / "h.npz", x=np.ones((2, 2)), y=np.array(["a", None], dtype=object))
    with pytest.raises(DataError, match="np.str_"):
        load_dataset("features", "all", tmp_path / "h.npz")
