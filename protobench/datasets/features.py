"""`features`: precomputed feature vectors from a ``.npz`` or ``.pt`` file.

The file (given as the data root, or with the option ``path``) holds a mapping:

- ``features`` (or ``x``): ``[n, D]`` numbers, finite;
- ``labels`` (or ``y``): ``[n]`` integer class ids ``>= 0``, or class-name strings;
- ``class_names`` (optional): ``[C]`` strings, index = class id;
- ``split`` (optional): ``[n]`` strings such as ``train``/``val``/``test``; without
  it only the ``all`` split exists.

A ``.npz`` is read with ``allow_pickle=False`` (store strings as ``np.str_``
arrays, not objects); a ``.pt`` with ``torch.load(weights_only=True)`` (a dict of
tensors and lists). Each split keeps the classes that occur in it, relabelled
``0..C-1`` in class-id order (``meta["parent_classes"]`` holds the file's ids).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protobench.datasets.base import LabeledData, register_dataset
from protobench.errors import DataError

SPLITS = ("all", "train", "val", "test")


def _read(file: Path) -> dict[str, Any]:
    suffix = file.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(file, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        if suffix in (".pt", ".pth"):
            obj = torch.load(file, map_location="cpu", weights_only=True)
            if not isinstance(obj, dict):
                raise DataError(f"{file} holds a {type(obj).__name__}, not a dict; save "
                                "{'features': x, 'labels': y} with torch.save")
            return {k: v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
                    for k, v in obj.items()}
    except ValueError as exc:  # object arrays in an npz
        raise DataError(f"cannot read {file} ({exc}); save strings as np.str_ arrays, "
                        "e.g. np.array(names, dtype=str)") from exc
    except (OSError, RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        raise DataError(f"cannot read feature file {file} ({exc}); re-save it with np.savez "
                        "or torch.save") from exc
    raise DataError(f"feature file {file} is neither .npz nor .pt; save it with np.savez "
                    "(.npz) or torch.save (.pt)")


def _first(arrays: dict[str, Any], keys: tuple[str, str], file: Path) -> np.ndarray:
    for k in keys:
        if k in arrays:
            return np.asarray(arrays[k])
    raise DataError(f"{file} has no {keys[0]!r} (or {keys[1]!r}) array (found: "
                    f"{', '.join(sorted(arrays)) or 'nothing'}); add it")


@register_dataset(
    "features",
    splits=SPLITS,
    description="precomputed features [n, D] + labels from a .npz/.pt file (--data-root FILE)",
    needs_root=True,
)
def load_features(split: str, root: Path | None = None, download: bool = True, *,
                  path: str | Path | None = None) -> LabeledData:
    """``split`` of a feature file: ``x`` ``[n, D]`` float32, labels ``0..C-1``."""
    file = Path(path).expanduser() if path is not None else Path(root) if root else None
    if file is None or not file.is_file():
        raise DataError(f"feature file {file} does not exist or is not a file; pass a .npz or "
                        ".pt file as --data-root (or path=FILE)")
    arrays = _read(file)
    x, y = _first(arrays, ("features", "x"), file), _first(arrays, ("labels", "y"), file)
    if x.ndim != 2 or x.dtype.kind not in "fiub" or y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{file}: features must be numeric [n, D] and labels [n], got "
                        f"{x.dtype}{list(x.shape)} and {y.dtype}{list(y.shape)}; fix the arrays")
    bad = int((~np.isfinite(x)).sum()) if x.dtype.kind == "f" else 0
    if bad:
        raise DataError(f"{file}: {bad} feature values are NaN or infinite; drop or fix "
                        "those samples")
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else None
    if y.dtype.kind in "US":  # class-name labels -> their index in class_names
        table = np.asarray(names if names else np.unique(y), dtype=str)
        sorter = np.argsort(table)
        idx = sorter[np.searchsorted(table, y, sorter=sorter).clip(0, len(table) - 1)]
        unknown = np.unique(y[table[idx] != y])
        if len(unknown):
            raise DataError(f"{file}: labels {unknown[:3].tolist()} are not in class_names; "
                            "add them")
        names, y = table.tolist(), idx.astype(np.int64)
    elif y.dtype.kind not in "iu" or (len(y) and y.min() < 0):
        raise DataError(f"{file}: labels must be integer class ids >= 0 (got {y.dtype}); "
                        "relabel them 0..C-1")
    n_classes = int(y.max()) + 1 if len(y) else 0
    if names is not None and len(names) < n_classes:
        raise DataError(f"{file}: {len(names)} class_names for label ids up to {n_classes - 1}; "
                        "give one name per class id")
    names = names or [f"class {k}" for k in range(n_classes)]
    keep = np.arange(len(y))
    if split != "all":
        if "split" not in arrays:
            raise DataError(f"{file} has no per-sample 'split' array, so only the split 'all' "
                            "exists; load split all or add a split array")
        tags = np.asarray(arrays["split"]).astype(str)
        if tags.shape != y.shape:
            raise DataError(f"{file}: the split array has shape {list(tags.shape)}, labels "
                            f"{list(y.shape)}; give one split name per sample")
        keep = np.nonzero(tags == split)[0]
        if not len(keep):
            raise DataError(f"{file} has no {split!r} samples (splits present: "
                            f"{', '.join(sorted(set(tags.tolist())))}); load one of those")
    parents, labels = np.unique(y[keep], return_inverse=True)
    return LabeledData(
        x=torch.from_numpy(np.ascontiguousarray(x[keep], dtype=np.float32)),
        labels=torch.from_numpy(labels.astype(np.int64).reshape(-1)),
        class_names=tuple(names[p] for p in parents.tolist()), name="features", split=split,
        meta={"path": str(file), "parent_classes": parents.tolist()},
    )
