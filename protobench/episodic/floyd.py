"""Floyd's slots of the sampler, compiled (numba): the same draws, the same positions.

:func:`protobench.episodic.sampler._floyd` draws ``u [R, m]`` (float64) from the chunk's
generator and, for slot ``i`` of row ``r``, takes ``t = min(floor(u * (j + 1)), j)`` with
``j = n_r - m + i``, or ``j`` when ``t`` is already among the row's first ``i`` slots.
Vectorised over rows in torch, that is ``m`` passes of small tensor ops per chunk, each
comparing with every earlier slot; here it is one compiled pass over the rows, with the
same float64 product and truncation, so the positions are bit-identical (tested against
the torch loop). The random order of the slots (torch's ``argsort`` of ``m`` float32 keys
per row) is compiled (each slot placed at its key's rank) where the keys are distinct,
torch's own where a row has a repeated key.
"""

from __future__ import annotations

import numba
import numpy as np
import torch


def shuffle_slots(slots: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``slots.gather(1, keys.argsort(dim=1))``, the sampler's random order. A row of distinct
    keys has one sorted order, computed here; a row with a repeated key (about one row in
    10^5 for 20 float32 draws) takes torch's argsort, whose tie order is its own, row by row
    (the order of a row does not depend on the rows sorted with it: tested)."""
    out = np.empty(tuple(slots.shape), dtype=np.int64)
    tied = np.zeros(len(slots), dtype=np.bool_)
    _shuffle(slots.contiguous().numpy(), keys.contiguous().numpy(), out, tied)
    result = torch.from_numpy(out)
    if tied.any():
        rows = torch.from_numpy(np.flatnonzero(tied))
        result[rows] = slots[rows].gather(1, keys[rows].argsort(dim=1))
    return result


def floyd_slots(n: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``n [R]`` class sizes, ``u [R, m]`` float64 draws -> ``[R, m]`` distinct positions."""
    out = np.empty(tuple(u.shape), dtype=np.int64)
    _slots(n.contiguous().numpy(), u.contiguous().numpy(), out)
    return torch.from_numpy(out)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _slots(n, u, out):  # pragma: no cover - compiled by numba
    rows, m = u.shape
    for r in range(rows):
        for i in range(m):
            j = n[r] - m + i
            t = min(np.int64(u[r, i] * (j + 1)), j)
            for k in range(i):
                if out[r, k] == t:
                    t = j
                    break
            out[r, i] = t


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _shuffle(slots, keys, out, tied):  # pragma: no cover - compiled by numba
    rows, m = keys.shape
    for r in range(rows):
        for i in range(m):  # slot i goes where its key ranks: branch-free counts
            v = keys[r, i]
            below = 0
            same = 0
            for j in range(m):
                below += keys[r, j] < v
                same += keys[r, j] == v
            out[r, below] = slots[r, i]
            if same > 1:
                tied[r] = True
