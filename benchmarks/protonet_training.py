"""Episodic ProtoNet training throughput: protobench vs learn2learn's ProtoNet example loop.

Same backbone (protobench's Conv-4, fresh weights from the same seed), same data tensor
(Omniglot 28x28 when ``--data-root`` holds the real files, else digits 28x28), same
optimiser (Adam 1e-3) and episode shape:

- protobench: ``ProtoNet.fit`` (all episode indices drawn up front by the vectorised
  sampler, one gather per step, matmul-form distances), float32 and, as a separate row,
  its bfloat16 autocast option (``amp``);
- learn2learn 0.2: the loop of its ``examples/vision/protonet_miniimagenet.py``:
  ``TaskDataset(NWays, KShots, LoadData, RemapLabels, ConsecutiveLabels)`` behind a
  ``DataLoader``, ``next(iter(loader))`` per step, sort by label, numpy support mask,
  broadcast pairwise distances, cross-entropy, Adam step.

Runs are interleaved; we report median episodes/s over ``--repeats`` runs of ``--steps``
steps each, and the ratio.

    python -m benchmarks.protonet_training --data-root ../shared/data/omniglot
    python -m benchmarks.protonet_training --quick
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._common import FeatureSet
from benchmarks._harness import Benchmark, main
from protobench.backbones import build_backbone
from protobench.datasets import load_dataset
from protobench.datasets.base import LabeledData
from protobench.methods.protonet import ProtoNet

CPU = torch.device("cpu")


def load(data_root: Path | None) -> LabeledData:
    if data_root is not None and (data_root / "images_background_small1.zip").exists():
        data = load_dataset("omniglot", "train", str(data_root), image_size=28,
                            rotations="none")
    else:
        data = load_dataset("digits", "all", image_size=28)
    x = data.get(torch.arange(len(data)))  # one in-memory tensor for both libraries
    return LabeledData(x, data.labels, data.class_names, data.name, data.split)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours(data: LabeledData, ways: int, shots: int, queries: int, steps: int, amp: bool,
         device: torch.device = CPU) -> float:
    method = ProtoNet(backbone="conv4", train_ways=ways, train_shots=shots,
                      train_queries=queries, train_steps=steps, amp=amp, seed=0)
    t = time.perf_counter()
    method.fit(data, device, progress=False)
    _sync(device)
    return steps / (time.perf_counter() - t)


def _pairwise_distances_logits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    n, m = a.shape[0], b.shape[0]
    return -((a.unsqueeze(1).expand(n, m, -1) - b.unsqueeze(0).expand(n, m, -1)) ** 2).sum(dim=2)


def learn2learn(data: LabeledData, ways: int, shots: int, queries: int, steps: int,
                amp: bool = False, device: torch.device = CPU) -> float:
    import learn2learn as l2l

    random.seed(0)
    torch.manual_seed(0)
    model = build_backbone("conv4", tuple(data.x.shape[1:])).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    meta = l2l.data.MetaDataset(FeatureSet(data))  # (x_i, y_i) items, any x shape
    transforms = [l2l.data.transforms.NWays(meta, ways),
                  l2l.data.transforms.KShots(meta, queries + shots),
                  l2l.data.transforms.LoadData(meta), l2l.data.transforms.RemapLabels(meta),
                  l2l.data.transforms.ConsecutiveLabels(meta)]
    tasks = l2l.data.TaskDataset(meta, task_transforms=transforms, num_tasks=-1)
    loader = torch.utils.data.DataLoader(tasks, shuffle=True)
    model.train()
    t = time.perf_counter()
    for _ in range(steps):
        batch = next(iter(loader))
        x, y = batch
        x, y = x.to(device), y.to(device)  # as the example's fast_adapt
        sort = torch.sort(y)
        x, y = x.squeeze(0)[sort.indices].squeeze(0), y.squeeze(0)[sort.indices].squeeze(0)
        z = model(x)
        support_mask = np.zeros(x.size(0), dtype=bool)
        selection = np.arange(ways) * (shots + queries)
        for offset in range(shots):
            support_mask[selection + offset] = True
        query_mask = torch.from_numpy(~support_mask)
        support_mask = torch.from_numpy(support_mask)
        labels = y[query_mask].long()
        support = z[support_mask].reshape(ways, shots, -1).mean(dim=1)
        logits = _pairwise_distances_logits(z[query_mask], support)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    _sync(device)
    return steps / (time.perf_counter() - t)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--data-root", type=Path, default=None,
                    help="folder with the Omniglot zips (else digits)")
    ap.add_argument("--settings", default="5x5x15,20x1x5", help="WAYSxSHOTSxQUERIES,...")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (both libraries)")


def run(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    if quick:
        args.repeats, args.steps, args.settings = 1, 3, "5x1x5"
    data, device = load(args.data_root), torch.device(args.device)
    out: dict[str, Any] = {
        "data": f"{data.name}/{data.split} ({data.num_classes} classes, {len(data)} images, "
                f"{tuple(data.x.shape[1:])})",
        "steps": args.steps, "repeats": args.repeats, "device": str(device), "rows": []}
    runners = {"protobench": lambda *a: ours(*a, amp=False, device=device),
               "protobench-bf16": lambda *a: ours(*a, amp=True, device=device),
               "learn2learn": lambda *a: learn2learn(*a, device=device)}
    for setting in args.settings.split(","):
        ways, shots, queries = (int(v) for v in setting.split("x"))
        rates: dict[str, list[float]] = {k: [] for k in runners}
        for fn in runners.values():  # warm-up (thread pools, allocator)
            fn(data, ways, shots, queries, 2)
        for _ in range(args.repeats):
            for name, fn in runners.items():
                rates[name].append(fn(data, ways, shots, queries, args.steps))
        med = {k: statistics.median(v) for k, v in rates.items()}
        row = {"ways": ways, "shots": shots, "queries": queries, "runs": rates,
               "median_eps_per_s": med,
               "x_learn2learn": med["protobench"] / med["learn2learn"],
               "x_learn2learn_bf16": med["protobench-bf16"] / med["learn2learn"]}
        out["rows"].append(row)
        print(row, flush=True)
    return out


def markdown(out: dict) -> str:
    lines = ["# Episodic ProtoNet training", "",
             f"Conv-4 on {out['data']}; median of {out['repeats']} runs of {out['steps']} "
             "steps each (interleaved), Adam 1e-3, episodes/s.", "",
             "| setting | protobench fp32 | protobench bf16 | learn2learn | x l2l (fp32) "
             "| x l2l (bf16) |", "|---|---|---|---|---|---|"]
    for r in out["rows"]:
        m = r["median_eps_per_s"]
        lines.append(f"| {r['ways']}w{r['shots']}s{r['queries']}q | {m['protobench']:.1f} "
                     f"| {m['protobench-bf16']:.1f} | {m['learn2learn']:.1f} "
                     f"| {r['x_learn2learn']:.2f}x | {r['x_learn2learn_bf16']:.2f}x |")
    return "\n".join(lines) + "\n"


BENCHMARK = Benchmark("protonet_training", __doc__, run, markdown, add_arguments)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
