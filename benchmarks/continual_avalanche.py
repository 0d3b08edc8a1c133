"""One class-incremental stream through our loop, a plain PyTorch loop and avalanche 0.6.

The stream is ``digits`` in 5 experiences of 2 classes (seeded class order, 20% of each
class held out for test; 8x8 images and the ``mlp`` backbone by default). Every runner
trains the same model (the backbone plus a linear head over the classes seen so far, same
initial weights from the seed), with the same optimiser (Adam, lr 1e-3, weight decay 2e-4,
a fresh optimiser and ``StepLR(45, 0.1)`` at every experience), loss (cross-entropy on
``logits / 0.1``), batch size and epochs, and evaluates on the test data of every
experience seen so far after each experience:

- ``protobench``: ``run_stream`` with the ``finetune`` method;
- ``plain``: the same training written as a bare PyTorch loop, with the same random
  draws (its accuracy matrix should equal ours); the reference for "our loop adds no
  overhead";
- ``avalanche-naive`` / ``avalanche-lwf``: avalanche's ``Naive`` and ``LwF`` (alpha 1,
  temperature 2) strategies on our stream exported by
  :func:`protobench.continual.avalanche.to_avalanche`, with avalanche's
  ``IncrementalClassifier`` as the growing head, ``LRSchedulerPlugin`` for the schedule,
  the optimiser state reset at every experience, and an ``EvaluationPlugin`` that only
  computes per-experience accuracy (no loggers). Importing avalanche and exporting the
  stream are timed apart. ``--backbone conv4 --image-size 28`` gives a compute-bound
  variant (the default 8x8 MLP makes any per-batch overhead visible).

Runners are interleaved, after one untimed warm-up each; we report the median over
``--repeats`` of the final accuracy, the average incremental accuracy and the wall time
(training + evaluation), and each runner's time relative to the plain loop and to ours.

Results: ``benchmarks/results/continual_avalanche{,_quick}.{json,md}``.

    python -m benchmarks.continual_avalanche                 # full: 5 repeats
    python -m benchmarks.continual_avalanche --quick         # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks._harness import Benchmark, main
from protobench.backbones import build_backbone
from protobench.continual.metrics import summarize
from protobench.continual.stream import ClassIncrementalStream, StreamSpec, stream_from_dataset
from protobench.methods import build_method
from protobench.tasks.continual_run import experience_seed, run_stream

CPU = torch.device("cpu")
LR, WEIGHT_DECAY, LR_STEP, LR_GAMMA, TEMPERATURE = 1e-3, 2e-4, 45, 0.1, 0.1
EVAL_BATCH = 512


@dataclass(frozen=True)
class Setup:
    stream: ClassIncrementalStream
    backbone: str
    epochs: int
    batch_size: int
    seed: int
    lwf_alpha: float = 1.0
    lwf_temperature: float = 2.0
    device: torch.device = CPU  # ours and plain only (benchmarks/gpu_suite.py); avalanche: CPU


def _result(acc: torch.Tensor, stream: ClassIncrementalStream, seconds: float) -> dict[str, Any]:
    counts = [len(e.test_indices) for e in stream]
    m = summarize(acc, None, counts)
    return {"seconds": seconds, "final_accuracy": m["final_accuracy"],
            "average_incremental_accuracy": m["average_incremental_accuracy"],
            "average_forgetting": m["average_forgetting"],
            "accuracy_matrix": [[None if v != v else round(v, 4) for v in r]
                                for r in acc.tolist()]}


def ours(s: Setup) -> dict[str, Any]:
    method = build_method("finetune", backbone=s.backbone, epochs=s.epochs,
                          batch_size=s.batch_size, lr=LR, weight_decay=WEIGHT_DECAY,
                          lr_step=LR_STEP, lr_gamma=LR_GAMMA, temperature=TEMPERATURE,
                          seed=s.seed)
    t = time.perf_counter()
    res = run_stream(method, s.stream, s.device, seed=s.seed, progress=False,
                     eval_batch_size=EVAL_BATCH)
    return _result(res.accuracy, s.stream, time.perf_counter() - t)


def plain(s: Setup) -> dict[str, Any]:
    """The same training as a bare loop (same random draws as ``ours``)."""
    stream, dev = s.stream, s.device
    n = len(stream)
    acc = torch.full((n, n), float("nan"), dtype=torch.float64)
    t0 = time.perf_counter()
    encoder: nn.Module | None = None
    head: nn.Linear | None = None
    for t in range(n):
        exp = stream.experience(t)
        torch.manual_seed(experience_seed(s.seed, t))
        x = stream.train.x[exp.train_indices].to(dev)
        y = stream.train.labels[exp.train_indices].to(dev)
        if encoder is None:
            torch.manual_seed(s.seed)
            encoder = build_backbone(s.backbone, tuple(x.shape[1:])).to(dev)
        seen = stream.offsets[t + 1]
        new = nn.Linear(encoder.out_dim, seen).to(dev)
        if head is not None:
            with torch.no_grad():
                new.weight[:head.out_features] = head.weight
                new.bias[:head.out_features] = head.bias
        head = new
        encoder.train()
        head.train()
        opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=LR,
                               weight_decay=WEIGHT_DECAY)
        sched = torch.optim.lr_scheduler.StepLR(opt, LR_STEP, LR_GAMMA)
        gen = torch.Generator().manual_seed(experience_seed(s.seed, t))
        for _ in range(s.epochs):
            order = torch.randperm(len(y), generator=gen).to(dev)
            for start in range(0, len(y), s.batch_size):
                idx = order[start:start + s.batch_size]
                if len(idx) > 1:
                    loss = F.cross_entropy(head(encoder(x[idx])) / TEMPERATURE, y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            sched.step()
        encoder.eval()
        head.eval()
        with torch.no_grad():
            for j in range(t + 1):
                idx = stream.experience(j).test_indices
                xt, yt = stream.test.x[idx].to(dev), stream.test.labels[idx].to(dev)
                pred = torch.cat([head(encoder(xt[i:i + EVAL_BATCH])).argmax(1)
                                  for i in range(0, len(yt), EVAL_BATCH)])
                acc[t, j] = (pred == yt).double().mean().item()
    return _result(acc, stream, time.perf_counter() - t0)


def avalanche_runner(strategy_name: str) -> Callable[[Setup, Any], dict[str, Any]]:
    def run(s: Setup, benchmark: Any) -> dict[str, Any]:
        from avalanche.evaluation.metrics import accuracy_metrics
        from avalanche.models import IncrementalClassifier
        from avalanche.training.plugins import EvaluationPlugin, LRSchedulerPlugin
        from avalanche.training.supervised import LwF, Naive

        stream = s.stream
        n = len(stream)
        t0 = time.perf_counter()
        torch.manual_seed(s.seed)  # the same initial encoder and first head as ours
        encoder = build_backbone(s.backbone, tuple(stream.train.x.shape[1:]))
        model = nn.Sequential(encoder, IncrementalClassifier(encoder.out_dim, stream.sizes[0]))
        opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        common = dict(
            model=model, optimizer=opt,
            criterion=lambda logits, y: F.cross_entropy(logits / TEMPERATURE, y),
            train_mb_size=s.batch_size, train_epochs=s.epochs, eval_mb_size=EVAL_BATCH,
            device=CPU,
            plugins=[LRSchedulerPlugin(torch.optim.lr_scheduler.StepLR(opt, LR_STEP, LR_GAMMA),
                                       reset_scheduler=True, reset_lr=True)],
            evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]))
        if strategy_name == "lwf":
            strategy = LwF(alpha=s.lwf_alpha, temperature=s.lwf_temperature, **common)
        else:
            strategy = Naive(**common)
        acc = torch.full((n, n), float("nan"), dtype=torch.float64)
        for t, exp in enumerate(benchmark.train_stream):
            torch.manual_seed(experience_seed(s.seed, t))
            strategy.train(exp, reset_optimizer_state=True)
            res = strategy.eval(benchmark.test_stream[:t + 1])
            for j in range(t + 1):
                key = [k for k in res if k.startswith("Top1_Acc_Exp/eval_phase/test_stream")
                       and k.endswith(f"Exp{j:03d}")]
                acc[t, j] = float(res[key[0]])
        return _result(acc, stream, time.perf_counter() - t0)

    return run


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=100, help="epochs per experience")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backbone", default="mlp")
    ap.add_argument("--image-size", type=int, default=8, help="digits resized to this size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lwf-alpha", type=float, default=1.0)
    ap.add_argument("--lwf-temperature", type=float, default=2.0)


def run(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    if quick:  # smoke run: 1 epoch, 1 repeat
        args.repeats, args.epochs = 1, 1
    warnings.filterwarnings("ignore", module="avalanche")
    stream = stream_from_dataset("digits", StreamSpec(5, seed=args.seed),
                                 image_size=args.image_size)
    setup = Setup(stream, args.backbone, args.epochs, args.batch_size, args.seed,
                  args.lwf_alpha, args.lwf_temperature)
    t = time.perf_counter()
    import avalanche.training  # noqa: F401  (lazily, and timed apart: it is slow to import)

    import_s = time.perf_counter() - t
    from protobench.continual.avalanche import to_avalanche

    t = time.perf_counter()
    benchmark = to_avalanche(stream)
    export_s = time.perf_counter() - t
    runners: dict[str, Callable[[Setup], dict[str, Any]]] = {
        "protobench": ours, "plain": plain,
        "avalanche-naive": lambda s: avalanche_runner("naive")(s, benchmark),
        "avalanche-lwf": lambda s: avalanche_runner("lwf")(s, benchmark)}
    warm = Setup(stream, args.backbone, 1, args.batch_size, args.seed)
    for fn in runners.values():  # warm-up: lazy initialisations, not timed
        fn(warm)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in runners}
    for _ in range(args.repeats):
        for name, fn in runners.items():
            runs[name].append(fn(setup))
            print(f"{name:16s} final {runs[name][-1]['final_accuracy']:.3f} "
                  f"({runs[name][-1]['seconds']:.2f} s)", flush=True)
    rows = {}
    for name, rs in runs.items():
        rows[name] = {k: statistics.median(r[k] for r in rs)
                      for k in ("seconds", "final_accuracy", "average_incremental_accuracy",
                                "average_forgetting")}
        rows[name]["runs_seconds"] = [r["seconds"] for r in rs]
        rows[name]["accuracy_matrix"] = rs[0]["accuracy_matrix"]
    for r in rows.values():
        r["time_vs_plain"] = r["seconds"] / rows["plain"]["seconds"]
        r["time_vs_protobench"] = r["seconds"] / rows["protobench"]["seconds"]
    return {"dataset": "digits",
            "stream": {"experiences": len(stream), "sizes": list(stream.sizes),
                       "train_samples": len(stream.train), "test_samples": len(stream.test),
                       "input_shape": list(stream.train.x.shape[1:])},
            "backbone": args.backbone, "epochs": args.epochs, "batch_size": args.batch_size,
            "seed": args.seed, "repeats": args.repeats, "lwf_alpha": args.lwf_alpha,
            "lwf_temperature": args.lwf_temperature, "avalanche_import_seconds": import_s,
            "export_seconds": export_s,
            "same_matrix_as_plain": runs["protobench"][0]["accuracy_matrix"]
            == runs["plain"][0]["accuracy_matrix"],
            "rows": rows}


def markdown(out: dict[str, Any]) -> str:
    s = out["stream"]
    lines = ["# One stream through protobench, a plain loop and avalanche", "",
             f"digits, {s['experiences']} experiences of {s['sizes'][0]} classes, "
             f"{out['backbone']} on {tuple(s['input_shape'])}, {s['train_samples']} train / "
             f"{s['test_samples']} test images; {out['epochs']} epochs per experience, batch "
             f"{out['batch_size']}, Adam 1e-3, seed {out['seed']}. Median of "
             f"{out['repeats']} interleaved runs; time = training + evaluation after every "
             f"experience. LwF: alpha {out['lwf_alpha']}, temperature {out['lwf_temperature']}. "
             f"Not included: importing avalanche ({out['avalanche_import_seconds']:.1f} s) and "
             f"exporting the stream to it ({out['export_seconds']:.2f} s).", "",
             "| runner | final acc. % | AIA % | forgetting % | time (s) | x plain loop "
             "| x protobench |", "|---|---|---|---|---|---|---|"]
    for name, r in out["rows"].items():
        lines.append(f"| {name} | {100 * r['final_accuracy']:.1f} "
                     f"| {100 * r['average_incremental_accuracy']:.1f} "
                     f"| {100 * r['average_forgetting']:.1f} | {r['seconds']:.2f} "
                     f"| {r['time_vs_plain']:.2f}x | {r['time_vs_protobench']:.2f}x |")
    lines += ["", f"protobench and the plain loop give the same accuracy matrix: "
              f"{'yes' if out['same_matrix_as_plain'] else 'no'}."]
    return "\n".join(lines) + "\n"


BENCHMARK = Benchmark("continual_avalanche", __doc__, run, markdown, add_arguments)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
