"""`image-folder`: any class-per-folder image tree, loaded lazily.

Layouts: ``root/<class>/<images>``, or ``root/{train,val,test}/<class>/<images>``
when those split folders exist (then ``all`` merges them by class name).
Without split folders the CLASSES (never the images) are split: a seeded
permutation (``split_seed``, default 0) puts ``round(test_fraction * C)``
classes (default 0.4) in test, ``round(val_fraction * C)`` (default 0) in val,
and the rest in train, so few-shot test classes are never seen in training.

Images are decoded on access by :class:`ImageFileSource`, resized to
``image_size`` (default 84) with PIL's LANCZOS filter (the filter of Ravi &
Larochelle's miniImageNet preprocessing) and returned as float32 in ``[0, 1]``
with ``channels`` 3 (RGB) or 1 (grey).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from protobench.datasets.base import LabeledData, default_data_root, register_dataset
from protobench.errors import DataError, UserError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm",
                              ".pgm", ".tif", ".tiff"})
SPLIT_FOLDERS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageFileSource:
    """Image files decoded on demand: ``source[idx]`` -> ``[B, channels, size, size]`` float32."""

    paths: tuple[str, ...]
    image_size: int = 84
    channels: int = 3

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, path: str) -> np.ndarray:
        try:
            with Image.open(path) as img:
                img = img.convert("RGB" if self.channels == 3 else "L")
                if img.size != (self.image_size, self.image_size):
                    img = img.resize((self.image_size, self.image_size), Image.Resampling.LANCZOS)
                return np.asarray(img, dtype=np.uint8)
        except OSError as exc:
            raise DataError(f"cannot read image {path} ({exc}); remove or replace the file") from exc

    def __getitem__(self, idx: torch.Tensor | int) -> torch.Tensor:
        flat = torch.as_tensor(idx, dtype=torch.int64)
        arrays = np.stack([self._read(self.paths[i]) for i in flat.reshape(-1).tolist()])
        x = torch.from_numpy(arrays).to(torch.float32).div_(255.0)
        x = x.permute(0, 3, 1, 2) if self.channels == 3 else x.unsqueeze(1)
        return x.reshape(*flat.shape, *x.shape[1:]).contiguous()


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and \
        not path.name.startswith(".")


def class_folders(root: Path) -> dict[str, list[Path]]:
    """``{class name: sorted image paths}`` for every non-empty sub-folder of ``root``."""
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in d.rglob("*") if is_image(p))
        if files:
            out[d.name] = files
    return out


def files_checksum(paths: list[Path], labels: torch.Tensor, root: Path, *extra: object) -> str:
    """SHA-256 of the relative paths, file sizes and labels (content identity of a lazy split)."""
    h = hashlib.sha256(repr(extra).encode())
    for p, y in zip(paths, labels.tolist()):
        h.update(f"{p.relative_to(root).as_posix()}|{p.stat().st_size}|{y}\n".encode())
    return h.hexdigest()


def lazy_images(classes: dict[str, list[Path]], root: Path, name: str, split: str,
                image_size: int, channels: int, meta: dict | None = None) -> LabeledData:
    """A LabeledData over ``classes`` (in the given order) with an :class:`ImageFileSource`."""
    if channels not in (1, 3):
        raise UserError(f"channels={channels} is not supported; use channels=1 or channels=3")
    paths = [p for files in classes.values() for p in files]
    counts = torch.tensor([len(files) for files in classes.values()], dtype=torch.int64)
    labels = torch.repeat_interleave(torch.arange(len(classes)), counts)
    source = ImageFileSource(tuple(str(p) for p in paths), int(image_size), int(channels))
    return LabeledData(x=source, labels=labels, class_names=tuple(classes), name=name, split=split,
                       checksum=files_checksum(paths, labels, root, image_size, channels),
                       meta=dict(meta or {}))


def _class_split(names: list[str], split: str, test_fraction: float, val_fraction: float,
                 seed: int) -> list[str]:
    """The class names of ``split`` under a seeded permutation (test first, then val)."""
    if not (0 <= test_fraction and 0 <= val_fraction and test_fraction + val_fraction < 1):
        raise UserError(f"test_fraction={test_fraction} and val_fraction={val_fraction} must be "
                        ">= 0 with a sum below 1; e.g. test_fraction=0.4 val_fraction=0.2")
    n = len(names)
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    chosen = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val],
              "train": perm[n_test + n_val:], "all": perm}[split]
    if not chosen:
        fix = {"val": "val_fraction=0.2", "test": "test_fraction=0.4"}.get(
            split, "lower test_fraction/val_fraction or add classes")
        raise UserError(f"image-folder split {split!r} has no classes ({n} classes, "
                        f"test_fraction={test_fraction}, val_fraction={val_fraction}); set {fix}")
    return [names[i] for i in sorted(chosen)]


def _no_images(root: Path) -> DataError:
    return DataError(f"no images found under {root} (expected <class>/<image> files with "
                     f"extensions {', '.join(sorted(IMAGE_EXTENSIONS))})")


@register_dataset(
    "image-folder",
    splits=("train", "val", "test", "all"),
    description="any root/<class>/<images> tree (or root/train|val|test/<class>/), lazy, 84x84",
    needs_root=True,
)
def load_image_folder(
    split: str,
    root: Path | None = None,
    download: bool = True,
    *,
    image_size: int = 84,
    channels: int = 3,
    test_fraction: float = 0.4,
    val_fraction: float = 0.0,
    split_seed: int = 0,
) -> LabeledData:
    """One split of a class-per-folder tree, as lazily decoded images ``[n, C, S, S]``."""
    root = Path(root) if root is not None else default_data_root() / "image-folder"
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; pass --data-root to a folder "
                        "of class sub-folders")
    present = [s for s in SPLIT_FOLDERS if (root / s).is_dir()]
    meta: dict = {"layout": "split-folders" if present else "class-folders"}
    if present:
        wanted = present if split == "all" else [split]
        if split not in present and split != "all":
            raise DataError(f"{root} has split folders {', '.join(present)} but no {split}/; "
                            f"add {root / split} or load one of those splits")
        classes: dict[str, list[Path]] = {}
        for s in wanted:
            for name, files in class_folders(root / s).items():
                classes.setdefault(name, []).extend(files)
        classes = dict(sorted(classes.items()))
    else:
        every = class_folders(root)
        if not every:
            raise _no_images(root)
        keep = _class_split(list(every), split, float(test_fraction), float(val_fraction),
                            int(split_seed))
        classes = {name: every[name] for name in keep}
        meta.update(split_seed=int(split_seed), test_fraction=float(test_fraction),
                    val_fraction=float(val_fraction))
    if not classes:
        raise _no_images(root)
    return lazy_images(classes, root, "image-folder", split, int(image_size), int(channels), meta)
