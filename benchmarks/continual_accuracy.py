"""Class-incremental accuracy: finetune, napa-vq, prd and joint on the same streams.

For each dataset, every method runs on the same stream with its preset for the dataset
(``protobench/methods/<method>.yaml``, chosen on validation data by
``python -m benchmarks.select_presets``; ``--preset defaults`` runs the cards' recipes instead)
and the same seed, for each of ``--seeds`` (the seed sets the class order, the initial
weights and the batch order):

- ``digits``: the embedded digits at the CLI's default 28x28, 5 experiences of 2 classes,
  20% of each class held out for test (as ``protobench continual --dataset digits``);
- ``omniglot``: the real files under ``--data-root``, ``all`` split without rotations,
  restricted to the test half of the characters (:func:`_common.omniglot_pools`: the
  other half is the validation pool the presets were chosen on), the first 50 characters
  of the seeded class order in 10 experiences of 5 (16 train and 4 test images each),
  28x28 images, ``conv4`` backbone.

``--param method:key=value`` overrides one parameter (e.g. ``prd:relation_axis=samples``
with ``prd:relation_sim=cosine`` and ``prd:distill_temp=0.1`` for the paper's relation
loss). We report per method the mean, standard deviation and range over the seeds of the
average incremental accuracy, final accuracy and average forgetting, the wall time
(training + evaluation), and check the acceptance claims: napa-vq and prd have a higher
average incremental accuracy and lower forgetting than finetune, and every method stays
below joint. ``--store`` also writes one leaderboard row per run (board
``continual/<dataset>``).

Results, one pair of files per dataset:
``benchmarks/results/continual_accuracy_<dataset>{,_quick}.{json,md}``.

    python -m benchmarks.continual_accuracy --datasets digits
    python -m benchmarks.continual_accuracy --datasets omniglot --data-root ../shared/data/omniglot
    python -m benchmarks.continual_accuracy --quick    # smoke: 1 epoch, seed 0, Omniglot
                                                       # with 20 classes if the folder exists
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks._common import omniglot_pools
from benchmarks._harness import Benchmark, UsageError, main
from protobench.continual.stream import StreamSpec, build_stream, holdout_split
from protobench.datasets import load_dataset
from protobench.methods import build_method
from protobench.methods.presets import resolve_preset
from protobench.tasks import ResultStore
from protobench.tasks.continual import ContinualConfig, continual_record
from protobench.tasks.continual_run import run_stream

METHODS = ("finetune", "napa-vq", "prd", "joint")
METRICS = ("average_incremental_accuracy", "final_accuracy", "average_forgetting")
TEST_FRACTION = 0.2


def dataset_settings(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Per dataset: loader options, experiences, class subset, backbone and epochs."""
    settings = {
        "digits": {"options": {"image_size": 28}, "experiences": 5, "num_classes": None,
                   "root": None, "pool": False},
        "omniglot": {"options": {"image_size": 28, "rotations": "none"}, "experiences": 10,
                     "num_classes": args.omniglot_classes, "backbone": "conv4",
                     "root": str(args.data_root), "pool": True},
    }
    for setting in settings.values():
        if args.epochs:
            setting["epochs"] = args.epochs
    for name, backbone in _pairs(args.backbones, "--backbones").items():
        settings[name]["backbone"] = backbone
    for setting in settings.values():
        setting["explicit_options"] = {}
    for name, size in _pairs(args.image_size, "--image-size").items():
        settings[name]["explicit_options"]["image_size"] = int(size)
    return settings


def _pairs(text: str, flag: str) -> dict[str, str]:
    out = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in ("digits", "omniglot"):
            raise UsageError(f"{flag} expects dataset=value (digits|omniglot), got {item!r}")
        out[key] = value
    return out


def method_params(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["prd:relation_axis=samples", ...]`` -> ``{"prd": {"relation_axis": "samples"}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        method, colon, rest = item.partition(":")
        key, eq, value = rest.partition("=")
        if not colon or not eq or not key:
            raise UsageError(f"--param expects method:key=value, got {item!r}")
        out.setdefault(method, {})[key.replace("-", "_")] = yaml.safe_load(value)
    return out


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def run_dataset(name: str, setting: dict[str, Any], args: argparse.Namespace,
                params: dict[str, dict[str, Any]], store: ResultStore | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    presets = {m: resolve_preset(m, args.preset, name, "class-incremental")
               for m in args.methods}
    fixed = {k: setting[k] for k in ("backbone", "epochs") if k in setting}
    params = {m: {**(presets[m].params if presets[m] else {}), **fixed, **params.get(m, {})}
              for m in args.methods}
    # loader options: the benchmark's, under a preset's (e.g. image_size), under --image-size
    options = {m: {**setting["options"], **(presets[m].dataset_options if presets[m] else {}),
                   **setting["explicit_options"]} for m in args.methods}
    splits: dict[str, tuple[Any, Any]] = {}
    for m in args.methods:
        key = json.dumps(options[m], sort_keys=True)
        if key not in splits:
            data = load_dataset(name, "all", setting["root"], **options[m])
            if setting["pool"]:  # characters the presets were not chosen on
                data = data.subset_classes(omniglot_pools(data)[1])
            splits[key] = holdout_split(data, TEST_FRACTION, seed=0)  # as the CLI's stream
    load_s = time.perf_counter() - t0
    device = torch.device("cpu")
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.methods}
    train, test = next(iter(splits.values()))
    warm = build_stream(train, test, StreamSpec(setting["experiences"],
                                                num_classes=setting["num_classes"]))
    warm_up = build_method("finetune", backbone=setting.get("backbone", "mlp"), epochs=1)
    run_stream(warm_up, warm, device, progress=False)  # lazy initialisations, not timed
    stream_info: dict[str, Any] = {}
    for seed in args.seeds:
        spec = StreamSpec(setting["experiences"], seed=seed, num_classes=setting["num_classes"])
        for m in args.methods:
            train, test = splits[json.dumps(options[m], sort_keys=True)]
            stream = build_stream(train, test, spec, source=name)
            stream_info = {"experiences": len(stream), "classes": stream.num_classes,
                           "sizes": list(stream.sizes), "train_samples": len(stream.train),
                           "test_samples": len(stream.test)}
            method = build_method(m, task="class-incremental", seed=seed, **params[m])
            res = run_stream(method, stream, device, seed=seed, progress=False)
            row = {"seed": seed, **{k: res.metrics[k] for k in METRICS},
                   "backward_transfer": res.metrics["backward_transfer"],
                   "til_final_accuracy": res.metrics["til_final_accuracy"],
                   "wall_time_s": res.wall_time_s, "input_shape": list(train.x.shape[1:]),
                   "accuracy_matrix": [[None if v != v else round(v, 4) for v in r]
                                       for r in res.accuracy.tolist()]}
            runs[m].append(row)
            print(f"{name} seed {seed} {m:9s} AIA {row['average_incremental_accuracy']:.3f} "
                  f"final {row['final_accuracy']:.3f} forgetting "
                  f"{row['average_forgetting']:.3f} ({res.wall_time_s:.1f} s)", flush=True)
            if store is not None:
                cfg = ContinualConfig(dataset=name, method=m, experiences=setting["experiences"],
                                      num_classes=setting["num_classes"], seed=seed,
                                      device="cpu", data_root=setting["root"],
                                      dataset_options=options[m],
                                      method_params=params[m], test_fraction=TEST_FRACTION,
                                      config=args.preset)
                store.add_all([continual_record(cfg, stream, method, res, device)])
    methods = {}
    for m, rows in runs.items():
        methods[m] = {"params": params[m], "options": options[m], "runs": rows,
                      "preset": presets[m].label if presets[m] else "defaults",
                      **{k: spread([r[k] for r in rows]) for k in (*METRICS, "wall_time_s")}}
    pool = "from the test half of the characters" if setting["pool"] else "all"
    return {"options": setting["options"], "class_pool": pool,
            "stream": stream_info, "load_seconds": load_s, "methods": methods,
            "checks": checks(methods)}


def checks(methods: dict[str, Any]) -> dict[str, Any]:
    """The acceptance claims, on the means and seed by seed."""
    aia, fgt = "average_incremental_accuracy", "average_forgetting"
    out: dict[str, Any] = {}

    def per_seed(a: str, b: str, key: str, lower: bool) -> str:
        pairs = list(zip(methods[a]["runs"], methods[b]["runs"]))
        wins = sum((ra[key] < rb[key]) if lower else (ra[key] > rb[key]) for ra, rb in pairs)
        return f"{wins}/{len(pairs)}"

    if "finetune" in methods:
        for m in ("napa-vq", "prd"):
            if m in methods:
                out[f"{m} AIA > finetune"] = {
                    "ok": methods[m][aia]["mean"] > methods["finetune"][aia]["mean"],
                    "seeds": per_seed(m, "finetune", aia, lower=False)}
                out[f"{m} forgetting < finetune"] = {
                    "ok": methods[m][fgt]["mean"] < methods["finetune"][fgt]["mean"],
                    "seeds": per_seed(m, "finetune", fgt, lower=True)}
    if "joint" in methods:
        for m in methods:
            if m != "joint":
                out[f"{m} AIA < joint"] = {
                    "ok": methods[m][aia]["mean"] < methods["joint"][aia]["mean"],
                    "seeds": per_seed(m, "joint", aia, lower=True)}
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--datasets", default="digits,omniglot")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=None,
                    help="epochs per experience (default: the preset's)")
    ap.add_argument("--preset", default="auto",
                    help="auto (the dataset's preset), defaults (the card's), or a name")
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data/omniglot"),
                    help="folder with the Omniglot zips")
    ap.add_argument("--omniglot-classes", type=int, default=50)
    ap.add_argument("--backbones", default="", help="dataset=backbone,... (overrides presets)")
    ap.add_argument("--image-size", default="", help="dataset=size,... (e.g. digits=28)")
    ap.add_argument("--param", action="append", default=[],
                    help="method:key=value, repeatable (e.g. prd:relation_axis=samples)")
    ap.add_argument("--store", default=None, help="leaderboard file for one row per run")


def run(args: argparse.Namespace, quick: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """One record per dataset (``continual_accuracy_<dataset>``): separate runs of the
    datasets do not clobber each other."""
    if quick:  # smoke run: 1 epoch, 1 seed
        args.epochs, args.seeds, args.omniglot_classes = 1, "0", 20
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.methods = [m for m in args.methods.split(",") if m]
    datasets = [d for d in args.datasets.split(",") if d]
    settings = dataset_settings(args)
    unknown = [d for d in datasets if d not in settings]
    if unknown:
        raise UsageError(f"unknown dataset {unknown[0]!r}; choose from {', '.join(settings)}")
    skipped = {}
    if "omniglot" in datasets and not args.data_root.is_dir():
        if not quick:
            raise UsageError(f"no Omniglot folder at {args.data_root}; pass --data-root")
        datasets.remove("omniglot")
        skipped["omniglot"] = f"no folder {args.data_root}"
    params = method_params(args.param)
    store = ResultStore(args.store) if args.store else None
    for name, why in skipped.items():
        print(f"{name} skipped: {why}")
    for name in datasets:
        yield f"continual_accuracy_{name}", {
            "dataset": name, "seeds": args.seeds, "methods": args.methods,
            **run_dataset(name, settings[name], args, params, store)}


def markdown(out: dict[str, Any]) -> str:
    s = out["stream"]
    lines = [f"# Class-incremental accuracy on {out['dataset']}", "",
             f"{s['classes']} classes ({out['class_pool']}) in "
             f"{s['experiences']} experiences, {s['train_samples']} train / "
             f"{s['test_samples']} test images; each method with its preset (parameters and "
             f"input size in the table), seeds {out['seeds']}. Mean ± std "
             "[min, max] over the seeds, in %; wall time = training + evaluation, mean.", "",
             "| method | AIA | final accuracy | forgetting | wall time (s) |",
             "|---|---|---|---|---|"]
    for m, r in out["methods"].items():
        cells = [f"{100 * r[k]['mean']:.1f} ± {100 * r[k]['std']:.1f} "
                 f"[{100 * r[k]['min']:.1f}, {100 * r[k]['max']:.1f}]" for k in METRICS]
        shown = {**r["params"], **r.get("options", {})}
        label = f"{m} [{r['preset']}]" + (
            " (" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")" if shown else "")
        lines.append(f"| {label} | {' | '.join(cells)} | {r['wall_time_s']['mean']:.1f} |")
    lines += ["", "| claim | holds (means) | seeds where it holds |", "|---|---|---|"]
    lines += [f"| {k} | {'yes' if v['ok'] else 'NO'} | {v['seeds']} |"
              for k, v in out["checks"].items()]
    return "\n".join(lines) + "\n"


BENCHMARK = Benchmark("continual_accuracy", __doc__, run, markdown, add_arguments)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
