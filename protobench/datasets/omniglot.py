"""`omniglot` (alphabet-disjoint splits) and `omniglot-runs` (Lake et al.'s 20 one-shot runs).

Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015) is read from the official zips
or their extracted folders (``images_background``, ``images_evaluation``,
``images_background_small1/2``; inside ``<stem>/<Alphabet>/characterNN/*.png``),
de-duplicated by (alphabet, character): Greek and Latin occur in both small sets.
Splits are alphabet-disjoint: ``test_alphabets`` defaults to the images_evaluation
alphabets when that archive is used, else Korean, Tagalog, Sanskrit; ``val_alphabets``
to none; ``train`` is every other alphabet. ``rotations="train"`` (default) adds the
90/180/270 degree rotations of train characters as classes (``A/characterNN/rot090``).

Processing follows the official ProtoNet loader (protonet card section 5): PIL rotate
(no expand), PIL resize to ``image_size`` (nearest for 1-bit), float, inverted so that
ink = 1. Departure: the official loader also transposes every image; we do not. That
mirror, applied to every image alike, changes no expected accuracy (only bit-exact
reproduction), and skipping it keeps drawings upright. Decoded images are cached in
``cache_dir()/omniglot/``, keyed by the archives' names, sizes, mtimes and the size.

`omniglot-runs` holds the 20 official 20-way 1-shot runs of ``all_runs.zip`` (few-shot
protocol card section 8) as 400 classes (run, training class) of 2 samples: training
image (support), then the matching test item (query). :func:`runs_episodes` gives those
fixed episodes, :func:`read_run` the original 105x105 images (e.g. for the MHD baseline).
"""

from __future__ import annotations

import os
import pickle
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from protobench.datasets._download import DownloadError, FileTree, as_list, download, fingerprint
from protobench.datasets.base import (
    FixedEpisodes,
    LabeledData,
    cache_dir,
    default_data_root,
    register_dataset,
)
from protobench.errors import DataError, UserError

BASE_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
DOWNLOAD_FILES = ("images_background.zip", "images_evaluation.zip")
RUNS_FILE = "one-shot-classification/all_runs.zip"
SOURCES = ("images_background", "images_evaluation",
           "images_background_small1", "images_background_small2")
DEFAULT_TEST_ALPHABETS = ("Korean", "Tagalog", "Sanskrit")
ROTATIONS = (0, 90, 180, 270)
ROTATION_MODES = ("train", "all", "none")
RUN_ALPHABETS = ("Atlantean", "Ge_ez", "Glagolitic", "Gurmukhi", "Kannada", "Malayalam",
                 "Manipuri", "Old_Church_Slavonic_(Cyrillic)", "Tengwar", "Tibetan")  # 2 runs each
_CACHE_VERSION = 1


def process_image(img: Image.Image, rotation: int = 0, size: int = 28) -> np.ndarray:
    """ProtoNet processing of one drawing: ``[size, size]`` uint8, ink = 1."""
    if img.mode != "1":
        img = img.convert("L").point(lambda v: 255 if v >= 128 else 0, mode="1")
    if rotation:
        img = img.rotate(rotation)
    return 1 - np.asarray(img.resize((size, size)), dtype=np.uint8)


def _find_sources(root: Path) -> dict[str, Path]:
    """Archive stem -> extracted folder (preferred) or zip, for those present in ``root``."""
    found = {s: next((c for c in (root / s, root / f"{s}.zip") if c.exists()), None)
             for s in SOURCES}
    return {s: path for s, path in found.items() if path is not None}


def _select_sources(root: Path, sources: str | list[str] | None, download_ok: bool
                    ) -> dict[str, Path]:
    """The archives to read, downloading the two official ones when none is present."""
    found, failure = _find_sources(root), ""
    if not found and download_ok:
        try:
            for name in DOWNLOAD_FILES:
                download(BASE_URL + name, root / name)
            found = _find_sources(root)
        except DownloadError as exc:  # never leave half of the official pair behind
            for name in DOWNLOAD_FILES:
                (root / name).unlink(missing_ok=True)
            failure = f" and the download failed ({exc})"
    if not found:
        raise DataError(f"no Omniglot archives in {root} (looked for images_background*.zip, "
                        f"images_evaluation.zip or their folders){failure}; pass --data-root to "
                        "a folder holding them" + ("" if download_ok else ", or allow the download"))
    wanted = as_list(sources) or list(found)
    for stem in wanted:
        if stem not in SOURCES:
            raise UserError(f"unknown Omniglot source {stem!r}; choose from: {', '.join(SOURCES)}")
        if stem not in found:
            raise DataError(f"Omniglot source {stem} is not in {root}; present: "
                            f"{', '.join(found)} (pass sources= with those)")
    return {stem: found[stem] for stem in wanted}


def _decode(sources: dict[str, Path], size: int) -> dict:
    """Every character of ``sources`` at every rotation, decoded once and cached.

    Returns ``images`` ``[n, 4, size, size]`` uint8 (rotations 0/90/180/270),
    ``char`` ``[n]`` int64 and per-character ``alphabets``, ``characters``, ``sources``.
    """
    key = fingerprint(list(sources.values()), list(sources), size, _CACHE_VERSION)
    path = cache_dir() / "omniglot" / f"omniglot-{key}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
            path.unlink(missing_ok=True)  # a corrupt cache file: decode again
    with ExitStack() as stack:
        trees = {stem: stack.enter_context(FileTree(src, stem if src.is_file() else ""))
                 for stem, src in sources.items()}
        chars: dict[tuple[str, str], tuple[str, list[str]]] = {}
        for stem, tree in trees.items():  # first source wins: de-duplication
            for name in tree.names():
                parts = name.split("/")
                if len(parts) == 3 and parts[2].lower().endswith(".png"):
                    entry = chars.setdefault((parts[0], parts[1]), (stem, []))
                    if entry[0] == stem:
                        entry[1].append(name)
        keys = sorted(chars)
        images, owner = [], []
        for c, k in enumerate(keys):
            stem, files = chars[k]
            for name in files:
                with trees[stem].open(name) as f, Image.open(f) as img:
                    images.append(np.stack([process_image(img, r, size) for r in ROTATIONS]))
                owner.append(c)
    if not images:
        raise DataError(f"no character PNGs found in {', '.join(map(str, sources.values()))}; "
                        "expected <Alphabet>/characterNN/*.png inside")
    blob = {"images": torch.from_numpy(np.stack(images)),
            "char": torch.as_tensor(owner, dtype=torch.int64),
            "alphabets": [k[0] for k in keys], "characters": [k[1] for k in keys],
            "sources": [chars[k][0] for k in keys]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return blob


def _split_alphabets(split: str, present: list[str], uses_eval: list[str],
                     test_alphabets: list[str], val_alphabets: list[str]) -> list[str]:
    """The alphabets of ``split``; ``uses_eval``: those read from images_evaluation."""
    for option, names in (("test_alphabets", test_alphabets), ("val_alphabets", val_alphabets)):
        if set(names) - set(present):
            raise DataError(f"Omniglot {option} {', '.join(sorted(set(names) - set(present)))} "
                            f"not in the data; available: {', '.join(present)}")
    test_alphabets = test_alphabets or uses_eval or [a for a in DEFAULT_TEST_ALPHABETS
                                                     if a in present]
    if set(test_alphabets) & set(val_alphabets):
        raise UserError("Omniglot test_alphabets and val_alphabets overlap; make them disjoint")
    if split == "val" and not val_alphabets:
        raise UserError("Omniglot has no validation alphabets by default; "
                        "pass val_alphabets=A,B (e.g. val_alphabets=Greek,Latin)")
    chosen = {"test": test_alphabets, "val": val_alphabets, "all": present,
              "train": [a for a in present if a not in set(test_alphabets) | set(val_alphabets)]}
    if not chosen[split]:
        raise DataError(f"the Omniglot {split} split has no alphabets (present: "
                        f"{', '.join(present)}); set test_alphabets/val_alphabets")
    return sorted(chosen[split])


@register_dataset(
    "omniglot",
    splits=("train", "val", "test", "all"),
    description="Omniglot (Lake 2015) 28x28, ink=1; alphabet-disjoint splits, rotations on train",
    needs_root=True,
)
def load_omniglot(split: str, root: Path | None = None, download: bool = True, *,
                  sources: str | list[str] | None = None,
                  test_alphabets: str | list[str] | None = None,
                  val_alphabets: str | list[str] | None = None,
                  rotations: str = "train", image_size: int = 28,
                  character_pool: str | None = None) -> LabeledData:
    """One split of Omniglot: ``x`` ``[n, 1, S, S]`` float32 in {0, 1}; 20 images per class.

    ``character_pool`` (``validation`` or ``test``) keeps one of two disjoint seeded halves
    of the split's classes (:func:`character_pools`): settings chosen on the validation
    half never see a class of the test half (Omniglot has no validation alphabets)."""
    if character_pool not in (None, *POOLS):
        raise UserError(f"Omniglot character_pool={character_pool!r} is unknown; choose "
                        f"{' or '.join(POOLS)}")
    if rotations not in ROTATION_MODES:
        raise UserError(f"Omniglot rotations={rotations!r} is unknown; "
                        f"choose one of: {', '.join(ROTATION_MODES)}")
    root = Path(root) if root is not None else default_data_root() / "omniglot"
    used = _select_sources(root, sources, download)
    blob = _decode(used, int(image_size))
    alphabets = blob["alphabets"]
    present = sorted(set(alphabets))
    uses_eval = sorted({a for a, s in zip(alphabets, blob["sources"]) if s == "images_evaluation"})
    split_alpha = set(_split_alphabets(split, present, uses_eval,
                                       as_list(test_alphabets), as_list(val_alphabets)))
    rot_idx = [0, 1, 2, 3] if rotations == "all" or rotations == split == "train" else [0]
    sel = [c for c, a in enumerate(alphabets) if a in split_alpha]
    pos = torch.full((len(alphabets),), -1, dtype=torch.int64)
    pos[sel] = torch.arange(len(sel))
    img = torch.nonzero(pos[blob["char"]] >= 0).squeeze(1)
    n_rot = len(rot_idx)
    labels = (pos[blob["char"][img]].unsqueeze(1) * n_rot + torch.arange(n_rot)).reshape(-1)
    order = torch.argsort(labels, stable=True)  # x: [m, R, S, S] -> [m * R, 1, S, S] by class
    x = blob["images"][img][:, rot_idx].flatten(0, 1).unsqueeze(1)[order].to(torch.float32)
    classes = [(c, ROTATIONS[r]) for c in sel for r in rot_idx]
    names = [f"{alphabets[c]}/{blob['characters'][c]}" + (f"/rot{r:03d}" if r else "")
             for c, r in classes]
    readable = [character_name(alphabets[c], blob["characters"][c])
                + (f" rotated {r} degrees" if r else "") for c, r in classes]
    meta = {"alphabet": [alphabets[c] for c, _ in classes], "rotation": [r for _, r in classes],
            "sources": list(used), "alphabets": sorted(split_alpha)}
    data = LabeledData(x=x.contiguous(), labels=labels[order], class_names=tuple(names),
                       name="omniglot", split=split, meta=meta, display_names=tuple(readable))
    if character_pool is not None:
        keep = character_pools(data.num_classes)[POOLS.index(character_pool)]
        data = data.subset_classes(keep)
        data = replace(data, meta={**data.meta, "character_pool": character_pool,
                                   **{k: [meta[k][c] for c in keep]
                                      for k in ("alphabet", "rotation")}})
    return data


POOLS = ("validation", "test")
POOL_SEED = 2024


def character_pools(num_classes: int) -> tuple[list[int], list[int]]:
    """``(validation classes, test classes)``: a seeded random half of ``range(num_classes)``
    and the other half, each sorted."""
    gen = torch.Generator().manual_seed(POOL_SEED)
    order = torch.randperm(num_classes, generator=gen).tolist()
    half = num_classes // 2
    return sorted(order[:half]), sorted(order[half:])


def character_name(alphabet: str, character: str) -> str:
    """Human-readable name: ``Latin``, ``character03`` -> ``Latin character 3``."""
    digits = "".join(ch for ch in character if ch.isdigit())
    number = str(int(digits)) if digits else character
    return f"{alphabet.replace('_', ' ')} character {number}"


def _runs_tree(root: Path, download_ok: bool) -> FileTree:
    """The runs run01..run20: in ``all_runs.zip``, ``all_runs/`` or ``root`` itself."""
    roots = [root]
    if root == default_data_root() / "omniglot-runs":  # load_dataset's default: share omniglot's
        roots.append(default_data_root() / "omniglot")
    for r in roots:
        if (r / "all_runs").is_dir() or (r / "run01").is_dir():
            return FileTree(r / "all_runs" if (r / "all_runs").is_dir() else r)
        if (r / "all_runs.zip").is_file():
            with FileTree(r / "all_runs.zip") as tree:
                nested = any(n.startswith("all_runs/run01/") for n in tree.names())
            return FileTree(r / "all_runs.zip", "all_runs" if nested else "")
    why = ""
    if download_ok:
        try:
            return FileTree(download(BASE_URL + RUNS_FILE, root / "all_runs.zip"))
        except DownloadError as exc:
            why = f" and the download failed ({exc})"
    raise DataError(f"no all_runs.zip (or all_runs/run01..run20) in {root}{why}; pass "
                    "--data-root to a folder holding it" + ("" if why else ", or allow the download"))


def _read_run_images(tree: FileTree, run: int
                     ) -> tuple[list[Image.Image], list[Image.Image], np.ndarray]:
    """Run ``run``'s training images (class01..20), test items (item01..20), and ``answer``
    ``[20]``: the 0-based training class of each test item (from ``class_labels.txt``)."""
    d = f"run{run:02d}"
    answer = np.full(20, -1)
    with tree.open(f"{d}/class_labels.txt") as f:
        for item, cls in (line.split() for line in f.read().decode().splitlines() if line.strip()):
            answer[int(item[-6:-4]) - 1] = int(cls[-6:-4]) - 1  # ".../itemYY.png .../classZZ.png"
    if sorted(answer.tolist()) != list(range(20)):
        raise DataError(f"{d}/class_labels.txt does not pair the 20 test items with the 20 "
                        "training classes one to one; re-extract all_runs.zip")

    def load(name: str) -> Image.Image:
        with tree.open(f"{d}/{name}") as f, Image.open(f) as img:
            return img.copy()

    train = [load(f"training/class{z:02d}.png") for z in range(1, 21)]
    return train, [load(f"test/item{i:02d}.png") for i in range(1, 21)], answer


def read_run(root: Path, run: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Original 105x105 images of Lake run ``run`` (1..20), ink = True.

    Returns ``train`` ``[20, 105, 105]`` bool (class01..class20), ``test``
    ``[20, 105, 105]`` bool (item01..item20) and ``answer`` ``[20]``: the 0-based
    training class of each test item.
    """
    with _runs_tree(Path(root), download_ok=False) as tree:
        train, test, answer = _read_run_images(tree, run)
    return (np.stack([~np.asarray(i.convert("1")) for i in train]),
            np.stack([~np.asarray(i.convert("1")) for i in test]), answer)


def runs_episodes(data: LabeledData) -> FixedEpisodes:
    """The 20 fixed runs: indices ``[20, 20, 2]`` = [support id, query id] per (run, class)
    (:func:`protobench.episodic.fixed_episodes` wraps them as a hashable EpisodeList)."""
    if data.name != "omniglot-runs" or len(data) != 800:
        raise DataError("runs_episodes needs the omniglot-runs data (800 samples); "
                        "load it with load_dataset('omniglot-runs', 'test')")
    k = torch.arange(400).view(20, 20)
    return FixedEpisodes(indices=torch.stack([2 * k, 2 * k + 1], dim=-1), classes=k, shots=1)


@register_dataset(
    "omniglot-runs",
    splits=("test",),
    description="Lake et al.'s 20 official 20-way 1-shot Omniglot runs (fixed episodes)",
    needs_root=True,
    episodes=runs_episodes,
    train_dataset=("omniglot", "train"),
)
def load_omniglot_runs(split: str, root: Path | None = None, download: bool = True, *,
                       image_size: int = 28) -> LabeledData:
    """400 classes (run r, training class z) x 2 samples: ``2k`` support, ``2k+1`` query."""
    root = Path(root) if root is not None else default_data_root() / "omniglot"
    size = int(image_size)
    images, names, readable, alpha, test_item = [], [], [], [], []
    with _runs_tree(root, download) as tree:
        for run in range(1, 21):
            train, test, answer = _read_run_images(tree, run)
            item_of = np.argsort(answer)  # training class z -> its test item
            for z in range(20):
                images += [process_image(train[z], 0, size), process_image(test[item_of[z]], 0, size)]
                names.append(f"run{run:02d}/class{z + 1:02d}")
                readable.append(f"{RUN_ALPHABETS[(run - 1) // 2].replace('_', ' ')} character"
                                f" (run {run}, class {z + 1})")
                alpha.append(RUN_ALPHABETS[(run - 1) // 2])
                test_item.append(f"run{run:02d}/test/item{item_of[z] + 1:02d}.png")
    x = torch.from_numpy(np.stack(images)).to(torch.float32).unsqueeze(1)
    labels = torch.arange(400).repeat_interleave(2)
    return LabeledData(x=x, labels=labels, class_names=tuple(names), name="omniglot-runs",
                       split="test", meta={"alphabet": alpha, "test_item": test_item},
                       display_names=tuple(readable))
