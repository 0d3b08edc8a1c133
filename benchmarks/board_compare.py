"""Paired comparisons on the committed boards (``leaderboards/results.sqlite``).

Every committed row comes from ``make boards`` and keeps its per-episode accuracies and
per-seed metrics, so the comparisons need no re-run: ``protobench compare`` pairs few-shot
rows episode by episode (same manifests) and continual / OOD rows seed by seed (same
streams). The pairs: ProtoNet vs NCM on Lake's 20 runs, euclidean vs geodesic ProtoNet on
the held-out 5-way episodes, ProtoNet vs NCM on the same held-out episodes (5- and 20-way:
the 5-way ProtoNet rows are the training grid's, the 20-way one the evaluation grid's),
and on both
continual boards every exemplar-free method against ``finetune`` and ``lwf`` (average
incremental accuracy, 3 seeds each). A pair a board lacks is reported as missing, never
skipped silently.

    python -m benchmarks.board_compare
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks._harness import Benchmark, UsageError, main
from protobench.errors import UserError
from protobench.leaderboard.compare import compare_board
from protobench.tasks import ResultStore

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "leaderboards" / "results.sqlite"
EXEMPLAR_FREE = ("napa-vq", "prd", "efc", "fecam", "lwf")
HELDOUT = "checkpoint=runs/boards/checkpoints/omniglot_heldout_4000steps_bf16.pt"
PAIRS: tuple[tuple[str, str, str, dict[str, object]], ...] = (
    ("fewshot/omniglot-runs", "protonet[train_options.sources=images_background_small1]",
     "ncm", {}),
    ("fewshot/omniglot", f"protonet[metric=sqeuclidean,{HELDOUT}]",
     "protonet[metric=geodesic,metric_options.pool=,metric_options.m=]", {"ways": 5}),
    ("fewshot/omniglot", "protonet[preset=defaults]", "ncm", {"ways": 5}),
    ("fewshot/omniglot", f"protonet[{HELDOUT}]", "ncm", {"ways": 20}),
    *((board, m, base, {}) for board in ("continual/digits", "continual/omniglot")
      for m in EXEMPLAR_FREE for base in ("finetune", "lwf") if m != base),
)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--store", type=Path, default=COMMITTED)


def run(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    if not args.store.is_file():
        raise UsageError(f"no store at {args.store}: run `make boards` first")
    store = ResultStore(args.store)
    reports = []
    for board, a, b, settings in PAIRS[:3] if quick else PAIRS:
        try:
            rep = compare_board(store, board, a, b, settings or None)
        except UserError as e:
            reports.append({"board": board, "a": a, "b": b, "missing": str(e)})
            continue
        reports.append({"board": board, "a": a, "b": b, "comparisons": [
            {"setting": c.setting, "metric": c.metric, "n": c.n, "unit": c.unit,
             "mean_a": c.mean_a, "mean_b": c.mean_b, "diff": c.diff,
             "ci95": [c.ci_low, c.ci_high], "t_p": c.t_p, "wilcoxon_p": c.wilcoxon_p,
             "wins": c.wins, "ties": c.ties, "losses": c.losses, "verdict": c.verdict}
            for c in rep.comparisons]})
    return {"store": str(args.store.relative_to(ROOT) if args.store.is_relative_to(ROOT)
                         else args.store), "comparisons": reports}


def markdown(out: dict[str, Any]) -> str:
    lines = ["# Paired comparisons on the committed boards", "",
             f"Store: `{out['store']}`. Few-shot pairs: episodes (same manifests); continual "
             "pairs: seeds (same streams).", "",
             "| board | A | B | setting | metric | pairs | A % | B % | A - B (95% CI) | t p "
             "| Wilcoxon p | A wins / ties / B wins |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rep in out["comparisons"]:
        if "missing" in rep:
            lines.append(f"| {rep['board']} | {rep['a']} | {rep['b']} | missing: "
                         f"{rep['missing']} | | | | | | | | |")
            continue
        for c in rep["comparisons"]:
            lo, hi = c["ci95"]
            lines.append(
                f"| {rep['board']} | {rep['a']} | {rep['b']} | {c['setting']} | {c['metric']} "
                f"| {c['n']} {c['unit']} | {100 * c['mean_a']:.2f} | {100 * c['mean_b']:.2f} "
                f"| {100 * c['diff']:+.2f} ({100 * lo:.2f} to {100 * hi:.2f}) "
                f"| {c['t_p']:.2g} | {c['wilcoxon_p']:.2g} "
                f"| {c['wins']} / {c['ties']} / {c['losses']} |")
    lines += [""] + [f"- {rep['board']}: {c['verdict']}" for rep in out["comparisons"]
                     for c in rep.get("comparisons", [])]
    return "\n".join(lines) + "\n"


BENCHMARK = Benchmark("board_compare", __doc__, run, markdown, add_arguments)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
