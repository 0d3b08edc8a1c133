"""`tiny-imagenet` and `imagenet-subset`: ImageNet-derived folders, loaded lazily.

``tiny-imagenet`` reads the official Tiny ImageNet release (200 classes, 64x64; the folder
``tiny-imagenet-200`` of ``tiny-imagenet-200.zip`` from cs231n, or its parent):
``wnids.txt`` (the classes), ``words.txt`` (``wnid<TAB>names``: class names),
``train/<wnid>/images/*.JPEG`` (500 per class) and ``val/images/*.JPEG`` labelled by
``val/val_annotations.txt`` (50 per class). The official test images have no labels, so
``val`` is the test split of streams.

``imagenet-subset`` reads ``train/<wnid>/`` and ``val/<wnid>/`` image folders and a class
list file (``class_list``, default ``classes.txt`` in the root; one wnid per line, first
token, ``#`` comments): the PODNet / PASS ImageNet-Subset (``seed_1993_subset_100_imagenet``)
is 100 such classes. Without a list every folder under ``train/`` is a class. Images are
resized to ``image_size`` (default 224) on access, without cropping.

Neither has a public download (ImageNet's licence): a missing folder is an error that
says what to put where. Labels follow the sorted wnids (class list order for the subset).
"""

from __future__ import annotations

from pathlib import Path

from protobench.datasets.base import LabeledData, default_data_root, register_dataset
from protobench.datasets.folder import class_folders, is_image, lazy_images
from protobench.errors import DataError

TINY_SPLITS = ("train", "val")
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def _read_lines(path: Path) -> list[str]:
    try:
        return [ln.strip() for ln in path.read_text().splitlines()
                if ln.strip() and not ln.strip().startswith("#")]
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc}); check the file") from exc


def _tiny_root(root: Path) -> Path:
    for cand in (root, root / "tiny-imagenet-200"):
        if (cand / "wnids.txt").is_file():
            return cand
    raise DataError(f"Tiny ImageNet is not in {root} (no wnids.txt); download {TINY_URL}, "
                    "unzip it and pass --data-root to tiny-imagenet-200/")


def wordnet_display_names(wnids: list[str], words_file: Path) -> list[str]:
    """First synonym of each wnid in ``words.txt`` (the wnid when absent or repeated)."""
    words: dict[str, str] = {}
    if words_file.is_file():
        for line in _read_lines(words_file):
            wnid, _, names = line.partition("\t")
            words[wnid] = names.split(",")[0].strip()
    first = [words.get(w) or w for w in wnids]
    return [n if first.count(n) == 1 else f"{n} ({w})" for n, w in zip(first, wnids)]


@register_dataset(
    "tiny-imagenet",
    splits=TINY_SPLITS,
    description="Tiny ImageNet 200 classes, 64x64, train / val (local folder, lazy)",
    needs_root=True,
    default_test_split="val",  # the held-out split; there is no test split
    stream_splits=TINY_SPLITS,
)
def load_tiny_imagenet(split: str, root: Path | None = None, download: bool = True, *,
                       image_size: int = 64) -> LabeledData:
    base = _tiny_root(Path(root) if root is not None else default_data_root() / "tiny-imagenet")
    wnids = sorted(_read_lines(base / "wnids.txt"))
    files: dict[str, list[Path]] = {w: [] for w in wnids}
    if split == "train":
        for w in wnids:
            folder = base / "train" / w / "images"
            files[w] = sorted(p for p in folder.glob("*") if is_image(p)) if folder.is_dir() else []
    else:
        notes = base / "val" / "val_annotations.txt"
        if not notes.is_file():
            raise DataError(f"{notes} is missing; use the official Tiny ImageNet release")
        for line in _read_lines(notes):
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in files:
                raise DataError(f"{notes}: line {line!r} names no class of wnids.txt")
            files[parts[1]].append(base / "val" / "images" / parts[0])
        for w in wnids:
            files[w].sort()
    missing = [p for ps in files.values() for p in ps if not p.is_file()]
    empty = [w for w, ps in files.items() if not ps]
    if missing or empty:
        what = f"image {missing[0]} is missing" if missing else f"class {empty[0]} has no images"
        raise DataError(f"Tiny ImageNet {split} in {base} is incomplete ({what}); "
                        "unzip the official release again")
    names = wordnet_display_names(wnids, base / "words.txt")
    classes = {n: files[w] for n, w in zip(names, wnids)}
    return lazy_images(classes, base, "tiny-imagenet", split, int(image_size), 3,
                       {"wnid": wnids})


@register_dataset(
    "imagenet-subset",
    splits=TINY_SPLITS,
    description="ImageNet subset: train|val/<wnid>/ folders + a class list file, lazy",
    needs_root=True,
    default_test_split="val",  # the held-out split; there is no test split
    stream_splits=TINY_SPLITS,
)
def load_imagenet_subset(split: str, root: Path | None = None, download: bool = True, *,
                         class_list: str = "classes.txt", image_size: int = 224) -> LabeledData:
    root = Path(root) if root is not None else default_data_root() / "imagenet-subset"
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"ImageNet-Subset is not in {root}: put the images in {root}/train/"
                        f"<wnid>/ and {root}/val/<wnid>/ (no public download: ImageNet licence)")
    every = class_folders(folder)
    list_file = Path(class_list) if Path(class_list).is_absolute() else root / class_list
    if list_file.is_file():
        wnids = [ln.split()[0] for ln in _read_lines(list_file)]
        absent = [w for w in wnids if w not in every]
        if absent:
            raise DataError(f"{len(absent)} classes of {list_file.name} have no images in "
                            f"{folder} (first: {absent[0]}); check the class list")
    elif class_list != "classes.txt":
        raise DataError(f"class list {list_file} does not exist; pass class_list=FILE")
    else:
        wnids = list(every)
    if not wnids:
        raise DataError(f"no class folders with images under {folder}")
    names = wordnet_display_names(wnids, root / "words.txt")
    return lazy_images({n: every[w] for n, w in zip(names, wnids)}, root, "imagenet-subset",
                       split, int(image_size), 3,
                       {"wnid": wnids, "class_list": str(list_file) if list_file.is_file() else ""})
