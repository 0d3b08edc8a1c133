"""Training speed options (issue 16): torch.compile, channels-last and bfloat16 autocast
against today's float32 loop, for ProtoNet episodic training and one continual experience.

Both workloads run the methods' own training code (``ProtoNet.fit``,
``Finetune.train_experience``) with the options of :mod:`protobench.backbones`
(``-p compile=true``, ``-p channels_last=true``, ``-p amp=true``), fresh Conv-4 weights from
seed 0, on Omniglot 28x28 (``images_background_small1``, from ``--data-root``, default
``$PROTOBENCH_DATA/omniglot``; digits 28x28 when the files are absent):

- ``protonet``: ``--ways``-way 1-shot 5-query episodes (the card's 60-way by default),
  ``--steps`` episodes a run; episodes/s;
- ``finetune``: one experience of ``--classes`` characters (all 20 images each), batch 64,
  ``--epochs`` epochs; steps/s.

Variants run interleaved (one run of each in turn), after one untimed warm-up run each
(which pays a compile: its seconds are reported as ``first_run_s``); we report the median
rate of ``--repeats`` runs and its ratio to float32. Exactness, against float32: ``step-1``
= max |output - float32's| / max |float32's| (and the same for the gradient) of one batch
of the workload through fresh Conv-4 weights, before updates let differences grow; after
the run:
``loss diff`` = |training loss of the last steps - float32's| and ``weight diff`` = max |w -
w_float32| over the encoder's learned weights after the run. The largest weight differences
are the biases of the convolutions that feed a BatchNorm: their gradient is ~0 (the
BatchNorm removes them), so Adam turns rounding noise into steps of size lr; they do not
change what the network computes in training. Through a few dozen Adam steps any rounding
difference grows, so the yardstick is the ``float32 (other threads)`` row: today's float32
loop run with another number of CPU threads (untimed; CPU only), not bit-identical either.

    python -m benchmarks.training_speed                  # full run, CPU
    python -m benchmarks.training_speed --device cuda    # on a GPU
    python -m benchmarks.training_speed --quick          # smoke run: tiny, no compile

``measure(device, quick)`` returns the record (the GPU suite calls it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks._harness import Benchmark, UsageError, main
from benchmarks.protonet_training import load
from protobench.backbones import TrainSpeed, build_backbone, speed_up
from protobench.datasets.base import LabeledData
from protobench.methods import ExperienceInfo, build_method
from protobench.utils import resolve_device

VARIANTS: dict[str, dict[str, bool]] = {
    "float32": {},
    "channels_last": {"channels_last": True},
    "bf16": {"amp": True},
    "channels_last+bf16": {"channels_last": True, "amp": True},
    "compile": {"compile": True},
    "compile+channels_last+bf16": {"compile": True, "channels_last": True, "amp": True},
}
QUICK_VARIANTS = ("float32", "channels_last", "bf16")
REFERENCE = "float32"
NOISE = "float32 (other threads)"

Run = Callable[[dict[str, bool]], tuple[float, float, dict[str, torch.Tensor]]]
"""``run(options) -> (rate, training loss, encoder state on the CPU)``."""


def default_root() -> Path:
    return Path(os.environ.get("PROTOBENCH_DATA", Path.home() / ".cache/protobench/data")) \
        / "omniglot"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _state(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's learned weights (BatchNorm running statistics left out) on the CPU."""
    return {k: p.detach().float().cpu() for k, p in encoder.named_parameters()}


def protonet_runner(data: LabeledData, device: torch.device, ways: int, steps: int) -> Run:
    """One ``ProtoNet.fit`` of ``steps`` ``ways``-way 1-shot 5-query episodes."""

    def run(options: dict[str, bool]) -> tuple[float, float, dict[str, torch.Tensor]]:
        method = build_method("protonet", backbone="conv4", train_ways=ways, train_shots=1,
                              train_queries=5, train_steps=steps, seed=0, **options)
        _sync(device)
        t = time.perf_counter()
        stats = method.fit(data, device, progress=False)
        _sync(device)
        return steps / (time.perf_counter() - t), stats["train_loss_last"], \
            _state(method.encoder)

    return run


def finetune_runner(data: LabeledData, device: torch.device, classes: int, epochs: int
                    ) -> Run:
    """One ``finetune`` experience: the first ``classes`` classes, batch 64, ``epochs``."""
    keep = data.labels < classes
    x, y = data.x[keep], data.labels[keep]
    info = ExperienceInfo(0, tuple(range(classes)), 1, seed=0)

    def run(options: dict[str, bool]) -> tuple[float, float, dict[str, torch.Tensor]]:
        method = build_method("finetune", backbone="conv4", epochs=epochs, batch_size=64,
                              seed=0, **options)
        torch.manual_seed(0)
        _sync(device)
        t = time.perf_counter()
        stats = method.train_experience(x, y, info, device, progress=False)
        _sync(device)
        return stats["steps"] / (time.perf_counter() - t), stats["loss_last_epoch"], \
            _state(method.encoder)

    return run


def first_step(x: torch.Tensor, options: dict[str, bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """Output ``[B, D]`` and flat gradient of ``mean(f(x)**2)`` for fresh Conv-4 weights
    (seed 0, training mode) run under ``options``: the numerics of one step, before any
    update lets rounding differences grow."""
    torch.manual_seed(0)
    encoder = build_backbone("conv4", tuple(x.shape[1:])).to(x.device).train()
    with speed_up(encoder, TrainSpeed(**options)) as fast:
        out = fast(x)
        out.float().pow(2).mean().backward()
    grads = torch.cat([p.grad.flatten() for p in encoder.parameters() if p.grad is not None])
    return out.detach().float().cpu(), grads.float().cpu()


def step_exactness(x: torch.Tensor, variants: list[str]) -> dict[str, dict[str, float]]:
    """Per variant: max |output - float32's| / max |float32's| and the same for gradients
    (on CPU also float32 with another thread count, :data:`NOISE`)."""
    ref_out, ref_grad = first_step(x, VARIANTS[REFERENCE])

    def diffs(o: torch.Tensor, g: torch.Tensor) -> dict[str, float]:
        return {"step_output_diff": ((o - ref_out).abs().max() / ref_out.abs().max()).item(),
                "step_grad_diff": ((g - ref_grad).abs().max() / ref_grad.abs().max()).item()}

    out = {name: diffs(*first_step(x, VARIANTS[name])) for name in variants}
    if x.device.type == "cpu":
        threads = torch.get_num_threads()
        torch.set_num_threads(1 if threads > 1 else 2)
        try:
            out[NOISE] = diffs(*first_step(x, VARIANTS[REFERENCE]))
        finally:
            torch.set_num_threads(threads)
    return out


def compare(run: Run, variants: list[str], repeats: int, device: torch.device
            ) -> dict[str, dict[str, Any]]:
    """Per variant: the rates of ``repeats`` interleaved runs, their median, the ratio to
    float32, the warm-up's seconds, and the exactness of the last run against float32's."""
    out: dict[str, dict[str, Any]] = {}
    last: dict[str, tuple[float, dict[str, torch.Tensor]]] = {}
    for name in variants:  # warm-up: thread pools, allocator, compiles
        t = time.perf_counter()
        run(VARIANTS[name])
        out[name] = {"first_run_s": round(time.perf_counter() - t, 2), "runs": []}
    for _ in range(repeats):
        for name in variants:
            rate, loss, state = run(VARIANTS[name])
            out[name]["runs"].append(rate)
            last[name] = (loss, state)
    ref_loss, ref_state = last[REFERENCE]
    for name in variants:
        row = out[name]
        row["median"] = statistics.median(row["runs"])
        row["best"] = max(row["runs"])
        row["x_float32"] = row["median"] / statistics.median(out[REFERENCE]["runs"])
        row.update(exactness(*last[name], ref_loss, ref_state))
    if device.type == "cpu":  # the yardstick: float32 with another thread count
        threads = torch.get_num_threads()
        torch.set_num_threads(1 if threads > 1 else 2)
        try:
            _, loss, state = run(VARIANTS[REFERENCE])
        finally:
            torch.set_num_threads(threads)
        out[NOISE] = {"threads": 1 if threads > 1 else 2,
                      **exactness(loss, state, ref_loss, ref_state)}
    return out


def exactness(loss: float, state: dict[str, torch.Tensor], ref_loss: float,
              ref_state: dict[str, torch.Tensor]) -> dict[str, Any]:
    diffs = {k: (v - ref_state[k]).abs().max().item() for k, v in state.items()}
    worst = max(diffs, key=diffs.__getitem__)
    return {"loss": loss, "loss_diff": abs(loss - ref_loss), "weight_diff": diffs[worst],
            "weight_diff_at": worst}


def measure(device: str | torch.device = "cpu", quick: bool = False, *,
            data_root: Path | None = None, repeats: int = 5, ways: int = 60,
            steps: int = 10, classes: int = 20, epochs: int = 5,
            variants: list[str] | None = None) -> dict[str, Any]:
    """The record of this benchmark on ``device`` (``quick``: tiny sizes, no compile)."""
    device = resolve_device(device)
    if quick:
        repeats, ways, steps, classes, epochs = 1, 5, 2, 2, 1
    names = list(variants or (QUICK_VARIANTS if quick else VARIANTS))
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or REFERENCE not in names:
        raise UsageError(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)} "
                         f"(with {REFERENCE}, the reference)")
    data = load(data_root if data_root is not None else default_root())
    data = LabeledData(data.x.to(device), data.labels.to(device), data.class_names,
                       data.name, data.split)
    ways = min(ways, data.num_classes)
    batches = {"protonet": data.x[:ways * 6], "finetune": data.x[data.labels < classes][:64]}
    workloads = {
        "protonet": (protonet_runner(data, device, ways, steps),
                     f"ProtoNet {ways}-way 1-shot 5-query, {steps} episodes a run",
                     "episodes/s"),
        "finetune": (finetune_runner(data, device, classes, epochs),
                     f"finetune, one experience of {classes} classes, batch 64, {epochs} "
                     "epochs", "steps/s"),
    }
    out: dict[str, Any] = {
        "device": str(device),
        "data": f"{data.name}/{data.split} ({data.num_classes} classes, {len(data)} images, "
                f"{tuple(data.x.shape[1:])})",
        "repeats": repeats, "variants": names, "workloads": {}}
    for key, (run, what, unit) in workloads.items():
        rows = compare(run, names, repeats, device)
        for name, diffs in step_exactness(batches[key], names).items():
            rows[name].update(diffs)
        out["workloads"][key] = {"what": what, "unit": unit, "rows": rows}
        print(key, {k: round(v.get("median", 0.0), 2) for k, v in rows.items()}, flush=True)
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto")
    ap.add_argument("--data-root", type=Path, default=None,
                    help="folder with the Omniglot zips (default $PROTOBENCH_DATA/omniglot; "
                         "digits when absent)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ways", type=int, default=60, help="protonet: ways per episode")
    ap.add_argument("--steps", type=int, default=10, help="protonet: episodes per run")
    ap.add_argument("--classes", type=int, default=20, help="finetune: classes of the experience")
    ap.add_argument("--epochs", type=int, default=5, help="finetune: epochs per run")
    ap.add_argument("--variants", default=None,
                    help=f"comma-separated subset of {', '.join(VARIANTS)}")


def run(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    variants = args.variants.split(",") if args.variants else None
    return measure(args.device, quick, data_root=args.data_root, repeats=args.repeats,
                   ways=args.ways, steps=args.steps, classes=args.classes, epochs=args.epochs,
                   variants=variants)


def markdown(out: dict[str, Any]) -> str:
    lines = ["# Training speed: compile, channels-last, bf16 vs float32", "",
             f"Conv-4 on {out['data']}, device {out['device']}; median of {out['repeats']} "
             "interleaved runs after one warm-up run each (`first run` includes any compile; "
             "`best run`: the fastest of them, the least disturbed by other jobs). "
             "Exactness against float32: step-1 = relative max difference of the output and "
             "the gradient of one batch through fresh weights; after the run, |loss diff| of "
             "the last steps' training loss and max |weight diff| of the learned weights "
             "(the `other threads` row is float32's own spread).", ""]
    for work in out["workloads"].values():
        lines += [f"## {work['what']}", "",
                  f"| variant | {work['unit']} (median) | best run | x float32 | first run (s) "
                  "| step-1 output / grad diff | loss diff | weight diff |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in work["rows"].items():
            rate = f"{r['median']:.2f}" if "median" in r else "-"
            best = f"{r['best']:.2f}" if "best" in r else "-"
            ratio = f"{r['x_float32']:.2f}x" if "x_float32" in r else "-"
            first = f"{r['first_run_s']:.1f}" if "first_run_s" in r else "-"
            label = f"{name}, {r['threads']} thread(s)" if "threads" in r else name
            step = (f"{r['step_output_diff']:.0e} / {r['step_grad_diff']:.0e}"
                    if "step_output_diff" in r else "-")
            lines.append(f"| {label} | {rate} | {best} | {ratio} | {first} | {step} "
                         f"| {r['loss_diff']:.1e} | {r['weight_diff']:.1e} |")
        lines.append("")
    return "\n".join(lines)


BENCHMARK = Benchmark("training_speed", __doc__, run, markdown, add_arguments)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
