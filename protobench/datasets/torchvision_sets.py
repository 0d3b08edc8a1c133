"""`mnist`, `cifar10`, `cifar100`: the standard sets in torchvision's on-disk format.

Each has a ``train`` and a ``test`` split over the same classes (the official halves), the
sample-level split that class-incremental streams use. Files are read directly from
torchvision's layout under the data root, so an existing copy loads without re-hashing;
when they are missing (and downloads are allowed) torchvision fetches and checks them:

- MNIST: ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (or ``.gz``), 28x28 grey;
- CIFAR-10: ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``, 32x32 RGB;
- CIFAR-100: ``cifar-100-python/{train,test,meta}`` (fine labels), 32x32 RGB; the same
  folder as ``cifar-fs``/``fc100`` (default data root ``<data>/cifar100``).

Images are float32 in ``[0, 1]``, ``[n, C, H, W]``; labels are the official class ids.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from protobench.datasets.base import LabeledData, default_data_root, register_dataset
from protobench.datasets.cifar import BASE_FOLDER as CIFAR100_FOLDER
from protobench.errors import DataError
from protobench.utils import sha256_tensor

SPLITS = ("train", "test")
CIFAR10_FOLDER = "cifar-10-batches-py"
MNIST_CLASSES = tuple(str(d) for d in range(10))


def fetch_or_explain(what: str, root: Path, expected: str, download: bool, fetch) -> None:
    """Download through torchvision (``fetch()``) or explain where the files must be
    (a DataError naming ``expected`` under ``root``); shared by the torchvision-format loaders."""
    if not download:
        raise DataError(f"{what} is not in {root} (expected {expected}); pass --data-root to "
                        "the folder that holds it, or allow the download")
    try:
        fetch()
    except (OSError, RuntimeError) as exc:
        raise DataError(f"{what} is not in {root} and the download failed ({exc}); pass "
                        f"--data-root to a folder holding {expected}") from exc


def pixel_data(pixels: np.ndarray, labels: np.ndarray, names: tuple[str, ...], name: str,
               split: str) -> LabeledData:
    """uint8 ``pixels`` ``[n, C, H, W]`` and ``labels`` ``[n]`` as a LabeledData in ``[0, 1]``,
    checksummed on the raw bytes (shared by the torchvision-format loaders)."""
    x = torch.from_numpy(np.ascontiguousarray(pixels))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return LabeledData(x=x.to(torch.float32).div_(255.0), labels=y, class_names=names,
                       name=name, split=split, checksum=sha256_tensor(x, y))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format, optionally gzipped) as a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file; delete it and download again")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(*dims).copy()


def _mnist_file(raw: Path, stem: str) -> Path | None:
    for p in (raw / stem, raw / f"{stem}.gz"):
        if p.is_file():
            return p
    return None


def read_mnist_format(name: str, root: Path, split: str,
                      download: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(images [n, H, W], labels [n])`` of torchvision's ``name`` (``MNIST``,
    ``FashionMNIST``) under ``root/name/raw``, downloaded through torchvision when absent."""
    raw = root / name / "raw"
    prefix = "train" if split == "train" else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    if any(_mnist_file(raw, s) is None for s in stems):
        import torchvision.datasets

        cls = getattr(torchvision.datasets, name)
        fetch_or_explain(name, root, f"{name}/raw/{stems[0]}", download,
               lambda: cls(str(root), train=split == "train", download=True))
    images, labels = (read_idx(_mnist_file(raw, s)) for s in stems)  # type: ignore[arg-type]
    if len(images) != len(labels):
        raise DataError(f"{name} {split} in {raw} has {len(images)} images but {len(labels)} "
                        "labels; delete the folder and download again")
    return images, labels


@register_dataset(
    "mnist",
    splits=SPLITS,
    description="MNIST 28x28 grey, official train/test halves (torchvision download)",
    needs_root=True,
    stream_splits=SPLITS,
)
def load_mnist(split: str, root: Path | None = None, download: bool = True) -> LabeledData:
    root = Path(root) if root is not None else default_data_root() / "mnist"
    images, labels = read_mnist_format("MNIST", root, split, download)
    data = pixel_data(images[:, None], labels, MNIST_CLASSES, "mnist", split)
    return replace(data, display_names=tuple(f"digit {c}" for c in MNIST_CLASSES))


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")  # the CIFAR format is a pickle
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise DataError(f"cannot read {path} ({exc!r}); delete the folder and let protobench "
                        "download it again") from exc


@register_dataset(
    "cifar10",
    splits=SPLITS,
    description="CIFAR-10 32x32 RGB, official train/test halves (torchvision download)",
    needs_root=True,
    stream_splits=SPLITS,
)
def load_cifar10(split: str, root: Path | None = None, download: bool = True) -> LabeledData:
    root = Path(root) if root is not None else default_data_root() / "cifar10"
    base = root / CIFAR10_FOLDER
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if not all((base / f).is_file() for f in [*files, "batches.meta"]):
        from torchvision.datasets import CIFAR10

        fetch_or_explain("CIFAR-10", root, f"{CIFAR10_FOLDER}/", download,
               lambda: CIFAR10(str(root), train=True, download=True))
    batches = [_unpickle(base / f) for f in files]
    names = tuple(_unpickle(base / "batches.meta")["label_names"])
    data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
    labels = np.concatenate([np.asarray(b["labels"]) for b in batches])
    return pixel_data(data.reshape(-1, 3, 32, 32), labels, names, "cifar10", split)


@register_dataset(
    "cifar100",
    splits=SPLITS,
    description="CIFAR-100 32x32 RGB, 100 fine classes, official train/test (torchvision)",
    needs_root=True,
    stream_splits=SPLITS,
)
def load_cifar100(split: str, root: Path | None = None, download: bool = True) -> LabeledData:
    root = Path(root) if root is not None else default_data_root() / "cifar100"
    base = root / CIFAR100_FOLDER
    if not all((base / f).is_file() for f in (split, "meta")):
        from torchvision.datasets import CIFAR100

        fetch_or_explain("CIFAR-100", root, f"{CIFAR100_FOLDER}/", download,
               lambda: CIFAR100(str(root), train=True, download=True))
    half, meta = _unpickle(base / split), _unpickle(base / "meta")
    data = np.asarray(half["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return pixel_data(data, np.asarray(half["fine_labels"]), tuple(meta["fine_label_names"]),
                    "cifar100", split)
