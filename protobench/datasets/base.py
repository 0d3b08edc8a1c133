"""`LabeledData` and the dataset registry.

A dataset is a loader function registered by name. ``load_dataset(name, split)``
returns a :class:`LabeledData`: samples (an in-memory tensor or a lazy source),
int64 labels ``0..C-1`` within the split, human-readable class names and a
content checksum that episode manifests record.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import torch

from protobench.errors import DataError, UserError
from protobench.registry import Registry, parameters
from protobench.utils import sha256_tensor


class SampleSource(Protocol):
    """A lazy collection of samples (e.g. image files), indexed by a 1-D index tensor."""

    def __len__(self) -> int: ...

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class FixedEpisodes:
    """A dataset's own episodes: ``indices [E, N, K+Q]`` into the data, ``classes [E, N]``
    (class ids per episode) and ``shots`` K. :func:`protobench.episodic.fixed_episodes`
    wraps them as a hashable :class:`~protobench.episodic.EpisodeList`."""

    indices: torch.Tensor
    classes: torch.Tensor
    shots: int


@dataclass(frozen=True, eq=False)
class LabeledData:
    """Samples of one split with their labels.

    x: ``[n, ...]`` tensor (images ``[n, C, H, W]`` or features ``[n, D]``) or a lazy source.
    labels: ``[n]`` int64 in ``0..len(class_names)-1``.
    """

    x: torch.Tensor | SampleSource
    labels: torch.Tensor
    class_names: tuple[str, ...]
    name: str
    split: str
    checksum: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    display_names: tuple[str, ...] = ()  # human-readable names when class_names are ids

    def __post_init__(self) -> None:
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError("labels must be a 1-D int64 tensor")
        if self.display_names and len(self.display_names) != len(self.class_names):
            raise ValueError("display_names must give one name per class")
        if len(self.x) != len(self.labels):
            raise ValueError(f"{len(self.x)} samples but {len(self.labels)} labels")
        if not self.checksum:
            object.__setattr__(self, "checksum", self._content_checksum())

    def _content_checksum(self) -> str:
        if isinstance(self.x, torch.Tensor):
            return sha256_tensor(self.x, self.labels)
        return sha256_tensor(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def readable_names(self) -> tuple[str, ...]:
        """Human-readable class names (e.g. for text prompts): ``display_names`` when the
        loader gives them, else ``class_names``; underscores become spaces."""
        return tuple(n.replace("_", " ") for n in (self.display_names or self.class_names))

    @property
    def is_features(self) -> bool:
        """True when samples are already feature vectors ``[n, D]``."""
        return isinstance(self.x, torch.Tensor) and self.x.dim() == 2

    def get(self, idx: torch.Tensor) -> torch.Tensor:
        """Samples at ``idx`` (``[B]`` int64) as a float tensor ``[B, ...]``."""
        return self.x[idx]

    @cached_property
    def class_counts(self) -> torch.Tensor:
        """``[C]`` number of samples of each class."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    @cached_property
    def class_table(self) -> torch.Tensor:
        """``[C, max_n]`` sample indices of each class in ascending order, padded with -1."""
        order = torch.argsort(self.labels, stable=True)
        counts = self.class_counts
        table = torch.full((self.num_classes, int(counts.max().item()) if len(counts) else 0), -1)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(len(order)) - starts[self.labels[order]]
        table[self.labels[order], pos] = order
        return table

    def subset_classes(self, classes: Sequence[int], split: str | None = None) -> LabeledData:
        """The samples of ``classes`` only, relabelled ``0..len(classes)-1`` in that order."""
        classes_t = torch.as_tensor(list(classes), dtype=torch.int64)
        remap = torch.full((self.num_classes,), -1, dtype=torch.int64)
        remap[classes_t] = torch.arange(len(classes_t))
        keep = torch.nonzero(remap[self.labels] >= 0).squeeze(1)
        x = self.x[keep] if isinstance(self.x, torch.Tensor) else _SubsetSource(self.x, keep)
        return replace(
            self,
            x=x,
            labels=remap[self.labels[keep]],
            class_names=tuple(self.class_names[c] for c in classes_t.tolist()),
            display_names=tuple(self.display_names[c] for c in classes_t.tolist())
            if self.display_names else (),
            split=split or self.split,
            checksum="",
            meta={**self.meta, "parent_classes": classes_t.tolist()},
        )

    def subset(self, indices: torch.Tensor, split: str | None = None) -> LabeledData:
        """The samples at ``indices`` (``[m]`` int64), with every class name kept."""
        keep = torch.as_tensor(indices, dtype=torch.int64)
        x = self.x[keep] if isinstance(self.x, torch.Tensor) else _SubsetSource(self.x, keep)
        return replace(self, x=x, labels=self.labels[keep], split=split or self.split,
                       checksum="")


@dataclass(frozen=True)
class ClassSet:
    """The classes of a split without its samples (what a checkpoint records it was
    trained on): enough to check class overlap later."""

    name: str
    split: str
    class_names: tuple[str, ...]
    readable_names: tuple[str, ...]

    @classmethod
    def of(cls, data: LabeledData) -> ClassSet:
        return cls(data.name, data.split, tuple(data.class_names), tuple(data.readable_names))


def shared_classes(train: LabeledData | ClassSet, test: LabeledData | ClassSet) -> list[str]:
    """Classes of ``test`` that ``train`` also holds, by class name or readable name."""
    names, readable = set(train.class_names), set(train.readable_names)
    return [c for c, r in zip(test.class_names, test.readable_names)
            if c in names or r in readable]


def check_disjoint_classes(train: LabeledData | ClassSet, test: LabeledData, allow: bool) -> None:
    """Refuse meta-training (or centring, or tuning) on the evaluated classes.

    Few-shot evaluation measures generalisation to classes never seen in training;
    e.g. ``mnist``'s ``train`` split holds the very digits of its ``test`` split.
    """
    shared = shared_classes(train, test)
    if shared and not allow:
        shown = ", ".join(repr(c) for c in shared[:5]) + (" ..." if len(shared) > 5 else "")
        raise UserError(
            f"the meta-train data {train.name}:{train.split} share {len(shared)} of the "
            f"{test.num_classes} evaluated classes of {test.name}:{test.split} ({shown}); "
            "use a dataset with a few-shot class split (digits, omniglot, cifar-fs, fc100, "
            "mini-imagenet), --train-dataset with disjoint classes, or --allow-class-overlap "
            "to do it on purpose (recorded in the row)")


@dataclass(frozen=True)
class _SubsetSource:
    source: SampleSource
    keep: torch.Tensor

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.source[self.keep[idx]]


Loader = Callable[..., LabeledData]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its loader and what it offers.

    ``loader(split, root, download, **options)`` returns the split's LabeledData.
    ``episodes`` (fixed-episode datasets only) returns the dataset's own episode list.
    ``train_dataset`` names the (dataset, split) a trainable method learns from when
    this dataset has no training split of its own.
    ``stream_splits`` names the (train, test) splits that hold the same classes (a
    sample-level split, e.g. CIFAR's train and test halves); continual streams use them.
    Without it a stream splits the samples of the ``all`` split itself.
    """

    name: str
    loader: Loader
    splits: tuple[str, ...]
    description: str
    needs_root: bool = False
    default_test_split: str = "test"
    episodes: Callable[..., Any] | None = None
    train_dataset: tuple[str, str] | None = None
    stream_splits: tuple[str, str] | None = None


def _describe_dataset(name: str, entry: DatasetEntry) -> dict[str, Any]:
    """The dataset-specific part of ``DATASETS.describe(name)``: the loader's options
    (``-o key=value``), splits and whether a data root is needed."""
    return {"summary": entry.description,
            "parameters": parameters(entry.loader, skip=("split", "root", "download")),
            "splits": list(entry.splits), "needs_root": entry.needs_root,
            "default_test_split": entry.default_test_split,
            "fixed_episodes": entry.episodes is not None,
            "train_dataset": list(entry.train_dataset) if entry.train_dataset else None,
            "stream_splits": list(entry.stream_splits) if entry.stream_splits else None}


DATASETS: Registry[DatasetEntry] = Registry("dataset", describer=_describe_dataset)
"""Every registered dataset by name (``protobench list datasets``)."""


def register_dataset(
    name: str,
    *,
    splits: Sequence[str],
    description: str,
    needs_root: bool = False,
    default_test_split: str = "test",
    episodes: Callable[..., Any] | None = None,
    train_dataset: tuple[str, str] | None = None,
    stream_splits: tuple[str, str] | None = None,
) -> Callable[[Loader], Loader]:
    """Decorator that registers ``loader`` under ``name`` (a :class:`DatasetEntry`); a name
    registered twice is refused."""

    def deco(loader: Loader) -> Loader:
        DATASETS.register(name, DatasetEntry(
            name, loader, tuple(splits), description, needs_root, default_test_split,
            episodes, train_dataset, stream_splits,
        ))
        return loader

    return deco


def list_datasets() -> list[DatasetEntry]:
    """Registered datasets sorted by name."""
    return DATASETS.list()


def get_dataset(name: str) -> DatasetEntry:
    """The dataset registered as ``name``; unknown names list the valid ones."""
    return DATASETS.get(name)


def default_data_root() -> Path:
    """``$PROTOBENCH_DATA`` or ``~/.cache/protobench/data``."""
    env = os.environ.get("PROTOBENCH_DATA")
    return Path(env) if env else Path.home() / ".cache" / "protobench" / "data"


def cache_dir() -> Path:
    """Where derived artefacts (decoded images, features) are cached."""
    env = os.environ.get("PROTOBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "protobench"


def load_dataset(
    name: str,
    split: str,
    root: str | Path | None = None,
    *,
    download: bool = True,
    **options: Any,
) -> LabeledData:
    """Load ``split`` of the registered dataset ``name``.

    An explicit ``root`` must exist; without one, the default data root is used
    (and created for downloads).
    """
    entry = get_dataset(name)
    if split not in entry.splits:
        raise UserError(
            f"dataset {name!r} has no split {split!r}; choose one of: {', '.join(entry.splits)}"
        )
    if root is not None:
        root = Path(root).expanduser()
        if not root.exists():
            raise DataError(
                f"data root {str(root)!r} does not exist; pass an existing folder with --data-root"
            )
    elif entry.needs_root:
        root = default_data_root() / name
    try:
        data = entry.loader(split, root=root, download=download, **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise UserError(f"dataset {name!r}: {exc}; see `protobench datasets`") from exc
        raise
    # the options that shaped the inputs key derived artefacts (e.g. the feature cache)
    return replace(data, meta={**data.meta, "load_options": dict(options)})
