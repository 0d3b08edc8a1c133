"""How long ``protobench leaderboard site`` takes for a store of 10,000 rows.

A synthetic store of ``--rows`` rows (default 10,000) is written first: three few-shot
boards (configurations x 4 shots x 10 seeds, 600 per-episode accuracies per row), one
continual board (10 x 10 accuracy matrices) and one OOD board (two OOD sets, a stored ROC
curve each), every row with a real method's parameters and job so the reproduce commands
are built as for real rows. The site is then built ``--repeats`` times into a fresh folder
(median reported, target under 10 s), and once for the committed ``leaderboards/`` store.

    python -m benchmarks.site_build             # 10,000 rows, median of 3 builds
    python -m benchmarks.site_build --quick     # 500 rows, one build

Results: ``benchmarks/results/site_build{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import Benchmark, main
from protobench.leaderboard.site import build_site
from protobench.tasks.record import Metric, ResultRecord, curve_key
from protobench.tasks.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
SEEDS = 10


def _folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def _fewshot(board: int, config: int, shots: int, seed: int, rng: random.Random
             ) -> ResultRecord:
    acc = min(0.99, 0.4 + 0.1 * shots ** 0.5 + 0.002 * config + rng.gauss(0, 0.01))
    samples = [min(1.0, max(0.0, rng.gauss(acc, 0.1))) for _ in range(600)]
    manifest = f"{board:02d}{shots:02d}{seed:04d}".ljust(64, "a")
    params = {"metric": "sqeuclidean", "centre": True, "normalise": config % 2 == 0,
              "shrinkage": round(0.01 * config, 4)}
    job = {"dataset": f"synthetic{board}", "method": "ncm", "ways": 5, "shots": [shots],
           "queries": 15, "episodes": 600, "seed": seed, "method_params": params}
    return ResultRecord(
        task="fewshot", dataset=f"synthetic{board}", split="test", method="ncm",
        setting={"ways": 5, "shots": shots, "queries": 15, "episodes": 600},
        config={"preset": "defaults", "dataset_options": {}}, seed=seed,
        metrics={"accuracy": Metric(sum(samples) / 600, 0.01, 600)}, samples={manifest: samples},
        manifest_hash=manifest, wall_time_s=1.0, method_name="ncm", method_params=params,
        job={"task": "fewshot", "config": job}, data={"dataset": f"synthetic{board}"},
        versions={"protobench": "synthetic"}, device="cpu", timestamp="2026-12-01T00:00:00+00:00")


def _continual(config: int, seed: int, rng: random.Random) -> ResultRecord:
    method = ("finetune", "napa-vq", "prd", "joint")[config % 4]
    matrix = [[round(max(0.0, min(1.0, rng.gauss(0.9 - 0.08 * (i - j), 0.05))), 4)
               if j <= i else None for j in range(10)] for i in range(10)]
    aia = sum(sum(v for v in row[:i + 1]) / (i + 1) for i, row in enumerate(matrix)) / 10
    params = {"epochs": 10 + config, "lr": 0.001}
    return ResultRecord(
        task="continual", dataset="synthetic", split="test", method=method,
        setting={"experiences": 10, "classes": 50}, seed=seed,
        config={"preset": "defaults", "fit": {"accuracy_matrix": matrix}},
        metrics={"average_incremental_accuracy": Metric(aia, None, 10),
                 "final_accuracy": Metric(sum(matrix[-1]) / 10, None, 10),
                 "average_forgetting": Metric(0.1, None, 10)},
        manifest_hash=f"s{seed}".ljust(64, "b"), wall_time_s=2.0, method_name=method,
        method_params=params, primary_metric="average_incremental_accuracy",
        job={"task": "continual", "config": {"dataset": "synthetic", "method": method,
                                             "experiences": 10, "seed": seed}},
        versions={"protobench": "synthetic"}, device="cpu", timestamp="2026-12-01T00:00:00+00:00")


def _ood(config: int, seed: int, rng: random.Random) -> ResultRecord:
    method, score = ("ce", ("msp", "knn", "energy")[config % 3]) if config % 2 else \
        ("palm", ("ssd", "knn", "mahalanobis")[config % 3])
    samples: dict[str, list[float]] = {}
    metrics: dict[str, Metric] = {}
    for name in ("near", "far"):
        power = 1.5 + 0.01 * config + (1.0 if name == "far" else 0.0)
        fpr = [i / 255 for i in range(256)]
        tpr = [min(1.0, f ** (1 / power)) for f in fpr]
        samples[curve_key(name, seed, "fpr")], samples[curve_key(name, seed, "tpr")] = fpr, tpr
        metrics[f"{name}/auroc"] = Metric(power / (power + 1), None, 1)
    metrics["auroc"] = Metric((metrics["near/auroc"].value + metrics["far/auroc"].value) / 2)
    metrics["fpr95_id_positive"] = Metric(rng.random())
    params = {"epochs": 50, "temperature": round(0.01 * config, 4)}
    return ResultRecord(
        task="ood", dataset="synthetic", split="test", method=f"{method}+{score}",
        setting={"id": "synthetic", "ood": "near,far"}, seed=seed,
        config={"preset": "defaults", "score": score}, metrics=metrics, samples=samples,
        manifest_hash=f"o{seed}".ljust(64, "c"), primary_metric="auroc", method_name=method,
        method_params=params, wall_time_s=3.0,
        job={"task": "ood", "config": {"id": "synthetic", "ood": "near,far", "method": method,
                                       "scores": [score], "seed": seed}},
        versions={"protobench": "synthetic"}, device="cpu", timestamp="2026-12-01T00:00:00+00:00")


def synthetic_store(path: Path, rows: int, seed: int = 0) -> int:
    """``rows`` rows over five boards (module docstring) in ``path``; returns the count."""
    rng = random.Random(seed)
    per = rows // 5
    records: list[ResultRecord] = []
    for board in range(3):
        configs = max(1, per // (4 * SEEDS))
        records += [_fewshot(board, c, k, s, rng) for c in range(configs)
                    for k in (1, 5, 10, 20) for s in range(SEEDS)]
    configs = max(1, per // SEEDS)
    records += [_continual(c, s, rng) for c in range(configs) for s in range(SEEDS)]
    records += [_ood(c, s, rng) for c in range(configs) for s in range(SEEDS)]
    store = ResultStore(path)
    for i in range(0, len(records), 1000):
        store.add_all(records[i:i + 1000])
    return len(records)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)


def _build(store: Path, out: Path) -> dict[str, Any]:
    res = build_site(store, out)
    return {"seconds": res.seconds, "pages": len(res.pages), "rows": res.rows,
            "configurations": res.configurations, "figures": res.figures,
            "megabytes": round(_folder_mb(out), 1)}


def run(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    rows, repeats = (500, 1) if quick else (args.rows, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "synthetic.sqlite"
        t = time.perf_counter()
        n = synthetic_store(store, rows)
        write_s = time.perf_counter() - t
        builds = [_build(store, Path(tmp) / f"site{i}") for i in range(repeats)]
        committed = ROOT / "leaderboards" / "results.sqlite"
        real = _build(committed, Path(tmp) / "committed") if committed.exists() else None
    seconds = [b["seconds"] for b in builds]
    return {"rows": n, "store_write_seconds": round(write_s, 2), "builds": builds,
            "median_seconds": statistics.median(seconds), "target_seconds": 10.0,
            "committed": real}


def markdown(out: dict[str, Any]) -> str:
    b = out["builds"][0]
    lines = ["# Building the leaderboard site", "",
             f"A synthetic store of {out['rows']:,} rows (5 boards; written in "
             f"{out['store_write_seconds']:.1f} s): `build_site` took "
             f"**{out['median_seconds']:.2f} s** (median of {len(out['builds'])}: "
             + ", ".join(f"{x['seconds']:.2f}" for x in out["builds"])
             + f" s; target {out['target_seconds']:.0f} s) for {b['pages']} pages, "
             f"{b['configurations']:,} configurations and {b['figures']} figures "
             f"({b['megabytes']} MB)."]
    if out["committed"]:
        c = out["committed"]
        lines += ["", f"The committed `leaderboards/results.sqlite` ({c['rows']} rows): "
                  f"{c['seconds']:.2f} s for {c['pages']} pages and {c['figures']} figures "
                  f"({c['megabytes']} MB)."]
    return "\n".join(lines) + "\n"


BENCHMARK = Benchmark("site_build", __doc__, run, markdown, add_arguments)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
