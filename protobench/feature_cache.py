"""On-disk cache of frozen features, so a sweep never re-runs a backbone.

A cache entry holds the ``[n, D]`` features of one dataset split under one encoder.
Its key is the SHA-256 of (dataset name, split, content checksum, sample count, the
loading options that change the inputs, e.g. ``image_size``) and the method's
*feature key*: backbone name, input shape and a hash of every encoder weight. Any
change to the data, its transform or the weights gives a new key; an unchanged
checkpoint reuses the entry whatever the ways/shots/queries/episodes of the run.

Entries are written atomically (temporary file + rename), so a killed run never leaves
a truncated entry; an entry that fails to load is recomputed and rewritten.
Location: ``$PROTOBENCH_CACHE/features`` (default ``~/.cache/protobench/features``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from protobench.datasets.base import LabeledData, cache_dir
from protobench.utils import sha256_json, sha256_tensor


def weights_hash(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes, dtypes and values)."""
    state = module.state_dict()
    names = sorted(state)
    return sha256_json({"names": names, "tensors": sha256_tensor(*(state[k] for k in names))})


@dataclass
class FeatureCache:
    """``get(data, feature_key, compute)`` returns cached features or computes and stores them."""

    root: Path = field(default_factory=lambda: cache_dir() / "features")
    hits: int = 0
    misses: int = 0

    def key(self, data: LabeledData, feature_key: str, options: dict[str, Any]) -> str:
        return sha256_json({"dataset": data.name, "split": data.split,
                            "checksum": data.checksum, "n": len(data),
                            "options": options, "encoder": feature_key})

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def get(self, data: LabeledData, feature_key: str, compute: Callable[[], torch.Tensor],
            options: dict[str, Any] | None = None) -> torch.Tensor:
        path = self.path(self.key(data, feature_key, options or {}))
        if path.exists():
            try:
                feats = torch.load(path, map_location="cpu", weights_only=True)["features"]
                if feats.shape[0] == len(data):
                    self.hits += 1
                    return feats
            except Exception:  # noqa: BLE001  (any unreadable entry)
                pass  # unreadable entry: recompute and overwrite
        feats = compute()
        self.misses += 1
        self._write(path, {"features": feats.detach().cpu().contiguous(),
                           "dataset": data.name, "split": data.split})
        return feats

    def _write(self, path: Path, payload: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(payload, fh)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
