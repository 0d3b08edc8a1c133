"""Episode lists: the exact episodes of an evaluation, saved, hashed and replayed.

A manifest is JSON (format ``protobench.episodes/1``)::

    {"format": ..., "dataset": "omniglot", "split": "test", "dataset_checksum": "...",
     "ways": 5, "shots": 1, "queries": 15, "seed": 0,
     "class_names": [...],                  # the split's classes, index = class id
     "episodes": [{"classes": [c, ...],      # N class ids
                   "support": [[i, ...], ...],   # N lists of K sample ids
                   "query":   [[i, ...], ...]}]} # N lists of Q sample ids

Sample ids index the split as loaded by protobench (``LabeledData``), so
another tool can run exactly the same episodes. The hash is the SHA-256 of the
canonical JSON (sorted keys, no whitespace) of everything but the hash itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from protobench.errors import DataError
from protobench.utils import canonical_json

FORMAT = "protobench.episodes/1"
_HASH_CHUNK = 4096
_SENTINEL = "\x00episodes\x00"  # placeholder whose JSON text marks where episodes go


@dataclass(frozen=True, eq=False)
class EpisodeList:
    """``indices``: ``[E, N, K+Q]`` int64 (support first); ``classes``: ``[E, N]`` int64."""

    indices: torch.Tensor
    classes: torch.Tensor
    shots: int
    dataset: str
    split: str
    dataset_checksum: str
    seed: int | None = None
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.indices.dim() != 3 or self.classes.shape != self.indices.shape[:2]:
            raise ValueError("indices must be [E, N, K+Q] and classes [E, N]")
        if not 0 < self.shots < self.indices.shape[2]:
            raise ValueError("need at least one support and one query per class")

    @property
    def episodes(self) -> int:
        return self.indices.shape[0]

    @property
    def ways(self) -> int:
        return self.indices.shape[1]

    @property
    def queries(self) -> int:
        return self.indices.shape[2] - self.shots

    @property
    def support(self) -> torch.Tensor:
        """``[E, N, K]``"""
        return self.indices[:, :, : self.shots]

    @property
    def query(self) -> torch.Tensor:
        """``[E, N, Q]``"""
        return self.indices[:, :, self.shots:]

    def _header(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "dataset": self.dataset,
            "split": self.split,
            "dataset_checksum": self.dataset_checksum,
            "ways": self.ways,
            "shots": self.shots,
            "queries": self.queries,
            "seed": self.seed,
            "class_names": list(self.class_names),
        }

    def _episode_dicts(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        k = self.shots
        return [{"classes": c, "support": [row[:k] for row in idx],
                 "query": [row[k:] for row in idx]}
                for c, idx in zip(self.classes[start:stop].tolist(),
                                  self.indices[start:stop].tolist())]

    def to_json_dict(self) -> dict[str, Any]:
        return {**self._header(), "episodes": self._episode_dicts()}

    @cached_property
    def hash(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`to_json_dict`, streamed chunk by chunk so
        memory stays bounded for millions of episodes (same digest as hashing it whole)."""
        head = self._header()
        head["episodes"] = _SENTINEL
        prefix, suffix = canonical_json(head).split(json.dumps(_SENTINEL))
        h = hashlib.sha256(prefix.encode())
        h.update(b"[")
        for start in range(0, self.episodes, _HASH_CHUNK):
            if start:
                h.update(b",")
            part = self._episode_dicts(start, start + _HASH_CHUNK)
            h.update(canonical_json(part)[1:-1].encode())
        h.update(b"]")
        h.update(suffix.encode())
        return h.hexdigest()

    def save(self, path: str | Path) -> str:
        """Write the manifest (with its hash) and return the hash."""
        d = self.to_json_dict()
        d["sha256"] = self.hash
        Path(path).write_text(json.dumps(d))
        return self.hash

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> EpisodeList:
        if d.get("format") != FORMAT:
            raise DataError(f"not a protobench episode manifest (format {d.get('format')!r})")
        eps = d["episodes"]
        indices = torch.tensor([[s + q for s, q in zip(e["support"], e["query"])] for e in eps],
                               dtype=torch.int64)
        classes = torch.tensor([e["classes"] for e in eps], dtype=torch.int64)
        return cls(indices, classes, int(d["shots"]), d["dataset"], d["split"],
                   d["dataset_checksum"], d.get("seed"), tuple(d.get("class_names", ())))

    @classmethod
    def load(cls, path: str | Path) -> EpisodeList:
        """Read a manifest and verify its hash."""
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read episode manifest {path}: {exc}") from exc
        stored = d.pop("sha256", None)
        out = cls.from_json_dict(d)
        if stored is not None and stored != out.hash:
            raise DataError(f"episode manifest {path} is corrupt: its hash does not match")
        return out

    def check_against(self, dataset: str, split: str, checksum: str) -> None:
        """Refuse to replay episodes on data other than the data they were drawn from."""
        if (self.dataset, self.split, self.dataset_checksum) != (dataset, split, checksum):
            raise DataError(
                f"episode manifest was drawn from {self.dataset}/{self.split} "
                f"(checksum {self.dataset_checksum[:12]}), not {dataset}/{split} "
                f"(checksum {checksum[:12]}); load the same data version"
            )
