"""Every registered dataset declares consistent splits, and every embedded one loads.

Parametrised over the dataset registry. The declarations are checked for all datasets
(no data needed); the :class:`~protobench.datasets.base.LabeledData` invariants are checked
on every split of every embedded dataset (no data root), and on datasets that need a root
only when the data are here (Omniglot from ``../shared/data/omniglot``); the others are
skipped with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from protobench.datasets import load_dataset
from protobench.registry import registry

DATASETS = registry("datasets")
EMBEDDED = [e.name for e in DATASETS.list() if not e.needs_root]
NEEDS_ROOT = [e.name for e in DATASETS.list() if e.needs_root]
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
OMNIGLOT = Path(os.environ.get("PROTOBENCH_OMNIGLOT_DIR", SHARED_DATA / "omniglot"))
# dataset -> (data root, a file pattern that must be in it)
LOCAL_DATA = {"omniglot": (OMNIGLOT, "images_*"), "omniglot-runs": (OMNIGLOT, "all_runs*")}


def check_invariants(data, name: str, split: str) -> None:
    """The LabeledData contract: int64 labels ``0..C-1`` with every class present, one name
    (and display name) per class, samples aligned with labels, a checksum, and the
    dataset's own name and split."""
    assert data.name == name and data.split == split
    assert data.labels.dtype == torch.int64 and data.labels.dim() == 1
    assert len(data) > 0 and len(data.x) == len(data.labels)
    assert len(data.class_names) == data.num_classes > 0
    assert len(set(data.class_names)) == data.num_classes, "class names are unique"
    assert int(data.labels.min()) >= 0 and int(data.labels.max()) < data.num_classes
    assert (data.class_counts > 0).all(), "every class of the split has samples"
    assert not data.display_names or len(data.display_names) == data.num_classes
    assert len(data.readable_names) == data.num_classes
    assert data.checksum
    first = data.get(torch.tensor([0, len(data) - 1]))
    assert first.dtype == torch.float32 and len(first) == 2 and torch.isfinite(first).all()


@pytest.mark.parametrize("name", DATASETS.names())
def test_declared_splits_exist(name: str) -> None:
    entry = DATASETS.get(name)
    assert entry.name == name and entry.description
    assert entry.splits and len(set(entry.splits)) == len(entry.splits)
    assert entry.default_test_split in entry.splits
    if entry.stream_splits is not None:
        assert set(entry.stream_splits) <= set(entry.splits), entry.stream_splits
    if entry.train_dataset is not None:
        other, split = entry.train_dataset
        assert split in DATASETS.get(other).splits, entry.train_dataset
    d = DATASETS.describe(name)
    assert d["splits"] == list(entry.splits) and d["needs_root"] == entry.needs_root
    assert all(p["name"] not in ("split", "root", "download") for p in d["parameters"])


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_dataset_loads_with_its_invariants(name: str) -> None:
    entry = DATASETS.get(name)
    for split in entry.splits:
        data = load_dataset(name, split)
        check_invariants(data, name, split)
        again = load_dataset(name, split)
        assert again.checksum == data.checksum, "checksum stable across loads"
        assert torch.equal(again.labels, data.labels)


@pytest.mark.parametrize("name", NEEDS_ROOT)
def test_dataset_with_a_root_loads_when_its_data_are_here(name: str) -> None:
    root, pattern = LOCAL_DATA.get(name, (None, ""))
    if root is None or not any(root.glob(pattern)):
        where = f" (no {pattern} in {root})" if root is not None else ""
        pytest.skip(f"{name} needs a data root (--data-root) that is not available offline"
                    f"{where}")
    entry = DATASETS.get(name)  # "all": whatever part of the data is present
    split = "all" if "all" in entry.splits else entry.default_test_split
    data = load_dataset(name, split, root=root, download=False)
    check_invariants(data, name, split)
    assert load_dataset(name, split, root=root, download=False).checksum == data.checksum
