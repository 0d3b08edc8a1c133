"""Frozen-feature episode throughput: protobench vs easyfsl and learn2learn, same process.

All three evaluate nearest-prototype (ProtoNet) accuracy on the same cached features
(Gaussian class blobs, 20 classes x 600 samples, like a miniImageNet test split):

- protobench: ``make_episodes`` (one ``[E, N, K+Q]`` index tensor) + ``evaluate_episodes``
  (batched gather + matmul-form distances), sampling time included;
- easyfsl 1.5: ``TaskSampler`` + ``DataLoader(batch_sampler=..., collate_fn=
  episodic_collate_fn)`` + ``PrototypicalNetworks(nn.Identity())`` with
  ``process_support_set`` / ``forward``, the loop of ``easyfsl.utils.evaluate``. Its sampler
  calls ``Sampler.__init__(data_source=None)``, which torch >= 2.10 rejects; the benchmark
  constructs it with that keyword dropped (the library is otherwise unchanged);
- learn2learn 0.2: ``MetaDataset`` + ``TaskDataset`` with ``NWays, KShots, LoadData,
  RemapLabels, ConsecutiveLabels`` and the support/query split and distance code of its
  ``protonet_miniimagenet.py`` example.

Each library runs enough episodes to last ``--min-seconds``; we report the median
episodes/s over ``--repeats`` runs and the ratio to each competitor. Sampler-only throughput
is measured the same way. Results: ``benchmarks/results/fewshot_throughput{,_quick}.{json,md}``.

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
from protobench.episodic import EpisodeSpec, make_episodes
from protobench.evaluation import evaluate_episodes

CLASSES, PER_CLASS, QUERIES = 20, 600, 15


def make_data(dim: int, seed: int = 0) -> LabeledData:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(CLASSES, dim, generator=g)
    labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    x = means[labels] + 4.0 * torch.randn(len(labels), dim, generator=g)
    return LabeledData(x, labels, tuple(f"c{i}" for i in range(CLASSES)), "blobs", "test")


# --- protobench ---------------------------------------------------------------------------
def ours(data: LabeledData, ways: int, shots: int, n: int, seed: int) -> float:
    eps = make_episodes(data, EpisodeSpec(ways, shots, QUERIES, n, seed))
    return evaluate_episodes(data.x, eps).mean


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
    """Episodes/s medians; the episode count grows until one run lasts ``min_seconds``."""
    n = start
    while True:
        t = time.perf_counter()
        acc = fn(data, ways, shots, n, seed)
        dt = time.perf_counter() - t
        if dt >= min_seconds or n >= 50_000_000:
            break
        n = int(n * min(100.0, max(2.0, 1.2 * min_seconds / max(dt, 1e-6))))
    rates = [n / dt]
    for r in range(repeats - 1):
        t = time.perf_counter()
        fn(data, ways, shots, n, seed + r + 1)
        rates.append(n / (time.perf_counter() - t))
    return {"episodes": n, "median_eps_per_s": statistics.median(rates), "runs": rates,
            "accuracy": acc}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=5.0)
    ap.add_argument("--dims", default="512,640")


def run(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    if quick:
        args.repeats, args.min_seconds, args.dims = 1, 0.2, "640"
    libs = {"protobench": (ours, ours_sampler), "easyfsl": (easyfsl, easyfsl_sampler),
            "learn2learn": (learn2learn, learn2learn_sampler)}
    out: dict[str, Any] = {"repeats": args.repeats, "min_seconds": args.min_seconds, "rows": []}
    for dim in [int(d) for d in args.dims.split(",")]:
        data = make_data(dim)
        for ways, shots in ((5, 1), (5, 5)):
            for kind, pos in (("evaluation", 0), ("sampler", 1)):
                row = {"dim": dim, "ways": ways, "shots": shots, "queries": QUERIES,
                       "kind": kind}
                for name, fns in libs.items():
                    row[name] = timed(fns[pos], data, ways, shots, args.min_seconds,
                                      args.repeats, seed=0)
                ours_rate = row["protobench"]["median_eps_per_s"]
                for name in ("easyfsl", "learn2learn"):
                    row[f"x_{name}"] = ours_rate / row[name]["median_eps_per_s"]
                out["rows"].append(row)
                print(_line(row), flush=True)
    return out


def _line(row: dict) -> str:
    return (f"D={row['dim']} {row['ways']}w{row['shots']}s {row['kind']}: "
            + ", ".join(f"{k} {row[k]['median_eps_per_s']:.0f} eps/s"
                        for k in ("protobench", "easyfsl", "learn2learn")))


def markdown(out: dict) -> str:
    lines = ["# Frozen-feature episodes/s", "",
             f"Median of {out['repeats']} runs, each at least {out['min_seconds']} s; "
             f"{QUERIES} queries per class; {CLASSES} classes x {PER_CLASS} samples.", "",
             "| D | setting | measured | protobench | easyfsl | learn2learn | x easyfsl "
             "| x learn2learn | accuracy (ours / easyfsl / l2l) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        acc = " / ".join(f"{100 * r[k]['accuracy']:.1f}" if r[k]["accuracy"] == r[k]["accuracy"]
                         else "-" for k in ("protobench", "easyfsl", "learn2learn"))
        lines.append(
            f"| {r['dim']} | {r['ways']}w{r['shots']}s | {r['kind']} "
            f"| {r['protobench']['median_eps_per_s']:,.0f} "
            f"| {r['easyfsl']['median_eps_per_s']:,.0f} "
            f"| {r['learn2learn']['median_eps_per_s']:,.0f} "
            f"| {r['x_easyfsl']:,.0f}x | {r['x_learn2learn']:,.0f}x | {acc} |")
    return "\n".join(lines) + "\n"


BENCHMARK = Benchmark("fewshot_throughput", __doc__, run, markdown, add_arguments)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
