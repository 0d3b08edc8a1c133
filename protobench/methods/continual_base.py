"""Training helpers shared by the continual methods: batches, shapes, the no-data check,
the training-speed options.

The protocol itself is :class:`protobench.methods.protocols.ContinualMethod`.

Speed options: every continual method takes ``amp`` (bfloat16 autocast of the encoder's
forward, output float32), ``compile`` (``torch.compile``) and ``channels_last``, stored by
:func:`~protobench.backbones.speed_options` (off = ``None``, left out of a row's identity
and so of every existing row's), and trains its encoder through
``with speed_up(encoder, TrainSpeed.of(self)) as fast:`` (:mod:`protobench.backbones`).
Teachers, class statistics and predictions run the plain float32 encoder.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from protobench.backbones import (  # noqa: F401  (re-exported)
    SPEED_OPTIONS,
    TrainSpeed,
    speed_options,
    speed_up,
)
from protobench.methods.protocols import (  # noqa: F401  (re-exported)
    ContinualMethod,
    ExperienceInfo,
    Inputs,
    seeded_encoder,
)


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
