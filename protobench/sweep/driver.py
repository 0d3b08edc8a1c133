"""The sweep driver: run a validated grid's cells on an executor, write their rows.

Workers run :func:`run_cell` (the cell's job through the one runner, ``write=False``) and
return plain record dicts; only the driver writes to the store, one transaction per cell
that also marks the cell done (:meth:`ResultStore.add_all` with a cell), so a killed
driver leaves every cell either fully written or absent. Re-running a grid skips its done
cells; ``resume`` continues an interrupted grid (a continual cell killed mid-stream goes
on from its last experience checkpoint, which gives exactly the uninterrupted run's
matrix; a cell with no checkpoint, e.g. one the grid gained, starts from scratch);
failed cells are recorded with their error and retried with ``retry_failed``.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from protobench.errors import UserError
from protobench.sweep.checks import job_config
from protobench.sweep.executors import Executor
from protobench.sweep.grid import CellSpec, Grid
from protobench.tasks.base import TASKS, run, runs_root
from protobench.tasks.continual_run import CHECKPOINT
from protobench.tasks.provenance import now_utc
from protobench.tasks.record import ResultRecord
from protobench.tasks.store import Cell, CellDone, ResultStore


@dataclass
class CellOutcome:
    key: str
    records: list[dict[str, Any]]
    seconds: float
    error: str = ""


def cell_run_dir(cell: CellSpec) -> Path:
    return runs_root() / "sweep" / cell.grid / cell.key[:16]


def run_cell(cell: CellSpec, resume: bool = False) -> CellOutcome:
    """Run one cell in this process (a worker); never writes the store."""
    task = TASKS[cell.task]
    run_dir = cell_run_dir(cell)
    extra: dict[str, Any] = {"run_dir": str(run_dir)}
    if cell.task == "continual":  # a cell that never started (e.g. new in the grid) starts
        extra["resume"] = resume and any(run_dir.rglob(CHECKPOINT))
    cfg = job_config(task, cell.config, **extra)
    t0 = time.perf_counter()
    job = run(task, cfg, write=False)
    records = [replace(r, config={**r.config, "sweep": {"grid": cell.grid, "cell": cell.key,
                                                        "label": cell.label}}).to_dict()
               for r in job.records]
    return CellOutcome(cell.key, records, time.perf_counter() - t0)


def _resume_cell(cell: CellSpec) -> CellOutcome:
    return run_cell(cell, resume=True)


@dataclass
class SweepSummary:
    grid: str
    total: int
    skipped: int
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    row_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0
    cell_seconds: dict[str, float] = field(default_factory=dict)


def pending(grid: Grid, store: ResultStore, retry_failed: bool) -> tuple[list[CellSpec], int]:
    """The cells still to run and how many are skipped (done, or failed without retry)."""
    status = {k: v["status"] for k, v in store.cells(grid.name).items()}
    todo = [c for c in grid.cells if status.get(c.key) != "done"
            and (retry_failed or status.get(c.key) != "failed")]
    return todo, len(grid.cells) - len(todo)


def run_sweep(grid: Grid, store: str | Path, executor: Executor, *, resume: bool = False,
              retry_failed: bool = False,
              on_event: Callable[[str, CellSpec, CellOutcome | None], None] | None = None,
              ) -> SweepSummary:
    """Run the grid's pending cells on ``executor``; see the module docstring.
    ``on_event(kind, cell, outcome)`` is called with ``start`` (all pending cells, once,
    before any finishes), ``done`` and ``failed``."""
    rs = ResultStore(store)
    known = rs.cells(grid.name)
    if resume and not known:
        raise UserError(f"nothing to resume: {store} has no cell of grid {grid.name}; run "
                        "the grid without --resume")
    todo, skipped = pending(grid, rs, retry_failed)
    summary = SweepSummary(grid.name, len(grid.cells), skipped)
    t0 = time.perf_counter()
    for cell in todo:
        if on_event:
            on_event("start", cell, None)
    fn = _resume_cell if resume else run_cell
    for i, result in executor.run(fn, todo):
        cell = todo[i]
        marker = Cell(cell.key, grid.name, 0.0, now_utc())
        if isinstance(result, BaseException):
            text = "".join(traceback.format_exception_only(type(result), result)).strip()
            rs.fail_cell(marker, text)
            summary.failed[cell.key] = text
            if on_event:
                on_event("failed", cell, CellOutcome(cell.key, [], 0.0, text))
            continue
        records = [ResultRecord.from_dict(d) for d in result.records]
        try:
            ids = rs.add_all(records, replace(marker, seconds=result.seconds))
        except CellDone:  # another driver finished it meanwhile: nothing written twice
            ids = []
        summary.done.append(cell.key)
        summary.row_ids.extend(ids)
        summary.cell_seconds[cell.key] = result.seconds
        if on_event:
            on_event("done", cell, result)
    summary.seconds = time.perf_counter() - t0
    return summary
