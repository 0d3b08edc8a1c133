"""KNN OOD scoring at scale: 100,000 ID + 100,000 OOD cached features against 50,000
training features, FAISS vs exact torch, in bounded memory.

Features are drawn like penultimate features of a trained encoder (class centres + noise
for ID and training features; for OOD, unseen classes centred between two ID centres),
written to a feature file and read back (cached features), then scored
with the ``knn`` score (k = 50, L2-normalised, the KNN paper's setting) through each
backend. Each backend's fit + scoring of all 200,000 queries is timed, with its peak
memory growth (RSS sampled every 2 ms, plus CUDA allocations on a GPU). A naive
all-pairs distance matrix would need ``200,000 x 50,000 x 4`` bytes = 40 GB; the index
searches in batches instead (torch: each ``[b, 50,000]`` block stays under 256 MiB).

    python -m benchmarks.ood_knn            # the acceptance cell
    python -m benchmarks.ood_knn --quick    # smoke run

Results: ``benchmarks/results/ood_knn<tag>{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import measure
from benchmarks._harness import Benchmark, main
from protobench.geometry import faiss_gpu_available
from protobench.ood.metrics import ood_metrics
from protobench.ood.scores import build_score


def make_features(n_train: int, n_id: int, n_ood: int, dim: int, classes: int = 100,
                  seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded stand-ins for cached features: ``train [n_train, D]``, ``id``, ``ood``."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 1.5
    # unseen classes: centres between two ID centres (near-OOD, not trivially separable)
    a, b = torch.randint(classes, (2, classes), generator=g)
    centres = torch.cat([centres, 0.8 * centres[a] + 0.2 * centres[b]])

    def around(n: int, first: int) -> torch.Tensor:
        y = first + torch.randint(classes, (n,), generator=g)
        return (centres[y] + torch.randn(n, dim, generator=g)).relu()

    return {"train": around(n_train, 0), "id": around(n_id, 0), "ood": around(n_ood, classes)}


def faiss_installed() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def run_cell(n_train: int, n_id: int, n_ood: int, dim: int, k: int, device: str,
             classes: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.pt"
        torch.save(make_features(n_train, n_id, n_ood, dim, classes), path)
        feats = torch.load(path)  # cached features, read back before the measurement
        backends = ["torch"]
        if faiss_installed():
            backends.append("faiss-gpu" if device == "cuda" and faiss_gpu_available()
                            else "faiss-cpu")
        rows, scores = {}, {}
        for backend in backends:
            def job(backend: str = backend) -> tuple[torch.Tensor, torch.Tensor]:
                score = build_score("knn", k=k, backend=backend).fit(feats["train"])
                return score.score(feats["id"]), score.score(feats["ood"])

            (s_id, s_ood), seconds, peak = measure(job)
            scores[backend] = (s_id, s_ood)
            m = ood_metrics(s_id, s_ood)
            rows[backend] = {"seconds": round(seconds, 3),
                             "queries_per_s": round((n_id + n_ood) / seconds),
                             "peak_mem_mb": round(peak / 2**20, 1),
                             "auroc": m["auroc"], "fpr95_id_positive": m["fpr95_id_positive"]}
            print(f"{backend}: {seconds:.2f}s, peak +{peak / 2**20:.0f} MB, "
                  f"AUROC {100 * m['auroc']:.2f}", flush=True)
        if len(scores) > 1:
            a, b = scores["torch"], scores[backends[1]]
            rows[backends[1]]["max_abs_score_diff_vs_torch"] = float(max(
                (a[0] - b[0]).abs().max(), (a[1] - b[1]).abs().max()))
    return {"train": n_train, "id": n_id, "ood": n_ood, "dim": dim, "k": k,
            "naive_distance_matrix_gb": round((n_id + n_ood) * n_train * 4 / 1e9, 1),
            "feature_mb": round((n_train + n_id + n_ood) * dim * 4 / 2**20, 1),
            "backends": rows}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--train", type=int, default=50_000)
    ap.add_argument("--id", type=int, default=100_000)
    ap.add_argument("--ood", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512, help="ResNet-18/34 penultimate width")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tag", default="", help="suffix of the result files")


def run(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    if quick:
        args.train, args.id, args.ood, args.dim, args.classes = 2_000, 3_000, 3_000, 64, 10
    return {"rows": [run_cell(args.train, args.id, args.ood, args.dim, args.k, args.device,
                              args.classes)]}


def markdown(out: dict) -> str:
    lines = ["# KNN OOD scoring", "",
             "`knn` score (k, L2-normalised) of ID + OOD cached features against the training "
             "features: fit + scoring of every query, one run; peak memory = RSS growth "
             "(+ CUDA allocations on a GPU) above the loaded features.", "",
             "| train | ID | OOD | D | k | backend | seconds | queries/s | peak MB "
             "| naive matrix GB | AUROC | max score diff vs torch |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        for name, v in r["backends"].items():
            diff = v.get("max_abs_score_diff_vs_torch")
            lines.append(
                f"| {r['train']:,} | {r['id']:,} | {r['ood']:,} | {r['dim']} | {r['k']} "
                f"| {name} | {v['seconds']:.2f} | {v['queries_per_s']:,} "
                f"| {v['peak_mem_mb']:.0f} | {r['naive_distance_matrix_gb']} "
                f"| {100 * v['auroc']:.2f} | {'' if diff is None else f'{diff:.1e}'} |")
    return "\n".join(lines) + "\n"


BENCHMARK = Benchmark("ood_knn", __doc__, run, markdown, add_arguments)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
