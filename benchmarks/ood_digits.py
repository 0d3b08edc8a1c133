"""PALM vs a cross-entropy model + MSP on tiny OOD pairs, CPU, several seeds.

Pairs (8x8 grey): ``digits:0-4`` (ID) vs ``digits:5-9`` (near-OOD), and all ``digits`` vs
real Omniglot drawings rendered at 8x8 (far-OOD; ``--omniglot-root``, skipped with a note
when absent). Both methods use the same backbone (the PALM card's toy MLP 64-128-64) and
the same number of epochs, seeds ``0..seeds-1``; PALM uses its card's toy preset, CE the
OpenOOD CE recipe. Every score applicable to each model is reported (PALM has no
classifier head, so no MSP / max-logit / energy), with the mean, standard deviation and
Student-t 95% CI over seeds of AUROC, both FPR@95 conventions and AUPR-In / -Out.
ID accuracy: CE's classifier; PALM's nearest class mean (cosine) on its features.

    python -m benchmarks.ood_digits            # 3 seeds, 50 epochs
    python -m benchmarks.ood_digits --epochs 200 --tag _200ep
    python -m benchmarks.ood_digits --quick    # smoke run (digits pair, 2 seeds, 1 epoch)

Results: ``benchmarks/results/ood_digits<tag>{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import Benchmark, main
from protobench.evaluation.stats import mean_ci95
from protobench.methods import get_method_class
from protobench.ood.metrics import METRIC_NAMES
from protobench.tasks.ood import OODConfig, run_ood

OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
SCORES = {"palm": ("ssd", "mahalanobis-centred", "knn", "mahalanobis", "prototype"),
          "ce": ("msp", "max-logit", "energy", "knn", "mahalanobis", "ssd",
                 "mahalanobis-centred", "prototype")}


def stats(values: list[float]) -> dict:
    mean, ci = mean_ci95(values)
    return {"mean": mean, "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "ci95": ci, "per_seed": values}


def run_pair(id_set: str, ood_set: str, roots: dict, epochs: int, seeds: int) -> dict:
    out: dict = {"id": id_set, "ood": ood_set, "methods": {}}
    for method in ("palm", "ce"):
        t = time.perf_counter()
        res = run_ood(OODConfig(id=id_set, ood=ood_set, method=method, scores=SCORES[method],
                                epochs=epochs, seed=0, seeds=seeds, device="cpu",
                                backbone="mlp", dataset_options={"image_size": 8},
                                ood_roots=roots, store=None, plot=False, progress=False,
                                run_dir=str(Path("runs") / "ood_digits" / method)))
        out["ood_count"] = next(iter(res.counts.values()))
        out["id_test_count"] = res.records[0].config["id_test_count"]
        out["methods"][method] = {
            "seconds": round(time.perf_counter() - t, 1),
            "id_accuracy": stats([e.id_accuracy for e in res.per_seed]),
            "id_accuracy_source": res.per_seed[0].id_accuracy_source,
            "scores": {s: {m: stats([e.summary[s][m] for e in res.per_seed])
                           for m in METRIC_NAMES} for s in res.scores}}
        print(f"{id_set} vs {ood_set}: {method} done in {out['methods'][method]['seconds']}s",
              flush=True)
    palm = out["methods"]["palm"]["scores"][get_method_class("palm").default_score]["auroc"]
    msp = out["methods"]["ce"]["scores"]["msp"]["auroc"]
    out["palm_default_beats_ce_msp"] = {
        "mean": palm["mean"] > msp["mean"],
        "every_seed": all(a > b for a, b in zip(palm["per_seed"], msp["per_seed"]))}
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--omniglot-root", type=Path, default=OMNIGLOT)
    ap.add_argument("--tag", default="", help="suffix of the result files")


def run(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    pairs = [("digits:0-4", "digits:5-9", {})]
    notes = []
    if quick:
        args.epochs, args.seeds = 1, 2
    elif args.omniglot_root.exists():
        pairs.append(("digits", "omniglot", {"omniglot": str(args.omniglot_root)}))
    else:
        notes.append(f"digits vs omniglot skipped: {args.omniglot_root} is absent")
    t = time.perf_counter()
    out: dict[str, Any] = {
        "epochs": args.epochs, "seeds": args.seeds, "notes": notes,
        "pairs": [run_pair(i, o, r, args.epochs, args.seeds) for i, o, r in pairs]}
    out["total_seconds"] = round(time.perf_counter() - t, 1)
    return out


def _fmt(s: dict) -> str:
    spread = "" if s["std"] is None else f" ± {100 * s['std']:.2f}"
    return f"{100 * s['mean']:.2f}{spread}"


def markdown(out: dict) -> str:
    lines = ["# PALM vs CE + post-hoc scores on 8x8 digits",
             "", f"{out['seeds']} seeds (0..{out['seeds'] - 1}), {out['epochs']} epochs, same "
             "MLP 64-128-64 backbone, CPU. Values in %: mean ± std over seeds. FPR95 ID+ = "
             "OOD accepted at 95% ID recall (PALM/KNN papers); FPR95 OOD+ = ID rejected at "
             f"95% OOD recall (OpenOOD v1.5). Total {out['total_seconds']} s.", ""]
    lines += [f"Note: {n}" for n in out["notes"]]
    for p in out["pairs"]:
        lines += ["", f"## ID {p['id']} ({p['id_test_count']} test images) vs OOD {p['ood']} "
                      f"({p['ood_count']} images)", "",
                  "| model + score | AUROC | FPR95 ID+ | FPR95 OOD+ | AUPR-In | AUPR-Out "
                  "| ID acc. | train+eval s |", "|---|---|---|---|---|---|---|---|"]
        for method, r in p["methods"].items():
            for s, m in r["scores"].items():
                lines.append(f"| {method} + {s} | {_fmt(m['auroc'])} "
                             f"| {_fmt(m['fpr95_id_positive'])} | {_fmt(m['fpr95_ood_positive'])}"
                             f" | {_fmt(m['aupr_in'])} | {_fmt(m['aupr_out'])} "
                             f"| {_fmt(r['id_accuracy'])} | {r['seconds']} |")
        v = p["palm_default_beats_ce_msp"]
        lines += ["", f"PALM (ssd) AUROC above CE + MSP: on the mean {v['mean']}, on every "
                      f"seed {v['every_seed']}."]
    return "\n".join(lines) + "\n"


BENCHMARK = Benchmark("ood_digits", __doc__, run, markdown, add_arguments)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
