"""Regenerate the committed leaderboards (``make boards``) from the committed grids.

Every row of ``leaderboards/`` is a cell of one of the grids of :data:`PARTS`
(``benchmarks/grids/*.yaml``), run in order with ``protobench sweep GRID --store
WORK/results.sqlite`` into a fresh store under ``--work`` (default ``runs/boards``,
git-ignored). When every part ran, that store and its Markdown/CSV exports replace
``leaderboards/results.sqlite`` and ``leaderboards/*.md|csv``, and the static site of the
installed store is rebuilt in ``leaderboards/site/`` (``protobench leaderboard site``); a
run of some parts (``--parts``) leaves them and their site in ``--work/leaderboards``
(``--install`` installs them anyway). Anyone can regenerate one board by hand with the same
``protobench sweep`` line (``--dry-run`` prints them).

The parts: the Omniglot ProtoNets (``boards-omniglot-train``: the held-out model and
Lake's small1/small2 models, saved under ``{runs}/boards/checkpoints/`` with names that say
what they are), the grid that evaluates them (``boards-omniglot-eval``: 20-way, NCM on the
small1 features, the geodesic metrics with the settings ``benchmarks.geodesic`` chose on
meta-train episodes), NCM and the transductive BD-CSPN and soft k-means on the held-out
model's features (``boards-omniglot-transductive``), continual Omniglot (the test half
of the characters), then the digits demo's few-shot grid and the continual and OOD
digits grids. The fp32 twins of the
models and the ProtoNets trained with each metric stay in the benchmarks' own result
files. Omniglot is read from ``--data`` (``$PROTOBENCH_DATA``; default
``../shared/data``). The log of a run (each command and its wall time) is recorded as
``--work/boards{,_quick}.{json,md}``; a ``--quick`` run (20 test episodes, 2 training
episodes, 1 epoch) keeps its models under ``--work/runs``.

    python -m benchmarks.boards --dry-run          # the commands and their cost, nothing run
    python -m benchmarks.boards --parts continual-digits   # one part, into runs/boards only
    make boards                                    # everything: about 3 h on 2 CPU cores
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._harness import Benchmark, UsageError, main

ROOT = Path(__file__).resolve().parents[1]
GRIDS = Path("benchmarks") / "grids"
FEWSHOT_QUICK = ("episodes=20", "train_steps=2")
EPOCHS_QUICK = ("epochs=1",)


@dataclass(frozen=True)
class Step:
    part: str
    grid: str  # a grid file under benchmarks/grids/
    seconds: int  # rough cost on the 2-core CPU machine that measured the committed rows
    quick: tuple[str, ...] = ()  # the --set overrides of a --quick run
    argv: tuple[str, ...] = ()  # the protobench command line, "protobench" first

    @property
    def shell(self) -> str:
        return shlex.join(self.argv)


PARTS = (  # the long Omniglot training first: an interrupted run is then mostly resumable
    Step("omniglot-train", "boards-omniglot-train.yaml", 1200, FEWSHOT_QUICK),
    Step("omniglot-eval", "boards-omniglot-eval.yaml", 150, ("episodes=20",)),
    Step("omniglot-transductive", "boards-omniglot-transductive.yaml", 240, ("episodes=20",)),
    Step("omniglot-lake", "boards-omniglot-lake.yaml", 1700, FEWSHOT_QUICK),
    Step("omniglot-lake-eval", "boards-omniglot-lake-eval.yaml", 20, ("episodes=20",)),
    Step("continual-omniglot", "boards-continual-omniglot.yaml", 5400, EPOCHS_QUICK),
    Step("digits-fewshot", "digits-demo-fewshot.yaml", 120, FEWSHOT_QUICK),
    Step("continual-digits", "boards-continual-digits.yaml", 900, EPOCHS_QUICK),
    Step("ood-digits", "boards-ood-digits.yaml", 300, EPOCHS_QUICK),
)
PART_NAMES = tuple(s.part for s in PARTS)


def plan(work: Path, quick: bool = False, jobs: int = 1) -> list[Step]:
    """Every command behind the committed boards, in the order they must run."""
    steps = []
    for s in PARTS:
        argv = ("protobench", "sweep", str(GRIDS / s.grid), "--store",
                str(work / "results.sqlite"), "-j", str(jobs))
        if quick:
            argv += tuple(a for item in s.quick for a in ("--set", item))
        steps.append(dataclasses.replace(s, argv=argv, seconds=5 if quick else s.seconds))
    return steps


def _protobench() -> list[str]:
    exe = Path(sys.executable).with_name("protobench")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "protobench.cli"]


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _continue(step: Step, store: Path, resume: bool) -> list[str]:
    """A fresh run clears the grid's run folders (a killed earlier run's continual
    checkpoints must not block or leak into it); ``--resume`` continues the grid's cells
    from theirs and retries failed cells, once the store knows the grid, after dropping
    the cells (and rows) the grid no longer has: a grid that gained methods or whose
    presets changed reruns just what changed."""
    from protobench.sweep import load_grid
    from protobench.tasks.base import runs_root
    from protobench.tasks.store import ResultStore

    if not resume:
        name = load_grid(ROOT / step.argv[2]).name
        shutil.rmtree(runs_root() / "sweep" / name, ignore_errors=True)
        return []
    rs, grid = ResultStore(store), _grid(step)
    have = rs.cells(grid.name)
    stale = sorted(set(have) - {c.key for c in grid.cells})
    if stale:
        rows = rs.drop_cells(stale)
        print(f"{grid.name}: dropped {len(stale)} stale cell(s) and their {rows} row(s)",
              flush=True)
    return ["--resume", "--retry-failed"] if rs.cells(grid.name) else []


def _grid(step: Step) -> Any:
    """The validated grid a step runs, with the step's ``--set`` overrides."""
    from protobench.cli import parse_options
    from protobench.sweep import load_grid, validate

    sets = [step.argv[i + 1] for i, a in enumerate(step.argv) if a == "--set"]
    return validate(load_grid(ROOT / step.argv[2], overrides=parse_options(sets, "--set")))


def check_store(store: Path, steps: list[Step]) -> None:
    """Every row of ``store`` belongs to a done cell of the grids just run, under the key
    those grids give it now, and each of their cells is done: nothing stale, nothing
    missing."""
    from protobench.tasks.store import ResultStore

    rs = ResultStore(store)
    expected: dict[str, set[str]] = {}
    for s in steps:
        grid = _grid(s)
        expected[grid.name] = {c.key for c in grid.cells}
    problems = []
    for name, keys in expected.items():
        done = {k for k, v in rs.cells(name).items() if v["status"] == "done"}
        if done != keys:
            problems.append(f"grid {name}: {len(keys - done)} cell(s) missing, "
                            f"{len(done - keys)} stale")
    for r in rs.records():
        cell = (r.config.get("sweep") or {}).get("cell")
        if cell not in expected.get((r.config.get("sweep") or {}).get("grid"), set()):
            problems.append(f"row {r.id} ({r.board} {r.method}) is not a cell of these grids")
    if problems:
        raise SystemExit("boards: nothing installed; " + "; ".join(problems[:10])
                         + " (run without --resume for a fresh store)")


def install(exports: Path, store: Path, out: Path) -> None:
    """Replace ``out``'s store and board files by the freshly built ones."""
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.md"), *out.glob("*.csv")]:
        old.unlink()
    for f in sorted(exports.iterdir()):
        if f.is_file():
            shutil.copyfile(f, out / f.name)
    shutil.copyfile(store, out / "results.sqlite")


def site(exe: list[str], store: Path, out: Path) -> None:
    """The static site of ``store`` (``protobench leaderboard site``) into ``out``."""
    rc = subprocess.run([*exe, "leaderboard", "site", "--store", str(store), "--out",
                         str(out)]).returncode
    if rc != 0:
        raise SystemExit(rc)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--parts", default=",".join(PART_NAMES),
                    help=f"comma-separated: {', '.join(PART_NAMES)}")
    ap.add_argument("--data", default=os.environ.get("PROTOBENCH_DATA", "../shared/data"),
                    help="data root holding omniglot/ ($PROTOBENCH_DATA)")
    ap.add_argument("-j", "--jobs", type=int, default=1,
                    help="sweep workers (1: one process with every core's threads, as "
                         "the committed rows were measured)")
    ap.add_argument("--work", type=Path, default=Path("runs/boards"),
                    help="fresh store, checkpoints, exports and the run's log (git-ignored)")
    ap.add_argument("--install", action="store_true", help="install even a partial run")
    ap.add_argument("--resume", action="store_true",
                    help="keep --work's store and run only the cells it lacks (an "
                         "interrupted or extended regeneration); stale rows are refused")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")


def run(args: argparse.Namespace, quick: bool) -> dict[str, Any] | None:
    """Run the plan's commands (``--quick``: 2 training and 20 test episodes each; never
    into the committed boards); the log of the run is the record."""
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PART_NAMES))
    if unknown:
        raise UsageError(f"unknown part(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(PART_NAMES)}")
    complete = set(parts) == set(PART_NAMES)
    to_install = (complete and not quick) or args.install
    if quick and to_install and args.out.resolve() == (ROOT / "leaderboards").resolve():
        raise UsageError("--quick boards never replace the committed ones; pass --out elsewhere")

    steps = [s for s in plan(args.work, quick, args.jobs) if s.part in parts]
    store, exports = args.work / "results.sqlite", args.work / "leaderboards"
    total = sum(s.seconds for s in steps)
    print(f"{len(steps)} commands into {store}, about {_minutes(total)} on 2 CPU cores"
          + (f"; then installed into {args.out}" if to_install else ""), flush=True)
    if args.dry_run:
        for s in steps:
            print(f"# {s.part}, ~{_minutes(s.seconds)}\n{s.shell}")
        return None

    if not args.resume:
        store.unlink(missing_ok=True)  # a fresh store: no row of an earlier run survives
    shutil.rmtree(exports, ignore_errors=True)
    exe = _protobench()
    os.environ["PROTOBENCH_DATA"] = str(Path(args.data).resolve())
    if quick:  # smoke models never replace the real ones under runs/boards/checkpoints
        os.environ["PROTOBENCH_RUNS"] = str((args.work / "runs").resolve())
    env = dict(os.environ)
    t0 = time.perf_counter()
    log = []
    for i, s in enumerate(steps, 1):
        print(f"[{i}/{len(steps)}] {s.part} (~{_minutes(s.seconds)}): {s.shell}", flush=True)
        t = time.perf_counter()
        grid = str(ROOT / s.argv[2])  # the grid files live in this checkout, wherever the cwd
        rc = subprocess.run([*exe, s.argv[1], grid, *s.argv[3:], *_continue(s, store,
                                                                      args.resume)],
                            env=env).returncode
        if rc != 0:
            print(f"boards: command {i} failed (exit {rc}); nothing installed, rows so far in "
                  f"{store}", file=sys.stderr)
            raise SystemExit(rc)
        log.append({"part": s.part, "command": s.shell, "estimated_seconds": s.seconds,
                    "seconds": round(time.perf_counter() - t, 1)})
    check_store(store, steps)
    rc = subprocess.run([*exe, "leaderboard", "export", "--store", str(store), "--out",
                         str(exports)]).returncode
    if rc != 0:
        raise SystemExit(rc)
    if to_install:
        install(exports, store, args.out)
        site(exe, args.out / "results.sqlite", args.out / "site")  # names the installed store
        print(f"boards: {args.out} regenerated in {_minutes(time.perf_counter() - t0)}")
    else:
        site(exe, store, exports / "site")
        why = "a --quick run" if quick else "a partial run"
        print(f"boards: {why}, not installed; boards in {exports}")
    return {"parts": parts, "store": str(store), "exports": str(exports),
            "installed_into": str(args.out) if to_install else None,
            "total_seconds": round(time.perf_counter() - t0, 1), "steps": log}


def markdown(out: dict[str, Any]) -> str:
    where = (f"installed into `{out['installed_into']}`" if out["installed_into"]
             else f"not installed; boards in `{out['exports']}`")
    lines = ["# Boards regenerated", "",
             f"Parts {', '.join(out['parts'])} into `{out['store']}`, {where}; "
             f"{_minutes(out['total_seconds'])} in all.", "",
             "| part | command | estimated | seconds |", "|---|---|---|---|"]
    lines += [f"| {s['part']} | `{s['command']}` | {_minutes(s['estimated_seconds'])} "
              f"| {s['seconds']:.0f} |" for s in out["steps"]]
    return "\n".join(lines) + "\n"


BENCHMARK = Benchmark("boards", __doc__, run, markdown, add_arguments, out=Path("leaderboards"),
                      out_help="committed boards", records_in=lambda args: args.work)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
