"""Regenerate the committed leaderboards (``make boards``) from the commands they report.

Every row of ``leaderboards/`` comes from one of the ``protobench`` commands of
:func:`plan`, run in order into a fresh store under ``--work`` (default ``runs/boards``,
git-ignored), the models they train saved next to it under descriptive names. When every
part ran, that store and its Markdown/CSV exports replace ``leaderboards/results.sqlite``
and ``leaderboards/*.md|csv``; a run of some parts (``--parts``) leaves them in
``--work/leaderboards`` (``--install`` installs them anyway).

The commands are ``make demo``'s (digits, each method with its digits preset), those of
``benchmarks.omniglot`` (held-out alphabets and Lake's runs, the 4000- and
3000-episode bf16 models) and ``benchmarks.geodesic`` (geodesic metrics on the
4000-episode model, with the ``m``, ``t`` and bandwidth it selected on meta-train
episodes), written out as CLI calls. Methods without a preset for Omniglot run the
cards' recipes (rows record ``preset: defaults``). The fp32 twins of the models and the
ProtoNets trained with each metric stay in the benchmarks' own result files
(``benchmarks/results/omniglot*.md``, ``geodesic.md``), not on the boards. The log of a
run (each command and its wall time) is recorded as ``--work/boards{,_quick}.{json,md}``.

    python -m benchmarks.boards --dry-run          # the commands and their cost, nothing run
    python -m benchmarks.boards --parts digits     # one part, into runs/boards only
    make boards                                    # everything: about 1 h on 2 CPU cores
"""

from __future__ import annotations

import argparse
import dataclasses
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
PARTS = ("digits", "omniglot-heldout", "omniglot-lake", "omniglot-geodesic")
CARD_TRAINING = ("--train-ways", "60", "--train-shots", "1", "--train-queries", "5")
LAKE_TRAIN = ("--train-dataset", "omniglot:all", "--train-option", "rotations=all")


@dataclass(frozen=True)
class Step:
    part: str
    argv: tuple[str, ...]  # a protobench command line, "protobench" first
    seconds: int  # rough cost on the 2-core CPU machine that measured the committed rows

    @property
    def shell(self) -> str:
        return shlex.join(self.argv)


def plan(work: Path, data_root: str) -> list[Step]:
    """Every command behind the committed boards, in the order they must run."""
    store = ("--store", str(work / "results.sqlite"))
    ck = work / "checkpoints"
    omniglot = ("protobench", "fewshot", "--dataset", "omniglot", "--data-root", data_root,
                "--method", "protonet")
    runs = ("protobench", "fewshot", "--dataset", "omniglot-runs", "--data-root", data_root,
            "--ways", "20", "--shots", "1")
    heldout = {"bf16": (4000, ("-p", "amp=true"), 1020)}
    lake = {"bf16": (3000, ("-p", "amp=true"), 870)}
    steps = [
        Step("digits", ("protobench", "fewshot", "--dataset", "digits", "--method", "protonet",
                        "--ways", "5", "--shots", "1", "--shots", "5", *store), 60),
        Step("digits", ("protobench", "fewshot", "--dataset", "digits", "--method", "ncm",
                        "--ways", "5", "--shots", "1", "--shots", "5", *store), 10),
    ]
    for kind, (n, amp, cost) in heldout.items():
        model = ck / f"omniglot_heldout_{n}steps_{kind}.pt"
        steps += [
            Step("omniglot-heldout", (*omniglot, "--ways", "5", "--shots", "1", "--shots", "5",
                                      "--train-steps", str(n), *CARD_TRAINING, *amp,
                                      "--save-checkpoint", str(model), *store), cost),
            Step("omniglot-heldout", (*omniglot, "--ways", "20", "--shots", "1",
                                      "--checkpoint", str(model), *store), 15),
        ]
    for kind, (n, amp, cost) in lake.items():
        for source in ("images_background_small1", "images_background_small2"):
            model = ck / f"lake_{source.removeprefix('images_background_')}_{n}steps_{kind}.pt"
            steps.append(Step("omniglot-lake", (
                *runs, "--method", "protonet", "--train-steps", str(n), *CARD_TRAINING, *amp,
                *LAKE_TRAIN, "--train-option", f"sources={source}",
                "--save-checkpoint", str(model), *store), cost))
    steps.append(Step("omniglot-lake", (  # NCM on the bf16 small1 model's features
        *runs, "--method", "ncm", "-p", f"checkpoint={ck / 'lake_small1_3000steps_bf16.pt'}",
        *LAKE_TRAIN, "--train-option", "sources=images_background_small1", *store), 15))
    model = ck / "omniglot_heldout_4000steps_bf16.pt"  # from omniglot-heldout
    chosen = ("--metric-option", "bandwidth=knn", "--metric-option", "m=128",
              "--metric-option", "t=1")  # benchmarks/geodesic.py's choice on meta-train
    for metric in (("--metric", "sqeuclidean"), ("--metric", "geodesic"),
                   ("--metric", "geodesic", "--metric-option", "pool=test"),
                   ("--metric", "geodesic", *chosen),
                   ("--metric", "geodesic", *chosen, "--metric-option", "pool=test")):
        steps.append(Step("omniglot-geodesic", (
            *omniglot, "--ways", "5", "--shots", "1", "--shots", "5", "--checkpoint",
            str(model), *metric, *store), 15))
    return steps


def quick_step(step: Step) -> Step:
    """A smoke version of ``step``: 2 training episodes, 20 test episodes."""
    argv = list(step.argv)
    if "--train-steps" in argv:
        argv[argv.index("--train-steps") + 1] = "2"
    elif "protonet" in argv and "--checkpoint" not in argv:  # trains its preset's length
        argv += ["--train-steps", "2"]
    argv += ["--episodes", "20"]
    return dataclasses.replace(step, argv=tuple(argv), seconds=5)


def _protobench() -> list[str]:
    exe = Path(sys.executable).with_name("protobench")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "protobench.cli"]


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def install(exports: Path, store: Path, out: Path) -> None:
    """Replace ``out``'s store and board files by the freshly built ones."""
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.md"), *out.glob("*.csv")]:
        old.unlink()
    for f in sorted(exports.iterdir()):
        shutil.copyfile(f, out / f.name)
    shutil.copyfile(store, out / "results.sqlite")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {PARTS}")
    ap.add_argument("--data-root", default="../shared/data/omniglot", help="Omniglot files")
    ap.add_argument("--work", type=Path, default=Path("runs/boards"),
                    help="fresh store, checkpoints, exports and the run's log (git-ignored)")
    ap.add_argument("--install", action="store_true", help="install even a partial run")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")


def run(args: argparse.Namespace, quick: bool) -> dict[str, Any] | None:
    """Run the plan's commands (``--quick``: 2 training and 20 test episodes each; never
    into the committed boards); the log of the run is the record."""
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise UsageError(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    complete = set(parts) == set(PARTS)
    to_install = (complete and not quick) or args.install
    if quick and to_install and args.out.resolve() == (ROOT / "leaderboards").resolve():
        raise UsageError("--quick boards never replace the committed ones; pass --out elsewhere")

    steps = [s for s in plan(args.work, args.data_root) if s.part in parts]
    steps = [quick_step(s) for s in steps] if quick else steps
    store, exports = args.work / "results.sqlite", args.work / "leaderboards"
    total = sum(s.seconds for s in steps)
    print(f"{len(steps)} commands into {store}, about {_minutes(total)} on 2 CPU cores"
          + (f"; then installed into {args.out}" if to_install else ""), flush=True)
    if args.dry_run:
        for s in steps:
            print(f"# {s.part}, ~{_minutes(s.seconds)}\n{s.shell}")
        return None

    store.unlink(missing_ok=True)  # a fresh store: no row of an earlier run survives
    shutil.rmtree(exports, ignore_errors=True)
    exe = _protobench()
    t0 = time.perf_counter()
    log = []
    for i, s in enumerate(steps, 1):
        print(f"[{i}/{len(steps)}] {s.part} (~{_minutes(s.seconds)}): {s.shell}", flush=True)
        t = time.perf_counter()
        rc = subprocess.run([*exe, *s.argv[1:]]).returncode
        if rc != 0:
            print(f"boards: command {i} failed (exit {rc}); nothing installed, rows so far in "
                  f"{store}", file=sys.stderr)
            raise SystemExit(rc)
        log.append({"part": s.part, "command": s.shell, "estimated_seconds": s.seconds,
                    "seconds": round(time.perf_counter() - t, 1)})
    rc = subprocess.run([*exe, "leaderboard", "export", "--store", str(store), "--out",
                         str(exports)]).returncode
    if rc != 0:
        raise SystemExit(rc)
    if to_install:
        install(exports, store, args.out)
        print(f"boards: {args.out} regenerated in {_minutes(time.perf_counter() - t0)}")
    else:
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
