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

    python benchmarks/eval_memory.py                 # 10k, 100k, 1M episodes
    python benchmarks/eval_memory.py --quick
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, machine_line  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def child(mode: str, episodes: int, dim: int) -> dict:
    import torch
    from fewshot_throughput import make_data

    from protobench.episodic import EpisodeSpec, evaluate_episodes, evaluate_spec, make_episodes

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--episodes", default="10000,100000,1000000")
    ap.add_argument("--dim", type=int, default=640)
    ap.add_argument("--child", nargs=2, metavar=("MODE", "EPISODES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.dim)))
        return
    if args.quick:
        args.episodes = "1000,5000"
    rows = []
    for mode in ("list", "stream"):
        for e in args.episodes.split(","):
            proc = subprocess.run([sys.executable, __file__, "--child", mode, e,
                                   "--dim", str(args.dim)], capture_output=True, text=True,
                                  check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    out = {"machine": machine(), "dim": args.dim, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "eval_memory_quick" if args.quick else "eval_memory"
    (args.out / f"{stem}.json").write_text(json.dumps(out, indent=2))
    (args.out / f"{stem}.md").write_text(_markdown(out))
    print(_markdown(out))


def _markdown(out: dict) -> str:
    lines = [f"# Evaluation peak memory vs episode count ({machine_line(out['machine'])})", "",
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


if __name__ == "__main__":
    main()
