"""Interop with avalanche-lib (>= 0.6) benchmarks, in both directions.

- :func:`stream_from_avalanche` turns an avalanche benchmark (the ``CLScenario`` of
  ``class_incremental_benchmark``, or the ``NCScenario`` of ``nc_benchmark``) into a
  :class:`ClassIncrementalStream`: experience ``t`` keeps the classes of avalanche's
  train experience ``t`` (in ascending id order within it), every sample of the train and
  test streams is read once through its eval transforms and kept as a tensor.
- :func:`to_avalanche` exports a stream as a ``CLScenario`` built by avalanche's own
  ``class_incremental_benchmark`` (stream labels ``0..C-1``, the stream's experience
  sizes), so avalanche strategies (``Naive``, ``LwF``, ...) run on exactly our
  experiences; ``task_labels=True`` gives each experience its task label (task-incremental).

avalanche pulls in many packages and is slow to import, so it is imported here only,
inside the functions; nothing in protobench's core imports this module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from protobench.continual.stream import ClassIncrementalStream, StreamSpec, build_stream
from protobench.datasets.base import LabeledData
from protobench.errors import DataError


class StreamDataset(Dataset):
    """A torch dataset over one split of a stream: ``(x [..], y)`` pairs and ``targets``."""

    def __init__(self, data: LabeledData) -> None:
        self.data = data
        self.targets = data.labels.tolist()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.data.get(torch.tensor([int(i)]))[0], self.targets[i]


def to_avalanche(stream: ClassIncrementalStream, *, task_labels: bool = False) -> Any:
    """The stream as an avalanche ``CLScenario`` with ``train_stream`` and ``test_stream``."""
    from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark

    bm = class_incremental_benchmark(
        {"train": StreamDataset(stream.train), "test": StreamDataset(stream.test)},
        class_order=list(range(stream.num_classes)), num_classes_per_exp=list(stream.sizes))
    if task_labels:
        from avalanche.benchmarks.scenarios.task_aware import task_incremental_benchmark

        bm = task_incremental_benchmark(bm, reset_task_labels=True)
    return bm


def _read_experiences(experiences: Any, batch_size: int) -> tuple[list[list[int]], torch.Tensor,
                                                                   torch.Tensor]:
    """Classes of each experience, and every sample ``[n, ...]`` with its label ``[n]``."""
    classes, xs, ys = [], [], []
    for exp in experiences:
        ds = exp.dataset.eval() if hasattr(exp.dataset, "eval") else exp.dataset
        classes.append(sorted(int(c) for c in exp.classes_in_this_experience))
        for batch in DataLoader(ds, batch_size=batch_size, shuffle=False):
            x, y = batch[0], batch[1]
            if not isinstance(x, torch.Tensor):
                raise DataError("the avalanche benchmark yields non-tensor inputs; give its "
                                "datasets an eval transform that ends in ToTensor()")
            xs.append(x.float())
            ys.append(torch.as_tensor(y, dtype=torch.int64))
    if not xs:
        raise DataError("the avalanche benchmark has an empty stream")
    return classes, torch.cat(xs), torch.cat(ys)


def stream_from_avalanche(benchmark: Any, *, name: str = "avalanche",
                          batch_size: int = 512) -> ClassIncrementalStream:
    """Our stream over the experiences of an avalanche class-incremental ``benchmark``."""
    train_classes, x_train, y_train = _read_experiences(benchmark.train_stream, batch_size)
    test_classes, x_test, y_test = _read_experiences(benchmark.test_stream, batch_size)
    order = [c for cs in train_classes for c in cs]
    if len(set(order)) != len(order):
        raise DataError("a class appears in several avalanche train experiences; only "
                        "class-incremental benchmarks (new classes each time) can be imported")
    if sorted(c for cs in test_classes for c in cs) != sorted(order):
        raise DataError("the avalanche test stream holds other classes than its train stream")
    ids = sorted(order)
    position = {c: i for i, c in enumerate(ids)}
    remap = torch.full((max(ids) + 1,), -1, dtype=torch.int64)
    remap[torch.tensor(ids)] = torch.arange(len(ids))
    names = tuple(str(c) for c in ids)
    train = LabeledData(x_train, remap[y_train], names, name, "train")
    test = LabeledData(x_test, remap[y_test], names, name, "test")
    spec = StreamSpec(len(train_classes), class_order=tuple(position[c] for c in order),
                      experience_sizes=tuple(len(cs) for cs in train_classes))
    return build_stream(train, test, spec, source=name)
