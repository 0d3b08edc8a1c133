"""Paired comparisons on the committed Omniglot boards: ProtoNet vs NCM on Lake's 20 runs,
euclidean vs geodesic on the held-out 5-way episodes.

The committed rows predate per-episode accuracies, so this re-evaluates their trained
models (``runs/boards/checkpoints/``, written by ``make boards``) with exactly the committed
commands of ``benchmarks/boards.py`` (a training command becomes ``--checkpoint`` of the
model it saved), into a fresh store that keeps each episode's accuracy; every re-evaluated
row must equal its committed row's accuracy exactly, then ``protobench compare`` pairs them
episode by episode.

    python -m benchmarks.omniglot_compare --data-root ../shared/data/omniglot
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._harness import Benchmark, UsageError, main
from protobench.leaderboard.compare import compare_board
from protobench.tasks import ResultStore

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "leaderboards" / "results.sqlite"
CHECKPOINTS = ROOT / "runs" / "boards" / "checkpoints"
PAIRS = (("fewshot/omniglot-runs", "protonet[train_options.sources=images_background_small1]",
          "ncm"),
         ("fewshot/omniglot", "protonet[metric=sqeuclidean]",
          "protonet[metric=geodesic,metric_options.pool=,metric_options.m=]"))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data-root", default="../shared/data/omniglot")


def commands(data_root: str, store: Path) -> list[list[str]]:
    """The committed commands behind the compared rows, as checkpoint evaluations."""
    from benchmarks import boards

    out = []
    for step in boards.plan(CHECKPOINTS.parent, data_root):
        argv = list(step.argv)
        if step.part == "omniglot-geodesic" or (step.part == "omniglot-lake"):
            if "--save-checkpoint" in argv:  # a training command: evaluate what it saved
                i = argv.index("--save-checkpoint")
                model = argv[i + 1]
                argv = [a for j, a in enumerate(argv) if j not in (i, i + 1)]
                argv = _drop_training(argv) + ["--checkpoint", model]
            i = argv.index("--store")
            argv[i + 1] = str(store)
            out.append([sys.executable, "-m", "protobench.cli", *argv[1:], "--no-progress"])
    return out


def _drop_training(argv: list[str]) -> list[str]:
    keep, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--train-steps", "--train-ways", "--train-shots", "--train-queries", "-p"):
            skip = True
            continue
        keep.append(a)
    return keep


def run(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    if not CHECKPOINTS.is_dir():
        raise UsageError(f"no trained models in {CHECKPOINTS}: run `make boards` first")
    committed = ResultStore(COMMITTED).records()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "results.sqlite"
        for argv in commands(args.data_root, store):
            subprocess.run(argv, check=True, capture_output=True, cwd=ROOT)
        fresh = ResultStore(store)
        checks = []
        for r in fresh.records():
            same = [c for c in committed if (c.board, c.method, c.setting) ==
                    (r.board, r.method, r.setting) and c.primary.value == r.primary.value]
            checks.append({"board": r.board, "method": r.method, "setting": r.setting,
                           "accuracy": r.primary.value, "equals_committed_row": bool(same)})
        reports = []
        for board, a, b in PAIRS:
            rep = compare_board(fresh, board, a, b)
            reports.append({"board": board, "a": a, "b": b, "comparisons": [
                {"setting": c.setting, "n": c.n, "unit": c.unit, "mean_a": c.mean_a,
                 "mean_b": c.mean_b, "diff": c.diff, "ci95": [c.ci_low, c.ci_high],
                 "t_p": c.t_p, "wilcoxon_p": c.wilcoxon_p, "wins": c.wins, "ties": c.ties,
                 "losses": c.losses, "verdict": c.verdict} for c in rep.comparisons]})
    return {"rows": checks, "comparisons": reports}


def markdown(out: dict[str, Any]) -> str:
    ok = sum(r["equals_committed_row"] for r in out["rows"])
    lines = ["# Paired comparisons on the committed Omniglot boards", "",
             f"{ok} of {len(out['rows'])} re-evaluated rows equal their committed row's "
             "accuracy exactly.", "",
             "| board | A | B | setting | pairs | A % | B % | A - B (95% CI) | t p "
             "| Wilcoxon p | A wins / ties / B wins |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rep in out["comparisons"]:
        for c in rep["comparisons"]:
            lo, hi = c["ci95"]
            lines.append(
                f"| {rep['board']} | {rep['a']} | {rep['b']} | {c['setting']} | {c['n']} "
                f"{c['unit']} | {100 * c['mean_a']:.2f} | {100 * c['mean_b']:.2f} "
                f"| {100 * c['diff']:+.2f} ({100 * lo:.2f} to {100 * hi:.2f}) "
                f"| {c['t_p']:.2g} | {c['wilcoxon_p']:.2g} "
                f"| {c['wins']} / {c['ties']} / {c['losses']} |")
    lines += [""] + [f"- {c['verdict']}" for rep in out["comparisons"]
                     for c in rep["comparisons"]]
    return "\n".join(lines) + "\n"


BENCHMARK = Benchmark("omniglot_compare", __doc__, run, markdown, add_arguments)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
