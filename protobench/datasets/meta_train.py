"""The meta-train split of a few-shot evaluation: ``--train-dataset``, the dataset's
declared one, or its own ``train`` split, loaded like the evaluated split."""

from __future__ import annotations

from typing import Any

from protobench.datasets.base import LabeledData, check_disjoint_classes, get_dataset, load_dataset


def load_meta_train(dataset: str, test: LabeledData, *, train_dataset: str | None = None,
                    dataset_options: dict[str, Any] | None = None,
                    train_options: dict[str, Any] | None = None, data_root: str | None = None,
                    allow_class_overlap: bool = False) -> LabeledData | None:
    """The meta-train split, or None when there is none. The evaluated dataset's options
    (``-o image_size=...``) carry over to a split of the same dataset, ``train_options``
    overriding them, so both are loaded alike. A split that shares classes with ``test``
    is refused unless ``allow_class_overlap`` (see :func:`check_disjoint_classes`)."""
    entry = get_dataset(dataset)
    if train_dataset:
        name, _, split = train_dataset.partition(":")
        split = split or "train"
    elif entry.train_dataset is not None:
        name, split = entry.train_dataset
    elif "train" in entry.splits:
        name, split = dataset, "train"
    else:
        return None
    options = {**(dataset_options or {}), **(train_options or {})} if name == dataset \
        else dict(train_options or {})
    train = load_dataset(name, split, data_root, **options)
    check_disjoint_classes(train, test, allow_class_overlap)
    return train
