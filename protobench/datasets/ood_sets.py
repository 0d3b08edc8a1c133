"""Standard OOD test sets: SVHN, Textures (DTD), Places365, LSUN (crop / resize), iSUN and
FashionMNIST (CIFAR-10/100 and MNIST are in ``torchvision_sets``, TinyImageNet is
``tiny-imagenet`` in ``imagenet_folders``: as an OOD set its 10,000 ``val`` images).

Each reads an existing local copy (``--ood-root NAME=FOLDER`` or the default data root
``<data>/<name>``) and, when it is missing and downloads are allowed, fetches the official
archive (torchvision for SVHN / DTD / FashionMNIST, the archives the ODIN / KNN / CIDER /
PALM lineage links to for the others). Images are decoded lazily, resized to
``image_size`` (default 32, the CIFAR protocol; the OOD job passes the ID size) and RGB.

- ``svhn``: ``test_32x32.mat`` / ``train_32x32.mat`` (torchvision format; label 10 -> 0).
  PALM's loader reads the full 26,032-image test set (palm.md section 9); the size is recorded.
- ``textures``: every DTD image (5,640, 47 classes) under ``dtd/images/<class>/``.
- ``places365``: the images under ``test_256/`` (or ``val_256/``), sorted, then a random
  ``num_samples`` = 10,000 of them drawn with ``np.random.seed(subset_seed=1)`` +
  ``np.random.choice`` (PALM's data loader); ``num_samples=0`` keeps all.
- ``lsun`` (LSUN-Crop), ``lsun-resize``, ``isun``: the ODIN tarballs (10,000 / 10,000 /
  8,925 images).
- ``fashion-mnist``: ``FashionMNIST/raw`` IDX files, official train/test halves.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np

from protobench.datasets._download import DownloadError, download
from protobench.datasets.base import LabeledData, default_data_root, register_dataset
from protobench.datasets.folder import class_folders, is_image, lazy_images
from protobench.datasets.torchvision_sets import fetch_or_explain, pixel_data, read_mnist_format
from protobench.errors import DataError

ARCHIVES = {
    "lsun": ("https://www.dropbox.com/s/fhtsw1m3qxlwj6h/LSUN.tar.gz?dl=1", "LSUN"),
    "lsun-resize": ("https://www.dropbox.com/s/moqh2wh8696c3yl/LSUN_resize.tar.gz?dl=1",
                    "LSUN_resize"),
    "isun": ("https://www.dropbox.com/s/ssz7qxfqae0cca5/iSUN.tar.gz?dl=1", "iSUN"),
    "textures": ("https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                 "dtd/images"),
    "places365": ("http://data.csail.mit.edu/places/places365/test_256.tar", "test_256"),
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


def _root(name: str, root: Path | None) -> Path:
    return Path(root) if root is not None else default_data_root() / name


def _fetch_archive(name: str, root: Path) -> None:
    url, _ = ARCHIVES[name]
    archive = root / url.split("/")[-1].split("?")[0]
    try:
        download(url, archive)
    except DownloadError as exc:
        raise DataError(f"{name} is not in {root} and the download failed ({exc}); pass "
                        f"--ood-root {name}=FOLDER holding {ARCHIVES[name][1]}/") from exc
    opener = zipfile.ZipFile if archive.suffix == ".zip" else tarfile.open
    with opener(archive) as f:  # type: ignore[operator]
        f.extractall(root)


def _image_dir(name: str, root: Path, download_ok: bool, extra: tuple[str, ...] = ()) -> Path:
    """The folder holding the images: ``root/<archive folder>``, an alternative, or root."""
    sub = ARCHIVES[name][1]
    candidates = [root / sub, *(root / e for e in extra), root / Path(sub).name, root]
    for c in candidates:
        if c.is_dir() and any(is_image(p) for p in c.rglob("*")):
            return c
    if not download_ok:
        raise DataError(f"no {name} images under {root} (expected {sub}/); pass --ood-root "
                        f"{name}=FOLDER or allow the download")
    _fetch_archive(name, root)
    return _image_dir(name, root, False, extra)


def _flat_images(name: str, folder: Path, root: Path, image_size: int,
                 meta: dict | None = None, keep: list[Path] | None = None) -> LabeledData:
    files = keep if keep is not None else sorted(p for p in folder.rglob("*") if is_image(p))
    if not files:
        raise DataError(f"no {name} images under {folder}")
    return lazy_images({name: files}, root, name, "test", image_size, 3,
                       {"images": len(files), **(meta or {})})


def _register_flat(name: str, description: str, extra: tuple[str, ...] = ()) -> None:
    @register_dataset(name, splits=("test",), description=description, needs_root=True)
    def load(split: str, root: Path | None = None, download: bool = True,
             image_size: int = 32) -> LabeledData:
        base = _root(name, root)
        folder = _image_dir(name, base, download, extra)
        return _flat_images(name, folder, base, image_size)

    load.__name__ = f"load_{name.replace('-', '_')}"


_register_flat("lsun", "LSUN-Crop OOD test set (ODIN), 10,000 images, 32x32 RGB")
_register_flat("lsun-resize", "LSUN-Resize OOD test set (ODIN), 10,000 images, 32x32 RGB")
_register_flat("isun", "iSUN OOD test set (ODIN), 8,925 images, 32x32 RGB")


@register_dataset("textures", splits=("test",), needs_root=True,
                  description="Textures / DTD (5,640 images, 47 classes) as an OOD set, 32x32")
def load_textures(split: str, root: Path | None = None, download: bool = True,
                  image_size: int = 32) -> LabeledData:
    base = _root("textures", root)
    folder = _image_dir("textures", base, download, ("dtd/dtd/images", "images"))
    classes = class_folders(folder)
    if not classes:
        raise DataError(f"no Textures class folders under {folder} (expected <class>/<image>)")
    return lazy_images(classes, base, "textures", "test", image_size, 3,
                       {"images": sum(len(v) for v in classes.values())})


@register_dataset("places365", splits=("test",), needs_root=True,
                  description="Places365 test_256, random 10,000 (seed 1, as PALM), 32x32 RGB")
def load_places365(split: str, root: Path | None = None, download: bool = True,
                   image_size: int = 32, num_samples: int = 10000,
                   subset_seed: int = 1) -> LabeledData:
    base = _root("places365", root)
    folder = _image_dir("places365", base, download, ("val_256",))
    files = sorted(p for p in folder.rglob("*") if is_image(p))
    total = len(files)
    if 0 < int(num_samples) < total:
        np.random.seed(int(subset_seed))  # PALM: global seed, then np.random.choice
        pick = np.random.choice(total, int(num_samples), replace=False)
        files = [files[i] for i in pick]
    return _flat_images("places365", folder, base, image_size,
                        {"available": total, "subset_seed": int(subset_seed)}, files)


@register_dataset("svhn", splits=("train", "test", "extra"), needs_root=True,
                  description="SVHN 32x32 RGB digits (torchvision .mat format), label 10 -> 0")
def load_svhn(split: str, root: Path | None = None, download: bool = True) -> LabeledData:
    base = _root("svhn", root)
    path = base / f"{split}_32x32.mat"
    if not path.is_file():
        from torchvision.datasets import SVHN

        fetch_or_explain("SVHN", base, path.name, download,
               lambda: SVHN(str(base), split=split, download=True))
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} ({exc}); delete it and download again") from exc
    x = np.transpose(mat["X"], (3, 2, 0, 1))  # [32, 32, 3, n] -> [n, 3, 32, 32]
    y = mat["y"].astype(np.int64).reshape(-1) % 10
    return pixel_data(x, y, tuple(str(d) for d in range(10)), "svhn", split)


@register_dataset("fashion-mnist", splits=("train", "test"), needs_root=True,
                  stream_splits=("train", "test"),
                  description="FashionMNIST 28x28 grey, official train/test (torchvision)")
def load_fashion_mnist(split: str, root: Path | None = None,
                       download: bool = True) -> LabeledData:
    base = _root("fashion-mnist", root)
    images, labels = read_mnist_format("FashionMNIST", base, split, download)
    return pixel_data(images[:, None], labels, FASHION_CLASSES, "fashion-mnist", split)
