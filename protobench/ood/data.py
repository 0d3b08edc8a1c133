"""ID / OOD sets: ``NAME[:CLASSES]`` specs, loading, class-overlap checks, near/far groups.

``digits:0-4`` is the registered dataset ``digits`` restricted to classes 0..4 (ids of the
dataset's full class list; ``0-4,7`` and ``3,5`` also work). The ID side needs training
and test samples of the same classes: the dataset's sample-level halves when it has them
(``stream_splits``, e.g. CIFAR train/test), else a seeded per-class hold-out of its
``all`` split (``test_fraction``, as continual streams do). An OOD set is the test half of
a dataset with halves, else its ``all`` split (every sample: none was trained on), else
its default test split.

OOD inputs are made to look like ID inputs: a loader that takes ``image_size`` gets the
ID side (e.g. Omniglot drawn at 8x8 for 8x8 digits), and any remaining difference in
channels (grey <-> RGB: channel mean / repeat) or size (bilinear, antialiased) is
converted on the fly, batch by batch.

Near/far groups follow the OOD protocol card (section 4): CIFAR-10/100 -> near = the other
CIFAR and TinyImageNet, far = MNIST, SVHN, Textures, Places365 (and LSUN, iSUN,
FashionMNIST); other classes of the ID dataset itself are near-OOD (semantic shift only);
every other dataset is far-OOD.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from protobench.datasets import LabeledData, get_dataset, load_dataset
from protobench.errors import DataError, UserError

NEAR_OOD: dict[str, frozenset[str]] = {
    "cifar10": frozenset({"cifar100", "tiny-imagenet"}),
    "cifar100": frozenset({"cifar10", "tiny-imagenet"}),
}


@dataclass(frozen=True)
class SetSpec:
    """A dataset name and an optional class subset (ids of its full class list)."""

    name: str
    classes: tuple[int, ...] | None = None

    @property
    def text(self) -> str:
        return self.name if self.classes is None else f"{self.name}:{_classes_text(self.classes)}"


def _classes_text(classes: tuple[int, ...]) -> str:
    parts, i = [], 0
    while i < len(classes):
        j = i
        while j + 1 < len(classes) and classes[j + 1] == classes[j] + 1:
            j += 1
        parts.append(str(classes[i]) if i == j else f"{classes[i]}-{classes[j]}")
        i = j + 1
    return ",".join(parts)


def parse_set(text: str) -> SetSpec:
    """``"digits:0-4"`` -> ``SetSpec("digits", (0, 1, 2, 3, 4))``; names are checked."""
    name, sep, cls = text.strip().partition(":")
    get_dataset(name)
    if not sep:
        return SetSpec(name)
    classes: list[int] = []
    try:
        for part in cls.split(","):
            lo, dash, hi = part.strip().partition("-")
            classes += range(int(lo), int(hi) + 1) if dash else [int(lo)]
    except ValueError:
        raise UserError(f"bad class list in {text!r}; write NAME:0-4 or NAME:0,2,5-9") from None
    if not classes or len(set(classes)) != len(classes) or min(classes) < 0:
        raise UserError(f"bad class list in {text!r}: give distinct non-negative class ids")
    return SetSpec(name, tuple(sorted(classes)))


def parse_sets(text: str) -> list[SetSpec]:
    """``"svhn,digits:5-7,9"`` -> specs; bare class ids after a ``NAME:`` join that spec."""
    items: list[str] = []
    for t in (t.strip() for t in text.split(",") if t.strip()):
        if items and ":" in items[-1] and t.replace("-", "").isdigit():
            items[-1] += "," + t
        else:
            items.append(t)
    return [parse_set(t) for t in items]


def ood_group(id_name: str, ood_name: str) -> str:
    """``near`` or ``far`` (see the module docstring)."""
    if ood_name == id_name or ood_name in NEAR_OOD.get(id_name, frozenset()):
        return "near"
    return "far"


def _select(data: LabeledData, classes: tuple[int, ...] | None, text: str) -> LabeledData:
    if classes is None:
        return data
    bad = [c for c in classes if c >= data.num_classes]
    if bad:
        raise UserError(f"{text}: class id {bad[0]} does not exist ({data.name} has "
                        f"{data.num_classes} classes, ids 0-{data.num_classes - 1})")
    return data.subset_classes(classes)


def load_id(spec: SetSpec, root: str | Path | None, options: dict[str, Any],
            test_fraction: float = 0.2, split_seed: int = 0
            ) -> tuple[LabeledData, LabeledData]:
    """``(train, test)`` of the ID classes (see the module docstring)."""
    from protobench.continual.stream import holdout_split

    entry = get_dataset(spec.name)
    if entry.stream_splits is not None:
        tr, te = entry.stream_splits
        train = load_dataset(spec.name, tr, root, **options)
        test = load_dataset(spec.name, te, root, **options)
    elif "all" in entry.splits:
        train, test = holdout_split(load_dataset(spec.name, "all", root, **options),
                                    test_fraction, split_seed)
    else:
        raise DataError(f"dataset {spec.name!r} has no training and test samples of the same "
                        f"classes (splits: {', '.join(entry.splits)}); it cannot be the ID set")
    return _select(train, spec.classes, spec.text), _select(test, spec.classes, spec.text)


def ood_split(name: str) -> str:
    entry = get_dataset(name)
    if entry.stream_splits is not None:
        return entry.stream_splits[1]
    return "all" if "all" in entry.splits else entry.default_test_split


def load_ood(spec: SetSpec, id_shape: tuple[int, ...], root: str | Path | None,
             options: dict[str, Any]) -> LabeledData:
    """An OOD set shaped like the ID inputs ``id_shape``."""
    entry = get_dataset(spec.name)
    opts = dict(options)
    accepted = inspect.signature(entry.loader).parameters
    if "image_size" in accepted and len(id_shape) == 3 and "image_size" not in opts:
        opts["image_size"] = id_shape[-1]
    data = _select(load_dataset(spec.name, ood_split(spec.name), root, **opts), spec.classes,
                   spec.text)
    return conform(data, id_shape)


def check_disjoint(id_spec: SetSpec, id_names: tuple[str, ...], ood: SetSpec,
                   ood_names: tuple[str, ...]) -> None:
    """ID and OOD must share no class: same dataset -> disjoint class ids; other datasets ->
    no class name in common (case-insensitive)."""
    if ood.name == id_spec.name:
        a = set(id_spec.classes) if id_spec.classes is not None else None
        b = set(ood.classes) if ood.classes is not None else None
        common = sorted(a & b) if a is not None and b is not None else ["all"]
        if common:
            raise UserError(f"ID {id_spec.text} and OOD {ood.text} overlap in classes "
                            f"({_classes_text(tuple(common)) if common != ['all'] else 'every class'})"
                            f"; give disjoint class subsets, e.g. --id {id_spec.name}:0-4 "
                            f"--ood {id_spec.name}:5-9")
        return
    common = sorted({n.lower() for n in id_names} & {n.lower() for n in ood_names})
    if common:
        raise UserError(f"ID {id_spec.text} and OOD {ood.text} share classes "
                        f"({', '.join(common[:5])}); restrict one side with NAME:CLASSES")


@dataclass(frozen=True)
class ConformedSource:
    """``source[idx]`` converted to ``shape`` ``[C, H, W]`` (channels, then size)."""

    source: Any
    shape: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return to_shape(self.source[idx], self.shape)


def to_shape(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Images ``[B, c, h, w]`` -> ``[B, *shape]`` (grey<->RGB, bilinear antialiased resize)."""
    c, h, w = shape
    if x.shape[1] != c:
        if x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)
        elif c == 1:
            x = x.mean(1, keepdim=True)
        else:
            raise DataError(f"cannot convert {x.shape[1]}-channel images to {c} channels")
    if tuple(x.shape[2:]) != (h, w):
        x = F.interpolate(x.float(), size=(h, w), mode="bilinear", align_corners=False,
                          antialias=True)
    return x.contiguous()


def conform(data: LabeledData, id_shape: tuple[int, ...]) -> LabeledData:
    """``data`` with samples of shape ``id_shape`` (unchanged when they already are)."""
    from dataclasses import replace

    shape = tuple(data.get(torch.tensor([0])).shape[1:])
    if shape == tuple(id_shape):
        return data
    if len(shape) != 3 or len(id_shape) != 3:
        raise DataError(f"{data.name} samples have shape {list(shape)} but the ID samples "
                        f"{list(id_shape)}; only images can be converted")
    meta = {**data.meta, "converted_from": list(shape)}
    if isinstance(data.x, torch.Tensor):
        return replace(data, x=to_shape(data.x, id_shape), meta=meta)
    return replace(data, x=ConformedSource(data.x, tuple(id_shape)), meta=meta)
