"""Nearest-prototype search at scale: torch exact vs FAISS (exact, IVF, HNSW), D = 512.

Prototypes are clustered like class prototypes of a trained encoder (``C`` prototypes
around ``C / 10`` centres, unit noise); queries are drawn around the same centres.
Each cell times ``PrototypeIndex.search(queries, k=1)`` (index build timed apart) and its
peak memory growth (RSS sampled every 2 ms, plus CUDA allocations on a GPU), median of
``--repeats`` runs with the backends interleaved, and reports:

- agreement of FAISS exact with torch exact (share of identical nearest prototypes);
- recall@1 of the approximate indexes against exact search (on 5,000 queries);
- the speed ratio FAISS / torch.

    python -m benchmarks.prototype_search            # full grid
    python -m benchmarks.prototype_search --quick    # smoke run
    python -m benchmarks.prototype_search --cells 1000000x10000 --repeats 5

Results: ``benchmarks/results/prototype_search<tag>{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from benchmarks._common import measure
from benchmarks._harness import Benchmark, main
from protobench.geometry import PrototypeIndex, faiss_gpu_available

FULL = "100000x1000,100000x10000,1000000x10000,100000x100000"


def make(n_queries: int, n_protos: int, dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(1, n_protos // 10), dim, generator=g) * 2.0
    protos = centres[torch.randint(len(centres), (n_protos,), generator=g)]
    protos = protos + torch.randn(n_protos, dim, generator=g)
    queries = centres[torch.randint(len(centres), (n_queries,), generator=g)]
    return queries + torch.randn(n_queries, dim, generator=g), protos


def run_cell(n_queries: int, n_protos: int, dim: int, repeats: int, approx: list[str],
             device: str, hnsw_max: float) -> dict:
    queries, protos = make(n_queries, n_protos, dim)
    if device == "cuda":
        queries, protos = queries.cuda(), protos.cuda()
    faiss_backend = "faiss-gpu" if device == "cuda" and faiss_gpu_available() else "faiss-cpu"
    variants = {"torch": dict(backend="torch"), "faiss": dict(backend=faiss_backend)}
    for a in approx:
        if a == "hnsw" and (faiss_backend == "faiss-gpu" or n_queries * n_protos > hnsw_max):
            continue  # no GPU HNSW in FAISS; slower than exact search on large cells here
        variants[f"faiss-{a}"] = dict(backend=faiss_backend, approximate=a)
    indexes, build = {}, {}
    for name, kw in variants.items():
        index, seconds, _ = measure(lambda kw=kw: PrototypeIndex(protos, **kw))
        indexes[name], build[name] = index, seconds
    times: dict[str, list[float]] = {k: [] for k in variants}
    mems: dict[str, list[int]] = {k: [] for k in variants}
    ids = {}
    for _ in range(repeats):
        for name, index in indexes.items():  # interleaved, so load drifts hit all alike
            (_, i), seconds, grown = measure(lambda index=index: index.search(queries, 1))
            times[name].append(seconds)
            mems[name].append(grown)
            ids[name] = i[:, 0].cpu()
    probe = queries[:5000]
    row = {"queries": n_queries, "prototypes": n_protos, "dim": dim, "device": device,
           "faiss_backend": faiss_backend, "repeats": repeats, "variants": {}}
    for name in variants:
        row["variants"][name] = {
            "median_s": statistics.median(times[name]), "runs_s": times[name],
            "queries_per_s": n_queries / statistics.median(times[name]),
            "peak_mem_mb": statistics.median(mems[name]) / 2**20,
            "build_s": build[name],
            "agree_with_torch": (ids[name] == ids["torch"]).double().mean().item(),
            "recall_at_1": indexes[name].recall(probe, 1) if "-" in name else 1.0,
        }
    row["faiss_vs_torch"] = (row["variants"]["torch"]["median_s"]
                             / row["variants"]["faiss"]["median_s"])
    return row


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cells", default=FULL, help="QUERIESxPROTOTYPES,...")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--approximate", default="ivf,hnsw")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    ap.add_argument("--hnsw-max", type=float, default=1e9,
                    help="skip HNSW on cells with more query x prototype pairs")


def run(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    if quick:
        args.cells, args.repeats, args.dim = "2000x300", 1, 64
    approx = [a for a in args.approximate.split(",") if a]
    out: dict[str, Any] = {"rows": []}
    for cell in args.cells.split(","):
        nq, npr = (int(float(v)) for v in cell.split("x"))
        row = run_cell(nq, npr, args.dim, args.repeats, approx, args.device, args.hnsw_max)
        out["rows"].append(row)
        print(_line(row), flush=True)
    return out


def _line(row: dict) -> str:
    return f"{row['queries']:,} x {row['prototypes']:,}: " + ", ".join(
        f"{k} {v['median_s']:.2f}s" for k, v in row["variants"].items())


def markdown(out: dict) -> str:
    lines = ["# Nearest-prototype search", "",
             "Median of the runs per cell (k = 1); peak memory = RSS growth during search "
             "(+ CUDA allocations on a GPU); recall@1 against exact search on 5,000 queries.",
             "",
             "| queries | prototypes | D | index | median s | queries/s | x torch "
             "| peak MB | build s | same NN as torch | recall@1 | runs |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        t = r["variants"]["torch"]["median_s"]
        for name, v in r["variants"].items():
            lines.append(
                f"| {r['queries']:,} | {r['prototypes']:,} | {r['dim']} | {name} "
                f"| {v['median_s']:.2f} | {v['queries_per_s']:,.0f} | {t / v['median_s']:.2f}x "
                f"| {v['peak_mem_mb']:.0f} | {v['build_s']:.2f} "
                f"| {100 * v['agree_with_torch']:.2f}% | {v['recall_at_1']:.3f} "
                f"| {r['repeats']} |")
    return "\n".join(lines) + "\n"


BENCHMARK = Benchmark("prototype_search", __doc__, run, markdown, add_arguments)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
