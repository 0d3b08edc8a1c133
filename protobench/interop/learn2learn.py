"""learn2learn interop: evaluate its task sets with our methods, replay our episodes in it.

learn2learn (extra ``l2l``, built from its sdist by ``make install``) describes an episode
as a list of ``DataDescription(index)`` over a ``MetaDataset``. Both directions go
through sample indices, so nothing is copied or re-encoded:

- ``episodes_from_taskset(taskset, episodes, shots)`` draws (or reads the cached) task
  descriptions of a ``Taskset``/``TaskDataset`` -- e.g. one of
  ``l2l.vision.benchmarks.get_tasksets(...)`` -- and turns them into an
  :class:`EpisodeList` over the task set's dataset (``labeled_data_from_taskset`` gives
  that dataset as ``LabeledData``), so ``evaluate_episodes`` scores them with any of our
  methods' features. Each episode's samples are grouped by label (first appearance
  order); within a class the first ``shots`` are the support, as in learn2learn's
  ProtoNet examples.
- ``taskset_from_episodes(episodes, dataset)`` builds a learn2learn ``Taskset`` whose task
  ``i`` is exactly our episode ``i``: samples class-major, support first, labels
  ``0..N-1`` in our way order. learn2learn code that sorts by label (a stable sort) and
  takes the first ``shots`` per class gets our support/query split.

learn2learn samples with Python's global ``random``; ``episodes_from_taskset(seed=...)``
seeds it for the draw and restores the previous state afterwards.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from protobench.datasets.base import LabeledData
from protobench.episodic.manifest import EpisodeList
from protobench.errors import UserError
from protobench.utils import sha256_tensor


def _l2l() -> Any:
    try:
        import learn2learn
    except ImportError as exc:  # pragma: no cover - the extra is installed by make install
        raise UserError("learn2learn is not installed; run `make install` (extra l2l)") from exc
    return learn2learn


def _meta(taskset: Any) -> Any:
    l2l = _l2l()
    meta = getattr(taskset, "dataset", taskset)
    if not isinstance(meta, l2l.data.MetaDataset):
        raise UserError("expected a learn2learn Taskset/TaskDataset or MetaDataset, got "
                        f"{type(taskset).__name__}")
    return meta


def _label_ids(meta: Any) -> tuple[dict[Any, int], tuple[str, ...]]:
    raw = sorted(meta.labels_to_indices)
    return {label: i for i, label in enumerate(raw)}, tuple(str(label) for label in raw)


def labeled_data_from_taskset(taskset: Any, name: str = "l2l", split: str = "test",
                              features: bool = True) -> LabeledData:
    """The task set's dataset as ``LabeledData``: sample ``i`` is ``dataset[i]``, class ids
    are the dataset's labels in sorted order. ``features=True`` loads every sample into one
    tensor (for feature or small image datasets); otherwise samples load lazily."""
    meta = _meta(taskset)
    ids, names = _label_ids(meta)
    n = len(meta)
    labels = torch.tensor([ids[meta.indices_to_labels[i]] for i in range(n)], dtype=torch.int64)
    x: torch.Tensor | _MetaSource = _MetaSource(meta)
    if features:
        x = x[torch.arange(n)]
    return LabeledData(x, labels, names, name, split)


class _MetaSource:
    """Lazy samples of a learn2learn MetaDataset (a protobench ``SampleSource``)."""

    def __init__(self, meta: Any) -> None:
        self.meta = meta

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.as_tensor(self.meta[int(i)][0]).float() for i in idx])


def episodes_from_taskset(taskset: Any, episodes: int, shots: int, seed: int | None = None,
                          data: LabeledData | None = None) -> EpisodeList:
    """``episodes`` task descriptions of ``taskset`` as an EpisodeList (support = first
    ``shots`` samples of each class). Cached descriptions (``num_tasks > 0``) are used in
    index order; ``num_tasks=-1`` task sets are sampled afresh, under ``seed`` if given."""
    meta = _meta(taskset)
    ids, names = _label_ids(meta)
    state = random.getstate()
    if seed is not None:
        random.seed(seed)
    try:
        finite = getattr(taskset, "num_tasks", -1) > 0
        if finite and episodes > taskset.num_tasks:
            raise UserError(f"the task set holds {taskset.num_tasks} tasks; ask for at most "
                            "that many episodes or build it with num_tasks=-1")
        descriptions = []
        for i in range(episodes):
            if finite:
                if i not in taskset.sampled_descriptions:
                    taskset.sampled_descriptions[i] = taskset.sample_task_description()
                descriptions.append(taskset.sampled_descriptions[i])
            else:
                descriptions.append(taskset.sample_task_description())
    finally:
        random.setstate(state)
    rows, classes = [], []
    for e, desc in enumerate(descriptions):
        by_class: dict[int, list[int]] = {}
        for dd in desc:
            by_class.setdefault(ids[meta.indices_to_labels[dd.index]], []).append(dd.index)
        sizes = {len(v) for v in by_class.values()}
        if len(sizes) != 1 or min(sizes) <= shots:
            raise UserError(f"task {e} is not an N-way episode with the same number (> shots="
                            f"{shots}) of samples per class: sizes {sorted(sizes)}; use "
                            "NWays + KShots(k=shots+queries) transforms")
        classes.append(list(by_class))
        rows.append(list(by_class.values()))
    indices = torch.tensor(rows, dtype=torch.int64)
    if data is None:
        labels = torch.tensor([ids[meta.indices_to_labels[i]] for i in range(len(meta))])
        checksum = sha256_tensor(labels)
    else:
        checksum = data.checksum
    name = data.name if data is not None else "l2l"
    split = data.split if data is not None else "test"
    return EpisodeList(indices, torch.tensor(classes, dtype=torch.int64), shots, name, split,
                       checksum, seed, names)


def taskset_from_episodes(episodes: EpisodeList, dataset: Any) -> Any:
    """A learn2learn ``Taskset`` over ``dataset`` (indexed like the episodes' split, items
    ``(x, y)``) whose task ``i`` is episode ``i``: ``X [N*(K+Q), ...]``, ``y`` in ``0..N-1``."""
    l2l = _l2l()
    meta = dataset if isinstance(dataset, l2l.data.MetaDataset) else l2l.data.MetaDataset(dataset)
    if len(meta) <= int(episodes.indices.max()):
        raise UserError(f"the episodes index sample {int(episodes.indices.max())} but the "
                        f"dataset has {len(meta)}; pass the split they were drawn from")
    taskset = l2l.data.Taskset(meta, task_transforms=[], num_tasks=episodes.episodes)

    def load(i: int) -> Any:
        return meta[i]

    def relabel(sample: Any, way: int) -> tuple[Any, int]:
        return sample[0], way

    for e, episode in enumerate(episodes.indices.tolist()):
        desc = []
        for way, samples in enumerate(episode):
            for i in samples:
                dd = l2l.data.DataDescription(i)
                dd.transforms.append(load)
                dd.transforms.append(lambda s, w=way: relabel(s, w))
                desc.append(dd)
        taskset.sampled_descriptions[e] = desc
    return taskset
