"""`cifar-fs` and `fc100`: the two few-shot class splits of CIFAR-100.

Both pool CIFAR-100's train and test halves (600 images per class) and return
``x`` ``[n, 3, 32, 32]`` float32 in ``[0, 1]`` with the classes of one split.

- CIFAR-FS (Bertinetto et al., ICLR 2019): a random split of the 100 classes
  into 64/16/20, shipped in ``splits/cifar_fs/{train,val,test}.txt`` (the
  published lists, as in bertinetto/r2d2 and copied by torchmeta's
  ``assets/cifar100/cifar-fs/*.json``).
- FC100 (Oreshkin et al., NeurIPS 2018, TADAM): a split by superclass, 12/4/4
  superclasses = 60/20/20 classes, chosen to minimise semantic overlap
  (:data:`FC100_SUPERCLASSES`, the coarse label ids of ElementAI/TADAM).

Files: torchvision's ``CIFAR100(root, train=True, download=True)`` fetches,
md5-checks and extracts ``cifar-100-python/`` when it is missing; the loader
then reads the three pickles itself. Reading them directly (rather than
through the torchvision dataset) pools both halves in one pass, keeps the
images as uint8 until the split is chosen, and accepts an already extracted
copy without re-hashing 180 MB on every load.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from protobench.datasets.base import LabeledData, default_data_root, register_dataset
from protobench.errors import DataError
from protobench.utils import sha256_tensor

SPLIT_DIR = Path(__file__).parent / "splits"
BASE_FOLDER = "cifar-100-python"

# CIFAR-100 superclasses (coarse label id = position) and their fine classes.
CIFAR100_HIERARCHY: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}

# Oreshkin et al. (2018), ElementAI/TADAM: CIFAR-100 coarse label ids per split.
FC100_SUPERCLASSES: dict[str, tuple[int, ...]] = {
    "train": (1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19),
    "val": (8, 11, 13, 16),
    "test": (0, 7, 12, 14),
}


def split_classes(dataset: str, split: str) -> list[str]:
    """The CIFAR-100 fine class names of ``split`` of ``cifar-fs`` or ``fc100``, sorted."""
    if dataset == "cifar-fs":
        text = (SPLIT_DIR / "cifar_fs" / f"{split}.txt").read_text()
        return sorted(line.strip() for line in text.splitlines() if line.strip())
    coarse = list(CIFAR100_HIERARCHY)
    return sorted(f for c in FC100_SUPERCLASSES[split] for f in CIFAR100_HIERARCHY[coarse[c]])


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")  # the CIFAR-100 format is a pickle


def read_cifar100(root: Path, download: bool) -> dict:
    """Both halves of CIFAR-100 pooled: ``data`` ``[60000, 3072]`` uint8, ``fine``/``coarse``
    ``[60000]`` int64 and the label names; downloads through torchvision when missing."""
    base = root / BASE_FOLDER
    if not all((base / n).is_file() for n in ("train", "test", "meta")):
        if not download:
            raise DataError(f"CIFAR-100 is not in {root} (expected {BASE_FOLDER}/train, test, "
                            "meta); pass --data-root to its parent folder or allow the download")
        from torchvision.datasets import CIFAR100

        try:
            CIFAR100(str(root), train=True, download=True)
        except (OSError, RuntimeError) as exc:
            raise DataError(f"CIFAR-100 is not in {root} and the download failed ({exc}); "
                            f"pass --data-root to a folder holding {BASE_FOLDER}/") from exc
    try:
        halves = [_unpickle(base / "train"), _unpickle(base / "test")]
        meta = _unpickle(base / "meta")
        return {
            "data": np.concatenate([np.asarray(h["data"], dtype=np.uint8) for h in halves]),
            "fine": np.concatenate([np.asarray(h["fine_labels"]) for h in halves]),
            "coarse": np.concatenate([np.asarray(h["coarse_labels"]) for h in halves]),
            "fine_names": list(meta["fine_label_names"]),
            "coarse_names": list(meta["coarse_label_names"]),
        }
    except (OSError, KeyError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise DataError(f"cannot read CIFAR-100 from {base} ({exc!r}); delete the folder "
                        "and let protobench download it again") from exc


def _load(dataset: str, split: str, root: Path | None, download: bool) -> LabeledData:
    if root is None or Path(root) == default_data_root() / dataset:
        root = default_data_root() / "cifar100"  # one download shared by cifar-fs and fc100
    root = Path(root)
    raw = read_cifar100(root, download)
    wanted = split_classes(dataset, split)
    missing = sorted(set(wanted) - set(raw["fine_names"]))
    if missing:
        raise DataError(f"CIFAR-100 in {root} lacks the classes {', '.join(missing)}; "
                        "it is not the official CIFAR-100, re-download it")
    classes = sorted(raw["fine_names"].index(name) for name in wanted)  # by fine label id
    remap = np.full(len(raw["fine_names"]), -1)
    remap[classes] = np.arange(len(classes))
    keep = np.nonzero(remap[raw["fine"]] >= 0)[0]
    labels = torch.from_numpy(remap[raw["fine"][keep]]).to(torch.int64)
    order = torch.argsort(labels, stable=True)
    pixels = torch.from_numpy(raw["data"][keep]).view(-1, 3, 32, 32)[order]
    labels = labels[order]
    coarse_of = np.zeros(len(raw["fine_names"]), dtype=np.int64)
    coarse_of[raw["fine"]] = raw["coarse"]  # every sample of a fine class shares its superclass
    return LabeledData(
        x=pixels.to(torch.float32).div_(255.0), labels=labels,
        class_names=tuple(raw["fine_names"][c] for c in classes), name=dataset, split=split,
        checksum=sha256_tensor(pixels, labels),
        meta={"superclass": [raw["coarse_names"][coarse_of[c]] for c in classes],
              "fine_ids": classes},
    )


@register_dataset(
    "cifar-fs",
    splits=("train", "val", "test"),
    description="CIFAR-FS (Bertinetto 2019): CIFAR-100 classes 64/16/20, 32x32 RGB (torchvision)",
    needs_root=True,
)
def load_cifar_fs(split: str, root: Path | None = None, download: bool = True) -> LabeledData:
    """CIFAR-FS ``split``: 600 images of each of its 64/16/20 classes."""
    return _load("cifar-fs", split, root, download)


@register_dataset(
    "fc100",
    splits=("train", "val", "test"),
    description="FC100 (Oreshkin 2018): CIFAR-100 by superclass 60/20/20, 32x32 RGB (torchvision)",
    needs_root=True,
)
def load_fc100(split: str, root: Path | None = None, download: bool = True) -> LabeledData:
    """FC100 ``split``: 600 images of each class of its 12/4/4 superclasses."""
    return _load("fc100", split, root, download)
