"""`mini-imagenet`: Ravi & Larochelle's (ICLR 2017) miniImageNet split, loaded lazily.

100 ImageNet classes x 600 images, 64/16/20 classes for train/val/test
(few-shot protocol card section 7). Two layouts of the data root are read:

- the split CSVs ``train.csv``, ``val.csv``, ``test.csv`` (header
  ``filename,label``, e.g. ``n0153282900000005.jpg,n01532829``) with the
  images under ``root/images/<filename>`` (the layout of Ravi's release);
- folders ``root/<split>/<wnid>/*.jpg`` (the layout many re-hosts use).

Images are decoded on access and resized to 84x84 RGB float32 in ``[0, 1]``
(PIL LANCZOS, as Ravi's preprocessing; files already 84x84 are not
resampled): 38,400 training images would take 3.2 GB as float. Class names
are the ImageNet WordNet ids; readable names (``readable_names``, used by text
prompts) come from ImageNet's ``words.txt`` (``wnid<TAB>names``) when it is in the
root. There is no public download (ImageNet's licence requires a login), so a
missing dataset is an error that says where to put the files.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

from protobench.datasets.base import LabeledData, default_data_root, register_dataset
from protobench.datasets.folder import class_folders, lazy_images
from protobench.datasets.imagenet_folders import wordnet_display_names
from protobench.errors import DataError

SPLITS = ("train", "val", "test")


def _from_csv(csv_path: Path, image_dir: Path) -> dict[str, list[Path]]:
    """``{wnid: image paths}`` from one split CSV, classes sorted, images in CSV order."""
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise DataError(f"cannot read {csv_path} ({exc}); check the file's permissions") from exc
    if not rows or not {"filename", "label"} <= set(rows[0]):
        raise DataError(f"{csv_path} is not a miniImageNet split CSV (expected the header "
                        "filename,label); use Ravi & Larochelle's train/val/test.csv")
    classes: dict[str, list[Path]] = {}
    for row in rows:
        classes.setdefault(row["label"], []).append(image_dir / row["filename"])
    missing = [p for files in classes.values() for p in files if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} images listed in {csv_path.name} are missing from "
                        f"{image_dir} (first: {missing[0].name}); put every image there")
    return dict(sorted(classes.items()))


@register_dataset(
    "mini-imagenet",
    splits=SPLITS,
    description="miniImageNet (Ravi & Larochelle split 64/16/20), 84x84 RGB, lazy; no download",
    needs_root=True,
)
def load_mini_imagenet(split: str, root: Path | None = None, download: bool = True, *,
                       image_size: int = 84) -> LabeledData:
    """One split as lazily decoded images ``[n, 3, S, S]``; labels 0..C-1 by sorted wnid."""
    root = Path(root) if root is not None else default_data_root() / "mini-imagenet"
    if (root / f"{split}.csv").is_file():
        classes = _from_csv(root / f"{split}.csv", root / "images")
        layout = "csv"
    elif (root / split).is_dir():
        classes = class_folders(root / split)
        layout = "folders"
    else:
        raise DataError(
            f"miniImageNet is not in {root}: put Ravi & Larochelle's {split}.csv there with the "
            f"images in {root / 'images'} (or images in {root / split}/<wnid>/), then pass "
            "--data-root; it has no public download (ImageNet licence)"
        )
    if not classes:
        raise DataError(f"no {split} images found in {root} ({layout} layout); "
                        f"check {root / split} or {root / (split + '.csv')}")
    data = lazy_images(classes, root, "mini-imagenet", split, int(image_size), 3,
                       {"layout": layout, "wnid": list(classes)})
    # readable names (text prompts) from ImageNet's words.txt when it sits in the root
    if (root / "words.txt").is_file():
        data = replace(data, display_names=tuple(wordnet_display_names(list(classes),
                                                                       root / "words.txt")))
    return data
