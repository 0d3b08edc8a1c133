"""Frozen-feature episode throughput: the gather-only bound, protobench, easyfsl and
learn2learn, same process, same features.

All evaluate nearest-prototype (ProtoNet) accuracy on the same cached features
(Gaussian class blobs, 20 classes x 600 samples, like a miniImageNet test split):

- gather-only bound: the episodes' support and query rows gathered by ``index_select``
  into a reused buffer, chunk by chunk, and nothing scored: what any method that
  materialises the episodes pays before its first FLOP;
- protobench: ``evaluate_episodes`` on sampled episodes (the fused kernel of
  ``protobench.evaluation.fused``), the same with ``kernel="torch"`` (the batched gather
  path it replaced), and ``evaluate_spec`` (sampling streamed, included in the time);
- easyfsl 1.5: ``TaskSampler`` + ``DataLoader(batch_sampler=..., collate_fn=
  episodic_collate_fn)`` + ``PrototypicalNetworks(nn.Identity())`` with
  ``process_support_set`` / ``forward``, the loop of ``easyfsl.utils.evaluate``. Its sampler
  calls ``Sampler.__init__(data_source=None)``, which torch >= 2.10 rejects; the benchmark
  constructs it with that keyword dropped (the library is otherwise unchanged);
- learn2learn 0.2: ``MetaDataset`` + ``TaskDataset`` with ``NWays, KShots, LoadData,
  RemapLabels, ConsecutiveLabels`` and the support/query split and distance code of its
  ``protonet_miniimagenet.py`` example.

easyfsl's and learn2learn's loops sample as they go, so they compare with protobench's
streamed row (sampling included); the gather bound compares with the evaluation of
sampled episodes. Each entry runs enough episodes to last ``--min-seconds``; then the
entries run interleaved, ``--repeats`` times, and we report the median episodes/s and the
ratios. Sampler-only throughput is measured the same way. Results:
``benchmarks/results/fewshot_throughput{,_quick}.{json,md}``.

    python -m benchmarks.fewshot_throughput            # full: D=512 and 640, 5w1s and 5w5s
    python -m benchmarks.fewshot_throughput --quick    # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks._common import FeatureSet
from benchmarks._harness import Benchmark, main
from protobench.datasets.base import LabeledData
from protobench.episodic import EpisodeList, EpisodeSpec, make_episodes
from protobench.evaluation import evaluate_episodes, evaluate_spec
from protobench.evaluation.episodes import CPU_BUDGET

CLASSES, PER_CLASS, QUERIES = 20, 600, 15


def make_data(dim: int, seed: int = 0) -> LabeledData:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(CLASSES, dim, generator=g)
    labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    x = means[labels] + 4.0 * torch.randn(len(labels), dim, generator=g)
    return LabeledData(x, labels, tuple(f"c{i}" for i in range(CLASSES)), "blobs", "test")


# --- protobench and the gather-only bound (on sampled episodes) ---------------------------
def gather_only(x: torch.Tensor, eps: EpisodeList) -> float:
    """Every episode's rows gathered into one reused buffer, budget-sized chunks, no scoring."""
    idx = eps.indices
    E, N, S = idx.shape
    chunk = max(1, CPU_BUDGET // (N * S * x.shape[1] * x.element_size()))
    buf = x.new_empty(chunk * N * S, x.shape[1])
    for start in range(0, E, chunk):
        rows = idx[start:start + chunk].reshape(-1)
        torch.index_select(x, 0, rows, out=buf[:len(rows)])
    return float("nan")


def fused(x: torch.Tensor, eps: EpisodeList) -> float:
    return evaluate_episodes(x, eps).mean


def batched(x: torch.Tensor, eps: EpisodeList) -> float:
    return evaluate_episodes(x, eps, kernel="torch").mean


def same_accuracies(data: LabeledData, ways: int, shots: int, n: int = 2000) -> bool:
    """The fused kernel's per-episode accuracies equal the batched path's on one set."""
    eps = make_episodes(data, EpisodeSpec(ways, shots, QUERIES, n, 123))
    return torch.equal(evaluate_episodes(data.x, eps).accuracies,
                       evaluate_episodes(data.x, eps, kernel="torch").accuracies)


def sampled(fn: Callable[[torch.Tensor, EpisodeList], float]) -> Callable[..., Any]:
    """An entry timed on episodes sampled before the clock starts."""
    def prepare(data: LabeledData, ways: int, shots: int, n: int, seed: int):
        eps = make_episodes(data, EpisodeSpec(ways, shots, QUERIES, n, seed))
        return lambda: fn(data.x, eps)
    return prepare


# --- protobench, sampling included --------------------------------------------------------
def ours(data: LabeledData, ways: int, shots: int, n: int, seed: int) -> float:
    return evaluate_spec(data.x, data, EpisodeSpec(ways, shots, QUERIES, n, seed)).mean


def ours_sampler(data: LabeledData, ways: int, shots: int, n: int, seed: int) -> float:
    make_episodes(data, EpisodeSpec(ways, shots, QUERIES, n, seed))
    return float("nan")


# --- easyfsl ------------------------------------------------------------------------------
@contextmanager
def _sampler_accepts_data_source():
    """easyfsl 1.5 passes data_source= to Sampler.__init__, removed in torch 2.10."""
    original = torch.utils.data.Sampler.__init__

    def init(self, *args, data_source=None, **kwargs):
        original(self, *args, **kwargs)

    torch.utils.data.Sampler.__init__ = init
    try:
        yield
    finally:
        torch.utils.data.Sampler.__init__ = original


def _easyfsl_sampler(data: LabeledData, ways: int, shots: int, n: int, seed: int):
    import random

    from easyfsl.samplers import TaskSampler

    random.seed(seed)
    with _sampler_accepts_data_source():
        return TaskSampler(FeatureSet(data), n_way=ways, n_shot=shots, n_query=QUERIES,
                           n_tasks=n)


def easyfsl(data: LabeledData, ways: int, shots: int, n: int, seed: int) -> float:
    from easyfsl.methods import PrototypicalNetworks

    model = PrototypicalNetworks(nn.Identity()).eval()
    correct = total = 0
    sampler = _easyfsl_sampler(data, ways, shots, n, seed)
    loader = torch.utils.data.DataLoader(FeatureSet(data), batch_sampler=sampler,
                                         collate_fn=sampler.episodic_collate_fn, num_workers=0)
    with torch.no_grad():
        for s, sl, q, ql, _ in loader:
            model.process_support_set(s, sl)
            correct += int((model(q).argmax(1) == ql).sum())
            total += len(ql)
    return correct / total


def easyfsl_sampler(data: LabeledData, ways: int, shots: int, n: int, seed: int) -> float:
    for _ in _easyfsl_sampler(data, ways, shots, n, seed):
        pass
    return float("nan")


# --- learn2learn --------------------------------------------------------------------------
def _l2l_taskset(data: LabeledData, ways: int, shots: int, load: bool = True):
    import learn2learn as l2l

    meta = l2l.data.MetaDataset(FeatureSet(data))
    tf = [l2l.data.transforms.NWays(meta, ways),
          l2l.data.transforms.KShots(meta, shots + QUERIES)]
    if load:
        tf += [l2l.data.transforms.LoadData(meta), l2l.data.transforms.RemapLabels(meta),
               l2l.data.transforms.ConsecutiveLabels(meta)]
    return l2l.data.TaskDataset(meta, task_transforms=tf, num_tasks=-1)


def learn2learn(data: LabeledData, ways: int, shots: int, n: int, seed: int) -> float:
    import random

    random.seed(seed)
    taskset = _l2l_taskset(data, ways, shots)
    accs = []
    for _ in range(n):
        x, y = taskset.sample()
        # protonet_miniimagenet.py: sort by label, first `shots` of each class are support
        sort = torch.sort(y)
        x, y = x[sort.indices], sort.values
        mask = np.zeros(x.size(0), dtype=bool)
        selection = np.arange(ways) * (shots + QUERIES)
        for offset in range(shots):
            mask[selection + offset] = True
        mask = torch.from_numpy(mask)
        support = x[mask].reshape(ways, shots, -1).mean(dim=1)
        query, labels = x[~mask], y[~mask].long()
        logits = -((query.unsqueeze(1) - support.unsqueeze(0)) ** 2).sum(dim=2)
        accs.append((logits.argmax(1) == labels).float().mean().item())
    return sum(accs) / len(accs)


def learn2learn_sampler(data: LabeledData, ways: int, shots: int, n: int, seed: int) -> float:
    import random

    random.seed(seed)
    taskset = _l2l_taskset(data, ways, shots, load=False)
    for _ in range(n):
        taskset.sample_task_description()
    return float("nan")


# --- harness ------------------------------------------------------------------------------
def timed(fn: Callable[..., float], data, ways, shots, min_seconds, repeats, seed, start=64):
    """Episodes/s medians of one entry run alone (the GPU suite's form)."""
    return interleaved({"fn": live(fn)}, data, ways, shots, min_seconds, repeats, seed,
                       start)["fn"]


def live(fn: Callable[..., float]) -> Callable[..., Any]:
    """An entry whose whole run is timed (sampling included)."""
    return lambda data, ways, shots, n, seed: (lambda: fn(data, ways, shots, n, seed))


def interleaved(entries: dict[str, Callable[..., Any]], data, ways, shots, min_seconds,
                repeats, seed, start=64) -> dict[str, Any]:
    """Episodes/s of each entry: its episode count grows until one run lasts
    ``min_seconds``, then the entries run in turn ``repeats`` times (so a slow spell of the
    machine hits all of them); median of the runs. An entry is ``prepare(data, ways, shots,
    n, seed) -> run``; only ``run()`` is timed."""
    counts, out = {}, {}
    for name, prepare in entries.items():
        prepare(data, ways, shots, 16, seed)()  # warm-up, untimed: JIT compilation, caches
        n = start
        while True:
            run = prepare(data, ways, shots, n, seed)
            t = time.perf_counter()
            run()
            dt = time.perf_counter() - t
            if dt >= min_seconds or n >= 50_000_000:
                break
            n = int(n * min(100.0, max(2.0, 1.2 * min_seconds / max(dt, 1e-6))))
        counts[name] = n
        out[name] = {"episodes": n, "runs": []}
    for r in range(repeats):
        for name, prepare in entries.items():
            run = prepare(data, ways, shots, counts[name], seed + r)
            t = time.perf_counter()
            acc = run()
            out[name]["runs"].append(counts[name] / (time.perf_counter() - t))
            out[name]["accuracy"] = acc if r == 0 else out[name]["accuracy"]
    for entry in out.values():
        entry["median_eps_per_s"] = statistics.median(entry["runs"])
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--dims", default="512,640")


EVALUATION = {"gather_only": sampled(gather_only), "protobench": sampled(fused),
              "protobench_batched": sampled(batched), "protobench_streamed": live(ours),
              "easyfsl": live(easyfsl), "learn2learn": live(learn2learn)}
SAMPLER = {"protobench": live(ours_sampler), "easyfsl": live(easyfsl_sampler),
           "learn2learn": live(learn2learn_sampler)}
RATIOS = {  # ratio name -> (numerator, denominator)
    "of_gather_bound": ("protobench", "gather_only"),
    "batched_of_gather_bound": ("protobench_batched", "gather_only"),
    "x_batched": ("protobench", "protobench_batched"),
    "x_easyfsl": ("protobench_streamed", "easyfsl"),
    "x_learn2learn": ("protobench_streamed", "learn2learn")}


def run(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    if quick:
        args.repeats, args.min_seconds, args.dims = 1, 0.2, "640"
    out: dict[str, Any] = {"repeats": args.repeats, "min_seconds": args.min_seconds,
                           "threads": torch.get_num_threads(), "rows": []}
    for dim in [int(d) for d in args.dims.split(",")]:
        data = make_data(dim)
        for ways, shots in ((5, 1), (5, 5)):
            for kind, entries in (("evaluation", EVALUATION), ("sampler", SAMPLER)):
                row = {"dim": dim, "ways": ways, "shots": shots, "queries": QUERIES,
                       "kind": kind, **interleaved(entries, data, ways, shots,
                                                   args.min_seconds, args.repeats, seed=0)}
                rate = {k: row[k]["median_eps_per_s"] for k in entries}
                if kind == "evaluation":
                    row.update({k: rate[a] / rate[b] for k, (a, b) in RATIOS.items()})
                    row["fused_equals_batched"] = same_accuracies(data, ways, shots)
                else:
                    row.update({f"x_{k}": rate["protobench"] / rate[k]
                                for k in ("easyfsl", "learn2learn")})
                out["rows"].append(row)
                print(_line(row, entries), flush=True)
    return out


def _line(row: dict, entries) -> str:
    return (f"D={row['dim']} {row['ways']}w{row['shots']}s {row['kind']}: "
            + ", ".join(f"{k} {row[k]['median_eps_per_s']:.0f} eps/s" for k in entries))


def _acc(entry: dict) -> str:
    a = entry["accuracy"]
    return "-" if a != a else f"{100 * a:.1f}"


def markdown(out: dict) -> str:
    rows = [r for r in out["rows"] if r["kind"] == "evaluation"]
    lines = ["# Frozen-feature episodes/s", "",
             f"Median of {out['repeats']} interleaved runs, each at least {out['min_seconds']} s;"
             f" {out.get('threads', '?')} threads; {QUERIES} queries per class; {CLASSES} "
             f"classes x {PER_CLASS} samples. Columns 3-6 score sampled episodes (sampling not "
             "timed); the streamed protobench row and both libraries sample as they go. "
             "Per-episode accuracies of the fused kernel equal the batched path's on 2000 "
             "shared episodes: " + ("yes" if all(r["fused_equals_batched"] for r in rows)
                                    else "NO") + ".", "",
             "| D | setting | gather-only bound | protobench (fused) | % of bound "
             "| batched path | fused / batched | protobench streamed | easyfsl | learn2learn "
             "| x easyfsl | x learn2learn | accuracy (fused / batched / easyfsl / l2l) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def rate(k, r=r):
            return f"{r[k]['median_eps_per_s']:,.0f}"
        acc = " / ".join(_acc(r[k]) for k in ("protobench", "protobench_batched", "easyfsl",
                                              "learn2learn"))
        lines.append(
            f"| {r['dim']} | {r['ways']}w{r['shots']}s | {rate('gather_only')} "
            f"| {rate('protobench')} | {100 * r['of_gather_bound']:.0f}% "
            f"| {rate('protobench_batched')} | {r['x_batched']:.2f}x "
            f"| {rate('protobench_streamed')} | {rate('easyfsl')} | {rate('learn2learn')} "
            f"| {r['x_easyfsl']:,.0f}x | {r['x_learn2learn']:,.0f}x | {acc} |")
    lines += ["", "Sampler only (episodes/s):", "",
              "| D | setting | protobench | easyfsl | learn2learn | x easyfsl | x learn2learn |",
              "|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        if r["kind"] == "sampler":
            lines.append(
                f"| {r['dim']} | {r['ways']}w{r['shots']}s "
                + "".join(f"| {r[k]['median_eps_per_s']:,.0f} "
                          for k in ("protobench", "easyfsl", "learn2learn"))
                + f"| {r['x_easyfsl']:,.0f}x | {r['x_learn2learn']:,.0f}x |")
    return "\n".join(lines) + "\n"


BENCHMARK = Benchmark("fewshot_throughput", __doc__, run, markdown, add_arguments)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
