"""`protobench sweep` on a 42-cell digits grid: wall time per executor, overhead per cell.

The grid is ``benchmarks/grids/digits-sweep-fewshot.yaml`` (5 few-shot variants x 2 shots
x 3 seeds) + ``digits-sweep-continual.yaml`` (4 continual methods x 3 seeds). Each
executor runs the whole grid into a fresh store: ``local -j 1``, ``local -j 2`` and
``ray`` with 2 workers (a local Ray cluster started by the run; its start-up is included).
Every executor must write the same rows (cell keys and primary metrics are compared).

Overhead per cell: (driver wall time - sum of the cells' own job time) / cells, for
``-j 1``, and against the CLI: a few cells are also run as the equivalent
``protobench fewshot`` / ``protobench continual`` command (a fresh process, as a user types
it) and timed against the same cell's in-sweep time.

    python -m benchmarks.sweep_scaling            # the acceptance grid
    python -m benchmarks.sweep_scaling --quick    # 2 few-shot cells, local only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._harness import Benchmark, main
from protobench.sweep import load_grid, make_executor, run_sweep, validate
from protobench.sweep.executors import usable_cpus
from protobench.tasks import ResultStore

ROOT = Path(__file__).resolve().parents[1]
GRIDS = ("digits-sweep-fewshot.yaml", "digits-sweep-continual.yaml")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--executors", default="local-1,local-2,ray-2",
                    help="comma list of KIND-JOBS")
    ap.add_argument("--cli-cells", type=int, default=4, help="cells also timed at the CLI")


def grids(quick: bool, folder: Path) -> list[Any]:
    out = []
    for name in GRIDS:
        grid = validate(load_grid(ROOT / "benchmarks" / "grids" / name))
        if quick:
            if grid.task != "fewshot":
                continue
            grid.cells = [c for c in grid.cells if c.label == "ncm" and c.config["seed"] == 0]
        out.append(grid)
    return out


def sweep(kind: str, jobs: int, gs: list[Any], store: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    ex = make_executor(kind, jobs)
    try:
        summaries = [run_sweep(g, store, ex) for g in gs]
    finally:
        ex.close()
    wall = time.perf_counter() - t0
    cell_s = sum(sum(s.cell_seconds.values()) for s in summaries)
    cells = sum(len(s.done) for s in summaries)
    failed = sum(len(s.failed) for s in summaries)
    rows = {r.config["sweep"]["cell"]: r.primary.value for r in ResultStore(store).records()}
    threads = torch.get_num_threads() if jobs == 1 else max(1, usable_cpus() // jobs)
    return {"executor": f"{kind} -j {jobs}", "threads": threads, "cells": cells,
            "failed": failed,
            "wall_s": round(wall, 2), "cells_compute_s": round(cell_s, 2),
            "overhead_per_cell_s": round((wall - cell_s) / max(cells, 1), 3)
            if jobs == 1 else None, "rows": rows,
            "cell_seconds": {k: v for s in summaries for k, v in s.cell_seconds.items()}}


def cli_argv(cell: Any) -> list[str]:
    c = cell.config
    argv = [sys.executable, "-m", "protobench.cli", cell.task, "--dataset", c["dataset"],
            "--method", c["method"], "--seed", str(c["seed"]), "--no-progress"]
    for k, v in (c.get("method_params") or {}).items():
        argv += ["-p", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
    if cell.task == "fewshot":
        argv += ["--ways", str(c["ways"]), "--shots", str(c["shots"][0]), "--queries",
                 str(c["queries"]), "--episodes", str(c["episodes"])]
    else:
        argv += ["--experiences", str(c["experiences"]), "--epochs", str(c["epochs"])]
    return argv


def cli_times(gs: list[Any], n: int, in_sweep: dict[str, float], folder: Path
              ) -> list[dict[str, Any]]:
    picked = []
    for g in gs:  # seed-1 cells of each grid (not a grid's first cell: no warm-up inside)
        picked += [c for c in g.cells if c.config["seed"] == 1][: max(1, n // len(gs))]
    out = []
    for i, cell in enumerate(picked):
        store = folder / f"cli{i}.sqlite"
        argv = [*cli_argv(cell), "--store", str(store)]
        if cell.task == "continual":
            argv += ["--run-dir", str(folder / f"cli-run{i}")]
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, cwd=folder)
        seconds = time.perf_counter() - t0
        (row,) = ResultStore(store).records()
        out.append({"cell": cell.describe(), "cli_s": round(seconds, 2),
                    "sweep_cell_s": round(in_sweep[cell.key], 2),
                    "same_primary": row.primary.value == in_sweep.get(cell.key + ":value"),
                    "overhead_vs_cli": round(in_sweep[cell.key] / seconds - 1, 3)})
    return out


def run(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["PROTOBENCH_RUNS"] = str(folder / "runs")  # workers inherit it
        gs = grids(quick, folder)
        kinds = ["local-1"] if quick else args.executors.split(",")
        results = []
        for spec in kinds:
            kind, jobs = spec.rsplit("-", 1)
            results.append(sweep(kind, int(jobs), gs, folder / f"{spec}.sqlite"))
        base = results[0]
        labels = {c.key: c.label for g in gs for c in g.cells}
        for r in results[1:]:
            r["same_rows_as_first"] = r["rows"] == base["rows"]
            diff = {k: abs(v - base["rows"][k]) for k, v in r["rows"].items()
                    if v != base["rows"].get(k)}
            r["cells_differing_from_first"] = len(diff)
            r["max_abs_diff_vs_first"] = max(diff.values(), default=0.0)
            r["methods_differing"] = sorted({labels[k] for k in diff})
        per_cell = base["overhead_per_cell_s"] or 0.0  # the -j 1 driver's own time per cell
        timing = {**{k: v + per_cell for k, v in base["cell_seconds"].items()},
                  **{k + ":value": v for k, v in base["rows"].items()}}
        cli = cli_times(gs, 1 if quick else args.cli_cells, timing, folder)
        for r in results:
            r.pop("rows")
            r.pop("cell_seconds")
        return {"cells": sum(len(g.cells) for g in gs), "executors": results, "cli": cli}


def markdown(out: dict[str, Any]) -> str:
    lines = ["# protobench sweep: a digits grid", "",
             f"{out['cells']} cells (few-shot: 5 variants x 2 shots x 3 seeds; continual: 4 "
             "methods x 3 seeds, 10 epochs per experience); each executor writes a fresh "
             "store.", "",
             "| executor | torch threads per cell | cells | failed | wall s | cells' own s "
             "| driver overhead / cell s | rows differing from `-j 1` (max abs diff) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in out["executors"]:
        oh = "" if r["overhead_per_cell_s"] is None else f"{r['overhead_per_cell_s']:.3f}"
        differ = "-" if "cells_differing_from_first" not in r else (
            f"{r['cells_differing_from_first']} ({r['max_abs_diff_vs_first']:.4f}; "
            f"{', '.join(r['methods_differing']) or 'none'})")
        lines.append(f"| {r['executor']} | {r['threads']} | {r['cells']} | {r['failed']} "
                     f"| {r['wall_s']} | {r['cells_compute_s']} | {oh} | {differ} |")
    lines += ["", "Cells against the equivalent CLI command (a fresh process):", "",
              "| cell | CLI s | in sweep s (job + driver share) | in sweep / CLI - 1 "
              "| same accuracy |",
              "|---|---|---|---|---|"]
    for c in out["cli"]:
        lines.append(f"| {c['cell']} | {c['cli_s']} | {c['sweep_cell_s']} "
                     f"| {100 * c['overhead_vs_cli']:+.1f}% | {c['same_primary']} |")
    return "\n".join(lines) + "\n"


BENCHMARK = Benchmark("sweep_scaling", __doc__, run, markdown, add_arguments)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
