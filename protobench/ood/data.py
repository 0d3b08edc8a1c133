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

Class overlap between ID and OOD (:func:`check_disjoint`) is checked by meaning, not only by
exact name: the same dataset -> disjoint class ids; other datasets -> no OOD class that is an
ID class by case-insensitive name, by digit (``digit 3`` = ``3`` = ``3 - three``) or by the
curated table :data:`SEMANTIC_OVERLAP` (e.g. TinyImageNet ``tabby`` / ``Egyptian cat`` vs
CIFAR-10 ``cat``, ``school bus`` vs CIFAR-100 ``bus``). An overlapping pair is REFUSED with
a UserError that names the pairs and gives the OOD spec without those classes
(``--ood tiny-imagenet:0-1,3-...``, from :func:`without_overlap`). OpenOOD instead drops
the overlapping TinyImageNet images from its near-OOD lists; passing that spec does the
same, and the row's ``setting`` and ``ood_counts`` then record which classes and how many
images remain.
"""

from __future__ import annotations

import inspect
import re
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
    no OOD class that is an ID class by name or meaning (:func:`class_overlap`); else a
    UserError naming the pairs and the OOD spec without them."""
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
    pairs = class_overlap(id_names, ood_names)
    if not pairs:
        return
    shown = ", ".join(o if o.lower() == i.lower() else f"{o} ~ {i}" for _, o, i in pairs[:8])
    more = f" and {len(pairs) - 8} more" if len(pairs) > 8 else ""
    kept = without_overlap(ood, [j for j, _, _ in pairs], len(ood_names))
    fix = (f"drop those classes with --ood {kept.text}" if kept.classes
           else "every OOD class overlaps: choose another OOD set")
    raise UserError(f"ID {id_spec.text} and OOD {ood.text} share classes: {len(pairs)} OOD "
                    f"class(es) are ID classes by name or meaning ({shown}{more}); {fix}")


def without_overlap(ood: SetSpec, drop: list[int], n_classes: int) -> SetSpec:
    """``ood`` without the classes at positions ``drop`` of its ``n_classes`` loaded classes
    (ids of the dataset's full class list, as ``NAME:CLASSES`` takes them)."""
    ids = ood.classes if ood.classes is not None else tuple(range(n_classes))
    gone = set(drop)
    return SetSpec(ood.name, tuple(c for j, c in enumerate(ids) if j not in gone))


# -- semantic class overlap ---------------------------------------------------------------
# Curated by hand from the class names (OpenOOD's image lists could not be fetched here):
# an OOD class overlaps an ID class when its images are valid images of the ID class (a
# kind of it, or the same object); borderline cases (marked ~) count as overlapping, since
# an ID-like class left in the OOD set inflates the FPR while a dropped one only shrinks it.
# TinyImageNet classes are given as "wnid first-synonym-of-words.txt" (the loader's names;
# the wnid is matched too, for a release without words.txt). Not overlapping on purpose:
# koala (not a bear), cougar / lion vs CIFAR-10 cat (domestic cats only), gazelle / bighorn
# vs deer, orangutan / baboon vs chimpanzee, slug / sea slug vs snail, go-kart, barn.
# CIFAR-10 vs CIFAR-100 holds no pair: the CIFAR classes are mutually exclusive by design
# (CIFAR-10's page: automobile = sedans, SUVs; truck = big trucks only; neither includes
# pickup trucks), and OpenOOD's near-OOD lists keep the other CIFAR test set whole (as
# recalled, not checked against its image lists).
CIFAR10_TIN: dict[str, tuple[str, ...]] = {
    "automobile": ("n02814533 beach wagon", "n03100240 convertible", "n03670208 limousine",
                   "n04285008 sports car", "n03977966 police van"),  # ~ police van
    "bird": ("n01855672 goose", "n02002724 black stork", "n02056570 king penguin",
             "n02058221 albatross"),
    "cat": ("n02123045 tabby", "n02123394 Persian cat", "n02124075 Egyptian cat"),
    "dog": ("n02085620 Chihuahua", "n02094433 Yorkshire terrier", "n02099601 golden retriever",
            "n02099712 Labrador retriever", "n02106662 German shepherd",
            "n02113799 standard poodle"),
    "frog": ("n01641577 bullfrog", "n01644900 tailed frog"),
    "ship": ("n03662601 lifeboat", "n03447447 gondola"),  # ~ gondola
    "truck": ("n03796401 moving van", "n03977966 police van"),  # ~ police van
}
CIFAR100_TIN: dict[str, tuple[str, ...]] = {
    "aquarium_fish": ("n01443537 goldfish",),
    "bear": ("n02132136 brown bear",),
    "bee": ("n02206856 bee",),
    "beetle": ("n02165456 ladybug",),
    "bottle": ("n02823428 beer bottle", "n03937543 pill bottle", "n03983396 pop bottle"),
    "bridge": ("n04311004 steel arch bridge", "n04366367 suspension bridge",
               "n04532670 viaduct"),
    "bus": ("n04146614 school bus", "n04487081 trolleybus"),
    "butterfly": ("n02279972 monarch", "n02281406 sulphur butterfly"),
    "camel": ("n02437312 Arabian camel",),
    "cattle": ("n02403003 ox", "n02410509 bison"),  # ~ bison
    "chair": ("n04099969 rocking chair",),
    "chimpanzee": ("n02481823 chimpanzee",),
    "cockroach": ("n02233338 cockroach",),
    "crocodile": ("n01698640 American alligator",),  # ~ another crocodilian
    "elephant": ("n02504458 African elephant",),
    "keyboard": ("n03085013 computer keyboard",),
    "lamp": ("n03637318 lampshade",),  # ~ its images show lamps
    "lawn_mower": ("n03649909 lawn mower",),
    "lion": ("n02129165 lion",),
    "lobster": ("n01983481 American lobster", "n01984695 spiny lobster"),
    "mountain": ("n09193705 alp",),
    "mushroom": ("n07734744 mushroom",),
    "orange": ("n07747607 orange",),
    "plate": ("n07579787 plate",),
    "rocket": ("n04008634 projectile",),  # "projectile, missile"
    "sea": ("n09428293 seashore",),  # ~
    "snail": ("n01944390 snail",),
    "snake": ("n01742172 boa constrictor",),
    "spider": ("n01774384 black widow", "n01774750 tarantula"),
    "sweet_pepper": ("n07720875 bell pepper",),
    "table": ("n03201208 dining table", "n03179701 desk"),
    "telephone": ("n03902125 pay-phone",),
    "tractor": ("n04465501 tractor",),
    "train": ("n02917067 bullet train", "n03393912 freight car"),  # ~ freight car
}
SEMANTIC_OVERLAP: dict[str, tuple[str, ...]] = {**CIFAR10_TIN, **CIFAR100_TIN}
"""ID class name -> the classes of other datasets that are the same thing (see above)."""

_DIGIT = re.compile(r"(?:digit\s*)?(\d)(?:\s*-\s*[a-z]+)?")
_WNID = re.compile(r"n\d{8}")


def _norm(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


def _tokens(name: str) -> frozenset[str]:
    """Normalised forms of a class name: lower case, ``_`` -> space, the first of its
    comma-separated synonyms, without the loader's `` (wnid)`` suffix, its wnid, and
    ``digit d`` for a digit class."""
    low = _norm(name)
    out = {low, low.split(",")[0].strip(), re.sub(r"\s*\(n\d{8}\)$", "", low)}
    out.update(_WNID.findall(low))
    digit = _DIGIT.fullmatch(low)
    if digit:
        out.add(f"digit {digit.group(1)}")
    return frozenset(out)


def _links() -> dict[str, frozenset[str]]:
    """Every name of :data:`SEMANTIC_OVERLAP` -> the tokens it overlaps (both ways)."""
    links: dict[str, set[str]] = {}
    for key, others in SEMANTIC_OVERLAP.items():
        for other in others:
            wnid, _, name = other.partition(" ")
            side = {wnid, _norm(name)}
            links.setdefault(_norm(key), set()).update(side)
            for t in side:
                links.setdefault(t, set()).add(_norm(key))
    return {k: frozenset(v) for k, v in links.items()}


_LINKS = _links()


def _related(tokens: frozenset[str]) -> frozenset[str]:
    return tokens.union(*(_LINKS.get(t, frozenset()) for t in tokens))


def class_overlap(id_names: tuple[str, ...] | list[str], ood_names: tuple[str, ...] | list[str]
                  ) -> list[tuple[int, str, str]]:
    """``(position, OOD name, ID name)`` of every OOD class that is an ID class by name,
    by digit or by :data:`SEMANTIC_OVERLAP` (the first such ID class)."""
    ids = [(name, _related(_tokens(name))) for name in id_names]
    pairs = []
    for j, name in enumerate(ood_names):
        mine = _tokens(name)
        hit = next((i for i, related in ids if related & mine), None)
        if hit is not None:
            pairs.append((j, name, hit))
    return pairs


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
