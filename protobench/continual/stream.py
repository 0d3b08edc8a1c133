"""Class-incremental streams: experiences of new classes over a train and a test split.

``build_stream(train, test, StreamSpec(...))`` orders the classes (seeded permutation,
the PASS order, natural order or an explicit list), keeps the first ``num_classes`` of
them when asked, cuts them into experiences (an optional larger base experience, then
near-equal parts, earlier parts taking the remainder) and relabels every sample by its
class's position in the order. Experience ``t`` therefore holds the contiguous labels
``offsets[t]..offsets[t+1]-1``, and its task label (task-incremental view) is ``t``.

``stream_from_dataset(name, spec, ...)`` builds one from a registered dataset: its
``stream_splits`` (e.g. CIFAR's train and test halves), or else a seeded per-class
hold-out of ``test_fraction`` of the samples of its ``all`` split (``digits``,
``omniglot``: their few-shot splits are class-disjoint).

The PASS order (Zhu et al. 2021, used by NAPA-VQ and most NECIL papers) is numpy's
``np.random.seed(1993); np.random.permutation(num_classes)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protobench.datasets.base import LabeledData, get_dataset, load_dataset
from protobench.errors import DataError, SpecError
from protobench.utils import sha256_json

CLASS_ORDERS = ("seed", "pass", "efc", "natural")
PASS_SEED = 1993


@dataclass(frozen=True)
class StreamSpec:
    """How to cut classes into experiences.

    experiences: number of experiences ``T`` (base experience included).
    base_classes: classes of the first experience (``None``: all experiences near-equal).
    class_order: ``seed`` (permutation seeded by ``seed``), ``pass`` (seed 1993, numpy),
        ``efc`` (Python's ``random`` seeded by ``seed``, the EFC reference's remapping),
        ``natural`` (label order), or an explicit sequence of class ids.
    num_classes: keep only the first ``num_classes`` classes of the order (``None``: all).
    experience_sizes: explicit classes per experience (overrides ``base_classes``).
    """

    experiences: int
    base_classes: int | None = None
    class_order: str | tuple[int, ...] = "seed"
    seed: int = 0
    num_classes: int | None = None
    experience_sizes: tuple[int, ...] | None = None

    def order_name(self) -> str:
        return self.class_order if isinstance(self.class_order, str) else "explicit"


def class_order(num_classes: int, order: str | Sequence[int], seed: int = 0) -> list[int]:
    """The classes ``0..num_classes-1`` in stream order."""
    if not isinstance(order, str):
        chosen = [int(c) for c in order]
        if sorted(chosen) != list(range(num_classes)):
            raise SpecError(f"an explicit class order must list each of the {num_classes} "
                            f"classes 0..{num_classes - 1} once; got {len(chosen)} entries")
        return chosen
    if order == "seed":
        return torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    if order == "pass":
        return np.random.RandomState(PASS_SEED).permutation(num_classes).tolist()
    if order == "efc":  # random.seed(seed); random.shuffle(l): class i gets label l[i]
        labels = list(range(num_classes))
        random.Random(seed).shuffle(labels)
        return sorted(range(num_classes), key=labels.__getitem__)
    if order == "natural":
        return list(range(num_classes))
    raise SpecError(f"unknown class order {order!r}; use --class-order "
                    f"{'|'.join(CLASS_ORDERS)}")


def experience_sizes(num_classes: int, spec: StreamSpec) -> tuple[int, ...]:
    """Classes per experience for ``spec`` over ``num_classes`` classes (validated)."""
    t, base = spec.experiences, spec.base_classes
    if spec.experience_sizes is not None:
        sizes = tuple(int(s) for s in spec.experience_sizes)
        if len(sizes) != t or min(sizes, default=0) < 1 or sum(sizes) != num_classes:
            raise SpecError(f"experience sizes {list(sizes)} must be {t} positive numbers "
                            f"summing to the {num_classes} classes")
        return sizes
    if t < 1:
        raise SpecError(f"--experiences must be at least 1, got {t}")
    if base is None or base == 0:
        if t > num_classes:
            raise SpecError(f"{t} experiences need at least {t} classes but the stream has "
                            f"{num_classes}; lower --experiences to at most {num_classes}")
        q, r = divmod(num_classes, t)
        return tuple(q + (i < r) for i in range(t))
    if base < 0 or base >= num_classes:
        raise SpecError(f"--base-classes {base} must be between 1 and {num_classes - 1} (the "
                        f"stream has {num_classes} classes); lower --base-classes")
    rest = num_classes - base
    if t < 2 or t - 1 > rest:
        raise SpecError(f"a base experience of {base} classes leaves {rest} classes for "
                        f"{t - 1} more experiences; use --experiences between 2 and {rest + 1}")
    q, r = divmod(rest, t - 1)
    return (base, *(q + (i < r) for i in range(t - 1)))


@dataclass(frozen=True)
class Experience:
    """One experience: its new classes (stream labels) and its samples in each split."""

    index: int
    classes: tuple[int, ...]
    train_indices: torch.Tensor
    """``[n_train]`` indices into ``stream.train``."""
    test_indices: torch.Tensor
    """``[n_test]`` indices into ``stream.test``."""

    @property
    def task_label(self) -> int:
        return self.index


@dataclass(frozen=True, eq=False)
class ClassIncrementalStream:
    """Train and test data relabelled to stream order, cut into experiences.

    ``train``/``test``: LabeledData with labels ``0..C-1`` = position in ``class_order``.
    ``class_order``: ``[C]`` original class ids in stream order.
    ``sizes``: classes per experience.
    """

    train: LabeledData
    test: LabeledData
    class_order: tuple[int, ...]
    sizes: tuple[int, ...]
    spec: StreamSpec
    source: str = ""

    def __post_init__(self) -> None:
        if sum(self.sizes) != len(self.class_order):
            raise ValueError("experience sizes do not add up to the classes of the stream")

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[Experience]:
        return (self.experience(i) for i in range(len(self)))

    @property
    def num_classes(self) -> int:
        return len(self.class_order)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.train.class_names

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """``[T+1]`` first label of each experience, then ``C``."""
        return (0, *np.cumsum(self.sizes).tolist())

    def classes(self, t: int) -> tuple[int, ...]:
        return tuple(range(self.offsets[t], self.offsets[t + 1]))

    def task_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Task (experience) id of each stream label ``[n]`` -> ``[n]``."""
        bounds = torch.tensor(self.offsets[1:], dtype=torch.int64)
        return torch.bucketize(labels, bounds, right=True)

    def experience(self, t: int) -> Experience:
        if not 0 <= t < len(self):
            raise IndexError(f"experience {t} of a {len(self)}-experience stream")
        lo, hi = self.offsets[t], self.offsets[t + 1]

        def pick(labels: torch.Tensor) -> torch.Tensor:
            return torch.nonzero((labels >= lo) & (labels < hi)).squeeze(1)

        return Experience(t, self.classes(t), pick(self.train.labels), pick(self.test.labels))

    def inputs(self, data: LabeledData, indices: torch.Tensor):
        """``(x, y)`` of ``data`` at ``indices``: a tensor (or lazy source) and ``[n]`` labels."""
        part = data.subset(indices)
        return part.x, part.labels

    def manifest(self) -> dict[str, Any]:
        """What identifies the stream: data checksums, class order, experience sizes."""
        return {"format": "protobench.stream/1", "source": self.source,
                "train_checksum": self.train.checksum, "test_checksum": self.test.checksum,
                "class_order": list(self.class_order), "class_names": list(self.class_names),
                "sizes": list(self.sizes)}

    @cached_property
    def hash(self) -> str:
        return sha256_json(self.manifest())


def build_stream(train: LabeledData, test: LabeledData, spec: StreamSpec,
                 source: str = "") -> ClassIncrementalStream:
    """A stream over ``train``/``test`` (same class list) cut as ``spec`` says."""
    if train.class_names != test.class_names:
        raise DataError(f"the train and test data of a stream must hold the same classes "
                        f"({train.num_classes} vs {test.num_classes} classes, or another "
                        "order); load both splits of one dataset")
    order = class_order(train.num_classes, spec.class_order, spec.seed)
    if spec.num_classes is not None:
        if not 1 <= spec.num_classes <= len(order):
            raise SpecError(f"num_classes={spec.num_classes} must be between 1 and the "
                            f"{len(order)} classes of the data")
        order = order[:spec.num_classes]
    sizes = experience_sizes(len(order), spec)
    for name, data in (("train", train), ("test", test)):
        empty = [train.class_names[c] for c in order if data.class_counts[c] == 0]
        if empty:
            raise DataError(f"{len(empty)} classes have no {name} samples (first: "
                            f"{empty[0]!r}); lower test_fraction or use other data")
    return ClassIncrementalStream(train.subset_classes(order), test.subset_classes(order),
                                  tuple(order), sizes, spec, source or train.name)


def holdout_split(data: LabeledData, test_fraction: float = 0.2, seed: int = 0
                  ) -> tuple[LabeledData, LabeledData]:
    """Per class, a seeded ``test_fraction`` of the samples (at least one) goes to test."""
    if not 0 < test_fraction < 1:
        raise SpecError(f"test_fraction={test_fraction} must be between 0 and 1 (e.g. 0.2)")
    small = [data.class_names[c] for c, n in enumerate(data.class_counts.tolist()) if n < 2]
    if small:
        raise DataError(f"class {small[0]!r} has fewer than 2 samples: it cannot be split "
                        "into train and test samples")
    gen = torch.Generator().manual_seed(seed)
    test_idx = []
    for row in data.class_table:
        members = row[row >= 0]
        k = min(len(members) - 1, max(1, round(test_fraction * len(members))))
        test_idx.append(members[torch.randperm(len(members), generator=gen)[:k]])
    test_sel = torch.zeros(len(data), dtype=torch.bool)
    test_sel[torch.cat(test_idx)] = True
    train_i, test_i = torch.nonzero(~test_sel).squeeze(1), torch.nonzero(test_sel).squeeze(1)
    return data.subset(train_i, "train"), data.subset(test_i, "test")


def stream_from_dataset(name: str, spec: StreamSpec, root: str | Path | None = None, *,
                        test_fraction: float = 0.2, split_seed: int = 0,
                        **options: Any) -> ClassIncrementalStream:
    """A stream over the registered dataset ``name`` (``options`` go to its loader)."""
    entry = get_dataset(name)
    if entry.stream_splits is not None:
        train_split, test_split = entry.stream_splits
        train = load_dataset(name, train_split, root, **options)
        test = load_dataset(name, test_split, root, **options)
    elif "all" in entry.splits:
        train, test = holdout_split(load_dataset(name, "all", root, **options),
                                    test_fraction, split_seed)
    else:
        raise DataError(f"dataset {name!r} has class-disjoint splits only "
                        f"({', '.join(entry.splits)}) and no 'all' split: it cannot form a "
                        "class-incremental stream; see `protobench datasets`")
    return build_stream(train, test, spec, source=name)
