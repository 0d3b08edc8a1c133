"""The continual method protocol: ``train_experience``, ``predict``, ``state_dict``.

A continual method sees a class-incremental stream one experience at a time, as tensors:
``x`` ``[n, ...]`` (a tensor, or a lazy source indexed by an index tensor, e.g. image
files) and ``y`` ``[n]`` int64 labels. Labels are stream labels: the classes of
experience ``t`` are the contiguous range ``info.classes``, after the
``info.num_old`` classes of the earlier experiences, so a method grows its output by
appending classes. It never receives a dataset or the stream itself, and must not keep
samples or per-sample features of a finished experience (``keeps_data = False``); only
the reference upper bound ``joint`` declares ``keeps_data = True``.

``predict(x)`` returns scores ``[B, num_seen]`` for every class seen so far (higher is
more likely). The run loop takes the argmax over all of them (class-incremental) or over
the classes of the sample's own experience (task-incremental).

``state_dict()`` holds everything needed to continue the stream exactly after a
checkpoint (networks, class vectors, optimiser state carried across experiences, ...);
``load_state_dict`` restores it into a freshly built method. The run loop seeds the
global torch generator with ``info.seed`` before each experience; a method that draws
random numbers should use it (or ``torch.Generator().manual_seed(info.seed)``) so that
any experience can be replayed alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from protobench.backbones import build_backbone, default_backbone
from protobench.datasets.base import SampleSource
from protobench.errors import check_input_shape
from protobench.methods.base import Method

Inputs = torch.Tensor | SampleSource
"""Samples of an experience: an in-memory tensor ``[n, ...]`` or a lazy source."""


@dataclass(frozen=True)
class ExperienceInfo:
    """What a method may know about the experience it trains on (no data)."""

    index: int
    """Position of the experience in the stream, from 0."""
    classes: tuple[int, ...]
    """Stream labels of the experience's new classes (a contiguous range)."""
    num_experiences: int
    seed: int
    """Seed of this experience (the run loop has already seeded torch with it)."""

    @property
    def num_old(self) -> int:
        """Classes of the earlier experiences (labels ``0..num_old-1``)."""
        return self.classes[0] if self.classes else 0

    @property
    def num_seen(self) -> int:
        """Classes seen once this experience is learned (labels ``0..num_seen-1``)."""
        return self.num_old + len(self.classes)

    @property
    def task_label(self) -> int:
        """Task id of the experience in the task-incremental view."""
        return self.index


class ContinualMethod(Method, ABC):
    """Base class of class-/task-incremental methods (see the module docstring)."""

    tasks = frozenset({"class-incremental", "task-incremental"})
    metrics = ()
    trainable = True
    keeps_data: ClassVar[bool] = False

    @abstractmethod
    def train_experience(self, x: Inputs, y: torch.Tensor, info: ExperienceInfo,
                         device: torch.device, progress: bool = True) -> dict[str, Any]:
        """Learn experience ``info`` from ``x`` ``[n, ...]``, ``y`` ``[n]``; returns statistics."""

    @abstractmethod
    def predict(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Scores ``[B, num_seen]`` (CPU, float) of a batch ``x`` ``[B, ...]``; eval mode."""

    @torch.no_grad()
    def features(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Penultimate features ``[B, D]`` (CPU, float) of a batch ``x`` ``[B, ...]``: the
        output of the method's ``encoder`` in eval mode (what open-world OOD scores use).
        A method without an ``encoder`` attribute overrides this."""
        encoder = getattr(self, "encoder", None)
        if not isinstance(encoder, torch.nn.Module):
            raise RuntimeError(f"{self.name} has no encoder yet (train an experience first) "
                               "or must override features()")
        encoder.to(device).eval()
        return encoder(x.to(device)).float().cpu()

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the stream after a checkpoint."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into a method built with the same parameters."""

    def _new_encoder(self, in_shape: tuple[int, ...]) -> bool:
        """Build the seeded encoder (``self.backbone``, ``self.seed``) for ``in_shape`` unless
        one exists; True when it was built (the caller then resets what depends on it:
        heads, prototypes, optimiser). An existing encoder built for another shape is an
        error (:func:`~protobench.errors.check_input_shape`), never replaced."""
        current = getattr(self, "encoder", None)
        if current is not None:  # trained or restored: never swapped for a fresh one
            check_input_shape(self.name, getattr(self, "in_shape", None), in_shape)
            return False
        self.in_shape = tuple(in_shape)
        self.backbone_name, self.encoder = seeded_encoder(
            self.backbone, self.in_shape, self.seed)  # type: ignore[attr-defined]
        return True


def input_shape(x: Inputs) -> tuple[int, ...]:
    """The shape of one sample of ``x``."""
    return tuple(x[torch.tensor([0])].shape[1:])


def iterate_batches(x: Inputs, y: torch.Tensor, batch_size: int, generator: torch.Generator,
                    shuffle: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches ``([B, ...], [B])`` over ``x, y`` in an order drawn from ``generator``.

    The last batch may be smaller. A lazy source is read batch by batch.
    """
    n = len(y)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if isinstance(x, torch.Tensor):
        order = order.to(x.device)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


def seeded_encoder(backbone: str, in_shape: tuple[int, ...], seed: int
                   ) -> tuple[str, torch.nn.Module]:
    """``(resolved backbone name, encoder)``: ``"auto"`` picks the default for ``in_shape``;
    torch is seeded first, so every run of a seed starts from the same weights."""
    torch.manual_seed(seed)
    name = default_backbone(in_shape) if backbone == "auto" else backbone
    return name, build_backbone(name, in_shape)


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def holds_rows(state: Any, rows: torch.Tensor, atol: float = 1e-6) -> bool:
    """True when any tensor in ``state`` (nested dicts, lists, tuples) contains a row of ``rows``.

    The check that a method keeps no training sample (``rows`` = the samples ``[n, ...]``)
    nor per-sample feature (``rows`` = their features ``[n, D]``): every tensor whose size
    is a multiple of a row's size is cut into rows and compared with each of ``rows``.
    """
    flat = rows.reshape(len(rows), -1).float().cpu()
    width = flat.shape[1]

    def visit(obj: Any) -> bool:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().float().cpu()
            if not t.numel() or t.numel() % width:
                return False
            d = torch.cdist(t.reshape(-1, width), flat,
                            compute_mode="donot_use_mm_for_euclid_dist")
            return bool(d.min() <= atol)
        if isinstance(obj, dict):
            return any(visit(v) for v in obj.values())
        if isinstance(obj, list | tuple):
            return any(visit(v) for v in obj)
        return False

    return visit(state)
