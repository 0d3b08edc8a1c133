"""Sweeps: grids of cells (methods x datasets x settings x seeds) run by one driver on a
local, Ray or SLURM executor; only the driver writes the store.

Names are exported lazily (PEP 562): a worker that unpickles
:mod:`protobench.sweep.executors` does not import the driver (and torch) before its
thread cap is set.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"load_grid": "grid", "cell_key": "grid", "CellSpec": "grid", "Grid": "grid",
            "validate": "checks", "make_executor": "executors", "pending": "driver",
            "run_sweep": "driver", "run_cell": "driver", "SweepSummary": "driver"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
