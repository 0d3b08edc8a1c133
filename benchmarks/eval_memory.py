"""Peak memory of frozen-feature evaluation as the episode count grows (10k vs 100k, ...).

Each (mode, E) runs in a fresh process on the same features (D = 640, 20 classes x 600
samples, 5-way 5-shot 15-query): load the features, warm up on 5,000 episodes (which
allocates the per-chunk buffers once), then evaluate E episodes. Reported: the growth
of the process's peak RSS (``ru_maxrss``, the kernel's exact high-water mark) during the
E-episode evaluation, i.e. the memory that scales with E, and the absolute peak. Modes:

- ``list``: ``evaluate_episodes(features, make_episodes(data, spec))`` -- the CLI path;
  holds the ``[E, N, K+Q]`` int64 index tensor (8 bytes x 100 per episode) and per-episode
  accuracies, scores in budget-sized chunks;
- ``stream``: ``evaluate_spec(features, data, spec)`` -- samples and scores one sampler
  chunk at a time; memory beyond the features is flat in E.

    python -m benchmarks.eval_memory                 # 10k, 100k, 1M episodes
    python -m benchmarks.eval_memory --quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import Benchmark, main

ROOT = Path(__file__).resolve().parents[1]  # the folder holding the benchmarks package


def child(mode: str, episodes: int, dim: int) -> dict:
    import torch

    from benchmarks.fewshot_throughput import make_data
    from protobench.episodic import EpisodeSpec, make_episodes
    from protobench.evaluation import evaluate_episodes, evaluate_spec

    data = make_data(dim)

    def run(n: int):
        spec = EpisodeSpec(5, 5, 15, n, seed=0)
        if mode == "stream":
            return evaluate_spec(data.x, data, spec)
        return evaluate_episodes(data.x, make_episodes(data, spec))

    run(5000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    result = run(episodes)
    seconds = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "episodes": episodes, "seconds": seconds,
            "eps_per_s": episodes / seconds, "peak_growth_mb": (after - before) / 1024,
            "max_rss_mb": after / 1024,
            "features_mb": data.x.numel() * 4 / 2**20, "accuracy": result.mean,
            "torch_threads": torch.get_num_threads()}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--episodes", default="10000,100000,1000000")
    ap.add_argument("--dim", type=int, default=640)
    ap.add_argument("--child", nargs=2, metavar=("MODE", "EPISODES"), help=argparse.SUPPRESS)


def run(args: argparse.Namespace, quick: bool) -> dict[str, Any] | None:
    if args.child:  # one measurement, in a fresh process: its line goes to the parent
        print(json.dumps(child(args.child[0], int(args.child[1]), args.dim)))
        return None
    if quick:
        args.episodes = "1000,5000"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    rows = []
    for mode in ("list", "stream"):
        for e in args.episodes.split(","):
            proc = subprocess.run([sys.executable, "-m", "benchmarks.eval_memory", "--child",
                                   mode, e, "--dim", str(args.dim)], capture_output=True,
                                  text=True, check=True, env=env)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    return {"dim": args.dim, "rows": rows}


def markdown(out: dict) -> str:
    lines = ["# Evaluation peak memory vs episode count", "",
             f"5-way 5-shot 15-query, D = {out['dim']}, features "
             f"{out['rows'][0]['features_mb']:.0f} MB; growth = peak RSS during evaluation "
             "minus the peak before it (after a 5,000-episode warm-up); RSS ratio = process "
             "peak / process peak at the smallest E of the mode.", "",
             "| mode | episodes | episodes/s | peak growth MB | process peak RSS MB "
             "| RSS ratio |", "|---|---|---|---|---|---|"]
    for mode in ("list", "stream"):
        rows = [r for r in out["rows"] if r["mode"] == mode]
        base_rss = rows[0]["max_rss_mb"]
        for r in rows:
            lines.append(f"| {mode} | {r['episodes']:,} | {r['eps_per_s']:,.0f} "
                         f"| {r['peak_growth_mb']:.1f} | {r['max_rss_mb']:.0f} "
                         f"| {r['max_rss_mb'] / base_rss:.2f}x |")
    return "\n".join(lines) + "\n"


BENCHMARK = Benchmark("eval_memory", __doc__, run, markdown, add_arguments)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
