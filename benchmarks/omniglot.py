"""ProtoNet Conv-4 on real Omniglot: the held-out-alphabet protocol and Lake's 20 runs.

1. Train on the de-duplicated union of images_background_small1/2 without the
   Korean, Tagalog and Sanskrit alphabets (rotations as extra training classes),
   60-way 1-shot 5-query episodes; evaluate 5-way 1-shot, 5-way 5-shot and 20-way
   1-shot on 1000 test episodes each (15 queries), with 95% CIs.
2. Lake et al.'s protocol: train on images_background_small1 only, and separately
   on small2 only (every alphabet, rotations as classes), and score the 20 official
   20-way one-shot runs (all_runs.zip); report the mean error over the 20 runs.

Every evaluation goes through ``run_fewshot`` (the code path of ``protobench fewshot``)
and lands on the leaderboard (``--store``). Results: ``benchmarks/results/omniglot.{json,md}``
(``omniglot_<parts>_<sources>`` when ``--parts`` or ``--lake-sources`` differ).

    python -m benchmarks.omniglot --data-root ../shared/data/omniglot            # full
    python -m benchmarks.omniglot --data-root ../shared/data/omniglot --quick    # smoke
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import Benchmark, main
from protobench.tasks.fewshot import FewShotConfig, run_fewshot

LAKE_SOURCES = "images_background_small1,images_background_small2"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data-root", default="../shared/data/omniglot")
    ap.add_argument("--steps", type=int, default=3000, help="training episodes (held-out run)")
    ap.add_argument("--lake-steps", type=int, default=2000,
                    help="training episodes per Lake run")
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", default="heldout,lake", help="which protocols to run")
    ap.add_argument("--lake-sources", default=LAKE_SOURCES)
    ap.add_argument("--store", default="leaderboards/results.sqlite")
    ap.add_argument("--checkpoints", default="runs/omniglot")
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast for the encoder")


def stem(args: argparse.Namespace) -> str:
    """``omniglot``, plus the parts and Lake sources when they are not the defaults."""
    name = "omniglot"
    if args.parts != "heldout,lake":
        name += "_" + args.parts.replace(",", "_")
    if "lake" in args.parts and args.lake_sources != LAKE_SOURCES:
        name += "_" + args.lake_sources.replace("images_background_", "").replace(",", "_")
    return name


def run(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    if quick:
        args.steps, args.lake_steps, args.episodes = 5, 5, 20
    out: dict[str, Any] = {"steps": args.steps, "amp": args.amp, "lake_steps": args.lake_steps,
                           "episodes": args.episodes, "results": []}
    ckpt = Path(args.checkpoints)
    if "heldout" in args.parts:
        _heldout(args, ckpt, out)
    if "lake" in args.parts:
        for source in args.lake_sources.split(","):
            _lake(args, ckpt, out, source)
    return out


def _heldout(args: argparse.Namespace, ckpt: Path, out: dict) -> None:
    t0 = time.perf_counter()
    train_cfg = FewShotConfig(
        dataset="omniglot", method="protonet", ways=5, shots=(1, 5), episodes=args.episodes,
        seed=args.seed, train_steps=args.steps, train_ways=60, train_shots=1, train_queries=5,
        method_params={"amp": args.amp},
        data_root=args.data_root, save_checkpoint=str(ckpt / "heldout_1shot.pt"),
        store=args.store)
    for o in run_fewshot(train_cfg):
        out["results"].append(_row("held-out alphabets", o))
    out["train_seconds_heldout"] = time.perf_counter() - t0
    for o in run_fewshot(FewShotConfig(
            dataset="omniglot", method="protonet", ways=20, shots=(1,), episodes=args.episodes,
            seed=args.seed, data_root=args.data_root,
            checkpoint=str(ckpt / "heldout_1shot.pt"), store=args.store)):
        out["results"].append(_row("held-out alphabets", o))


def _lake(args: argparse.Namespace, ckpt: Path, out: dict, source: str) -> None:
    t1 = time.perf_counter()
    outcomes = run_fewshot(FewShotConfig(
        dataset="omniglot-runs", method="protonet", ways=20, shots=(1,), seed=args.seed,
        train_steps=args.lake_steps, train_ways=60, train_shots=1, train_queries=5,
        method_params={"amp": args.amp}, data_root=args.data_root, train_dataset="omniglot:all",
        train_options={"sources": source, "rotations": "all"},
        save_checkpoint=str(ckpt / f"lake_{source}.pt"), store=args.store))
    for o in outcomes:
        row = _row(f"Lake runs, trained on {source}", o)
        row["error_percent"] = 100 * (1 - o.result.mean)
        row["per_run_error_percent"] = [round(100 * (1 - a), 1)
                                        for a in o.result.accuracies.tolist()]
        out["results"].append(row)
    out[f"train_seconds_{source}"] = time.perf_counter() - t1


def _row(protocol: str, o) -> dict:
    s = o.setting
    return {"protocol": protocol, "ways": s["ways"], "shots": s["shots"],
            "queries": s["queries"], "episodes": s["episodes"],
            "accuracy_percent": 100 * o.result.mean, "ci95_percent": 100 * o.result.ci95,
            "train_seconds": o.record.config["fit"].get("train_seconds"),
            "manifest": o.record.manifest_hash}


def markdown(out: dict) -> str:
    lines = ["# ProtoNet Conv-4 on Omniglot", "",
             f"Training: {out['steps']} episodes (held-out), {out['lake_steps']} per Lake model;"
             " 60-way 1-shot 5-query"
             + (", encoder in bfloat16 autocast." if out.get("amp") else ", float32."), "",
             "| protocol | setting | episodes | accuracy % | 95% CI | error % |",
             "|---|---|---|---|---|---|"]
    for r in out["results"]:
        err = f"{r['error_percent']:.2f}" if "error_percent" in r else ""
        lines.append(f"| {r['protocol']} | {r['ways']}-way {r['shots']}-shot | {r['episodes']} "
                     f"| {r['accuracy_percent']:.2f} | ± {r['ci95_percent']:.2f} | {err} |")
    lines.append("")
    for k, v in out.items():
        if k.startswith("train_seconds"):
            lines.append(f"- {k}: {v:.0f} s")
    return "\n".join(lines) + "\n"


BENCHMARK = Benchmark("omniglot", __doc__, run, markdown, add_arguments, stem=stem)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
