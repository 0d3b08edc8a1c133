"""Choose the presets of the bundled datasets on validation data, never on test data.

Each target names the methods, a small grid of candidate parameters per method, the
validation data and the rule that picks a candidate; the chosen values are written into
the method's preset file (``protobench/.../<method>.yaml``, entry named after the dataset)
together with a ``chosen_on`` line, and every candidate's validation figures go to
``benchmarks/results/presets_<target>.{json,md}``.

Validation data, per target:

- ``continual-digits``: the samples of each digit that ``protobench continual --dataset
  digits`` trains on (its 20% test samples per class are set aside first, exactly as the
  job does: :func:`holdout_split` with seed 0), split again 80/20 (seed 1) into
  validation-train and validation-test; 5 experiences of 2 classes, class orders 0 and 1,
  images at 8x8 for every method (one input size, so the board's rows share their
  streams and pair in ``protobench compare``). Rule: among candidates that
  learn every experience (validation ``A[i, i] >= 0.5`` for every ``i`` on both streams)
  within the time budget (90 s a run, a margin under the 2-minute target on 2 cores), the
  highest mean average incremental accuracy.
- ``continual-omniglot``: Omniglot characters that the test stream of
  ``benchmarks.continual_accuracy`` never uses (:func:`omniglot_pools`: a seeded half of
  the characters is reserved for validation), 50 of them in 10 experiences of 5, 16 train
  / 4 validation images each, 28x28, Conv-4, one class order (seed 0: a Conv-4 stream costs
  minutes per run). Rule: the highest validation AIA (epochs and batch sizes are what the
  benchmark's earlier table had tuned on test results).
- ``ood-digits``: ID = digits 0-4 training samples of ``protobench ood --id digits:0-4``
  (its test samples set aside first), split 80/20 (seed 1). No OOD image is used: the OOD
  sets are the job's test data, so the rule is the highest validation ID accuracy within
  90 s (the ID accuracy is what the preset must make meaningful).
- ``fewshot-digits``: meta-train on digits 0-2, validate on 2-way 5-shot episodes of
  digits 3-4 (all from the ``train`` split: the test classes 5-9 are never read); rule:
  the highest validation accuracy within 90 s.

    python -m benchmarks.select_presets continual-digits        # writes the presets
    python -m benchmarks.select_presets continual-omniglot --data-root ../shared/data/omniglot
    python -m benchmarks.select_presets all --no-write --quick   # smoke run, nothing written
    python -m benchmarks.select_presets continual-digits \
        --write-from benchmarks/results/presets_continual-digits.json  # presets of a run
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks._common import omniglot_pools
from benchmarks._harness import Benchmark, UsageError, main
from protobench.continual.stream import StreamSpec, build_stream, holdout_split
from protobench.datasets import load_dataset
from protobench.methods import build_method, get_method_class
from protobench.methods.presets import list_presets, preset_file
from protobench.tasks.continual_run import run_stream

TIME_BUDGET_S = 90.0
SCRIPT = "benchmarks/select_presets.py"  # named in the preset files' chosen_on lines


def grid(**axes: list[Any]) -> list[dict[str, Any]]:
    """Every combination of the axes' values."""
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


# --- targets: candidates per method -------------------------------------------------------

CONTINUAL_DIGITS = {  # image_size is a loader option (-o)
    # one input size, 8x8 (the data's own), for every method: the board's rows are then
    # paired on identical streams (a stream's identity includes its data), so
    # `protobench compare` can pair any two methods seed by seed
    "finetune": grid(backbone=["mlp"], epochs=[10, 30], image_size=[8]),
    "joint": grid(backbone=["mlp"], epochs=[10, 30], image_size=[8]),
    # the card's batch 64 and loss weights 10/10 are set for CIFAR's hundreds of steps per
    # epoch; here an experience is ~230 images (4 steps of 64)
    "napa-vq": grid(backbone=["mlp"], epochs=[30], image_size=[8], batch_size=[16, 64],
                    kd_weight=[0.1, 1.0, 10.0], protoaug_weight=[1.0, 10.0],
                    temperature=[0.1, 0.5], lr_incremental=[1e-3]),
    "prd": grid(backbone=["mlp"], epochs=[10, 30], batch_size=[32, 128], image_size=[8]),
    "lwf": [*grid(backbone=["mlp"], epochs=[10, 30], image_size=[8], lambda_old=[1.0, 3.0],
                  temperature=[0.1, 1.0]),
            *grid(backbone=["mlp"], epochs=[60, 100], image_size=[8], lambda_old=[0.3, 1.0],
                  temperature=[0.1])],
    # EFC's first experience trains a 4x larger batch (rotations); card: Adam 1e-3 / 1e-4
    "efc": grid(backbone=["mlp"], epochs=[10, 30, 60], image_size=[8], batch_size=[16, 64],
                lr_incremental=[1e-4, 1e-3]),
    # FeCAM trains the first experience only: its encoder must generalise from 2 digits
    "fecam": grid(backbone=["mlp"], epochs=[10, 30, 100], image_size=[8], lr=[0.1, 0.01]),
}
VALIDATION_SEEDS = (0, 1)  # class orders of the validation streams (continual targets)
LOADER_OPTIONS = ("image_size",)  # candidate keys that are dataset options, not parameters
CONTINUAL_OMNIGLOT = {
    "finetune": grid(epochs=[10, 20], batch_size=[16, 64]),
    "prd": grid(epochs=[10, 20], batch_size=[16, 32, 128]),
    "napa-vq": grid(epochs=[10, 20], batch_size=[16, 64]),
    "joint": grid(epochs=[10, 20], batch_size=[16, 64]),
    "lwf": grid(epochs=[10, 20], batch_size=[16, 64], temperature=[0.1, 1.0]),
    "efc": grid(epochs=[10, 20], batch_size=[16, 64], lr_incremental=[1e-4, 1e-3]),
    "fecam": grid(epochs=[20, 50], lr=[0.1, 0.01]),
}
OOD_DIGITS = {
    "ce": grid(backbone=["mlp"], epochs=[20, 50, 100], image_size=[8, 28]),
    "palm": grid(backbone=["mlp"], epochs=[20, 50, 100], image_size=[8, 28]),
    "cider": grid(backbone=["mlp"], epochs=[20, 50, 100], image_size=[8, 28]),
}
FEWSHOT_DIGITS = {
    "protonet": grid(train_steps=[100, 300, 1000]),
    # transductive, no training: their test-time knobs, on raw pixels like NCM's digits rows
    "bd-cspn": grid(eps=[1.0, 5.0, 10.0], top_z=[None, 5]),
    "soft-kmeans": grid(steps=[1, 2, 5]),
}


# --- validation data -----------------------------------------------------------------------

def digits_validation_stream(image_size: int = 28, seed: int = 0):
    """The CLI's digits training samples (its test samples set aside), split again."""
    data = load_dataset("digits", "all", image_size=image_size)
    train, _job_test = holdout_split(data, 0.2, seed=0)  # as stream_from_dataset
    vtrain, vtest = holdout_split(train, 0.2, seed=1)
    return build_stream(vtrain, vtest, StreamSpec(5, seed=seed), source="digits-validation")


def omniglot_validation_stream(root: str, seed: int = 0, classes: int = 50):
    data = load_dataset("omniglot", "all", root, image_size=28, rotations="none")
    val_pool, _test_pool = omniglot_pools(data)
    pool = data.subset_classes(val_pool, split="validation")
    train, test = holdout_split(pool, 0.2, seed=0)
    return build_stream(train, test, StreamSpec(10, seed=seed, num_classes=classes),
                        source="omniglot-validation")


def continual_candidate(method: str, params: dict[str, Any], root: Any) -> dict[str, Any]:
    """Mean over :data:`VALIDATION_SEEDS`; ``diagonal`` = the worst ``A[i, i]`` over seeds."""
    torch.set_num_threads(1)
    params = dict(params)
    size = int(params.pop("image_size", 28))
    runs = []
    start = time.perf_counter()
    for seed in VALIDATION_SEEDS[:1] if root else VALIDATION_SEEDS:  # Omniglot: one (cost)
        stream = omniglot_validation_stream(root, seed) if root else \
            digits_validation_stream(size, seed)
        m = build_method(method, task="class-incremental", seed=seed, **params)
        res = run_stream(m, stream, torch.device("cpu"), seed=seed, progress=False)
        runs.append((res.metrics, [float(res.accuracy[i, i]) for i in range(len(res.accuracy))]))
    mean = {k: sum(r[0][k] for r in runs) / len(runs)
            for k in ("average_incremental_accuracy", "final_accuracy", "average_forgetting")}
    return {"aia": mean["average_incremental_accuracy"], "final": mean["final_accuracy"],
            "forgetting": mean["average_forgetting"],
            "diagonal": [min(d) for d in zip(*(r[1] for r in runs))],
            "seconds": (time.perf_counter() - start) / len(runs)}


def ood_candidate(method: str, params: dict[str, Any], _data: Any) -> dict[str, Any]:
    """ID accuracy only: no OOD image is looked at while choosing (the job's OOD sets are
    its test data)."""
    from protobench.tasks.ood_eval import evaluate

    torch.set_num_threads(1)
    params = dict(params)
    size = int(params.pop("image_size", 28))
    train, _job_test = holdout_split(load_dataset("digits", "all", image_size=size), 0.2,
                                     seed=0)
    train = train.subset_classes(list(range(5)))  # as the ood job's digits:0-4 split
    vtrain, vtest = holdout_split(train, 0.2, seed=1)
    m = build_method(method, task="ood", seed=0, **params)
    start = time.perf_counter()
    m.fit(vtrain, torch.device("cpu"), progress=False)
    ev = evaluate(m, vtrain, vtest, {}, {}, [], {}, torch.device("cpu"))
    return {"id_accuracy": ev.id_accuracy, "seconds": time.perf_counter() - start}


def fewshot_candidate(method: str, params: dict[str, Any], _data: Any) -> dict[str, Any]:
    from protobench.episodic import EpisodeSpec, make_episodes
    from protobench.evaluation import evaluate_episodes
    from protobench.evaluation.scored import evaluate_scored

    torch.set_num_threads(1)
    train = load_dataset("digits", "train")
    meta_train = train.subset_classes([0, 1, 2], split="val-train")
    meta_val = train.subset_classes([3, 4], split="val")
    seeded = {"seed": 0} if "seed" in get_method_class(method)().get_params() else {}
    m = build_method(method, task="fewshot", **seeded, **params)
    start = time.perf_counter()
    m.fit(meta_train, torch.device("cpu"), progress=False)
    feats = m.transform(m.features(meta_val, torch.device("cpu")))
    out = {}
    for shots in (1, 5):
        eps = make_episodes(meta_val, EpisodeSpec(2, shots, 15, 300, seed=0))
        if getattr(m, "scores_episodes", False):  # transductive: the method scores episodes
            out[f"accuracy_{shots}shot"] = evaluate_scored(feats, eps, m).mean
        else:
            out[f"accuracy_{shots}shot"] = evaluate_episodes(feats, eps, metric=m.metric).mean
    out["accuracy"] = (out["accuracy_1shot"] + out["accuracy_5shot"]) / 2
    out["seconds"] = time.perf_counter() - start
    return out


# --- rules ---------------------------------------------------------------------------------

def continual_digits_rule(r: dict[str, Any]) -> float | None:
    ok = min(r["diagonal"]) >= 0.5 and r["seconds"] <= TIME_BUDGET_S
    return r["aia"] if ok else None


def aia_rule(r: dict[str, Any]) -> float | None:
    return r["aia"]


def ood_rule(r: dict[str, Any]) -> float | None:
    return r["id_accuracy"] if r["seconds"] <= TIME_BUDGET_S else None


def fewshot_rule(r: dict[str, Any]) -> float | None:
    return r["accuracy"] if r["seconds"] <= TIME_BUDGET_S else None


TARGETS: dict[str, dict[str, Any]] = {
    "continual-digits": {
        "dataset": "digits", "task": "class-incremental", "candidates": CONTINUAL_DIGITS,
        "run": continual_candidate, "rule": continual_digits_rule,
        "data": lambda args: None,
        "chosen_on": "digits validation streams (the job's training samples split 80/20 "
                     "again; 5 experiences, class orders 0 and 1; its test samples never "
                     "read), rule: highest mean validation AIA with every A[i,i] >= 0.5 on "
                     "both streams within 90 s per run",
        "metric": "aia"},
    "continual-omniglot": {
        "dataset": "omniglot", "task": "class-incremental", "candidates": CONTINUAL_OMNIGLOT,
        "run": continual_candidate, "rule": aia_rule,
        "data": lambda args: str(args.data_root),
        "fixed": {"backbone": "conv4"},
        "chosen_on": "an Omniglot validation stream of 50 characters that the test streams "
                     "never use (10 x 5, 28x28, Conv-4, class order 0), rule: highest "
                     "validation AIA",
        "metric": "aia"},
    "ood-digits": {
        "dataset": "digits", "task": "ood", "candidates": OOD_DIGITS, "run": ood_candidate,
        "rule": ood_rule, "data": lambda args: None,
        "chosen_on": "digits:0-4 training samples of the job split 80/20 (seed 1); no OOD "
                     "image and no test sample read, rule: highest validation ID accuracy "
                     "within 90 s",
        "metric": "id_accuracy"},
    "fewshot-digits": {
        "dataset": "digits", "task": "fewshot", "candidates": FEWSHOT_DIGITS,
        "run": fewshot_candidate, "rule": fewshot_rule, "data": lambda args: None,
        "chosen_on": "meta-train digits 0-2, 2-way 1- and 5-shot validation episodes of "
                     "digits 3-4 (the test classes 5-9 never read), rule: highest mean "
                     "validation accuracy within 90 s",
        "metric": "accuracy"},
}


def run_target(name: str, args: argparse.Namespace) -> dict[str, Any]:
    target = TARGETS[name]
    data = target["data"](args)
    fixed = target.get("fixed", {})
    jobs = [(m, {**fixed, **c}) for m in args.methods or target["candidates"]
            for c in target["candidates"][m]]
    if args.quick:  # smoke: the first candidate of each method, one epoch
        seen: set[str] = set()
        jobs = [(m, {**c, **({"epochs": 1} if "epochs" in c else {}),
                     **({"train_steps": 5} if "train_steps" in c else {})})
                for m, c in jobs if not (m in seen or seen.add(m))]
    run: Callable[..., dict[str, Any]] = target["run"]
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run, m, c, data) for m, c in jobs]
        results = []
        for (m, c), f in zip(jobs, futures):
            r = f.result()
            results.append({"method": m, "params": c, **r})
            print(f"{name} {m} {c}: {target['metric']} {r[target['metric']]:.4f} "
                  f"({r['seconds']:.1f} s)", flush=True)
    chosen: dict[str, dict[str, Any]] = {}
    for m in dict.fromkeys(m for m, _ in jobs):
        scored = [(target["rule"](r), r) for r in results if r["method"] == m]
        ok = [(s, r) for s, r in scored if s is not None]
        if ok:
            chosen[m] = max(ok, key=lambda sr: sr[0])[1]
    return {"target": name, "chosen_on": target["chosen_on"], "results": results,
            "chosen": {m: r["params"] for m, r in chosen.items()}}


def write_presets(name: str, out: dict[str, Any]) -> list[Path]:
    """Put each chosen candidate into its method's preset file (version bumped)."""
    target = TARGETS[name]
    written = []
    for method, params in out["chosen"].items():
        path = preset_file(method)
        blob = yaml.safe_load(path.read_text()) if path.is_file() else None
        blob = blob or {"method": method, "version": 1, "presets": {}}
        entry: dict[str, Any] = {
            "task": target["task"], "chosen_on": f"{target['chosen_on']}; by {SCRIPT} {name} "
            f"(candidates in benchmarks/results/presets_{name}.md)",
            "params": {k: v for k, v in params.items() if k not in LOADER_OPTIONS}}
        options = {k: v for k, v in params.items() if k in LOADER_OPTIONS}
        if options:
            entry["dataset_options"] = options
        before = dict(blob["presets"].get(target["dataset"]) or {})
        version = int(before.pop("version", blob.get("version", 1))) if before else 0
        if before != entry:  # only the changed preset's version moves (its label)
            blob["presets"][target["dataset"]] = {"version": version + 1, **entry}
            blob.setdefault("version", 1)  # the other entries' default: never moved
        path.write_text(f"# Presets of {method}: see protobench/methods/presets.py. The "
                        "entries named after a bundled dataset\n# are written by "
                        f"{SCRIPT}; the others are papers' settings.\n"
                        + yaml.safe_dump(blob, sort_keys=False, width=100))
        list_presets.cache_clear()
        written.append(path)
    return written


def markdown(out: dict[str, Any]) -> str:
    metric = TARGETS[out["target"]]["metric"]
    lines = [f"# Preset selection: {out['target']}", "",
             f"Validation data and rule: {out['chosen_on']}.", "",
             f"| method | candidate | validation {metric} | details | seconds | chosen |",
             "|---|---|---|---|---|---|"]
    for r in out["results"]:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        details = ", ".join(f"{k} {_fmt(v)}" for k, v in r.items()
                            if k not in ("method", "params", metric, "seconds"))
        mark = "**yes**" if out["chosen"].get(r["method"]) == r["params"] else ""
        lines.append(f"| {r['method']} | {params} | {100 * r[metric]:.2f} | {details} | "
                     f"{r['seconds']:.1f} | {mark} |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{100 * v:.1f}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("target", choices=[*TARGETS, "all"])
    ap.add_argument("--methods", default="", help="comma-separated subset")
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data/omniglot"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="do not touch the preset files")
    ap.add_argument("--write-from", type=Path, default=None,
                    help="write the presets of a finished run's JSON (no candidate is run)")


def run(args: argparse.Namespace, quick: bool) -> Iterator[tuple[str, dict[str, Any]]] | None:
    """One record per target (``presets_<target>``); ``--quick``: one short candidate
    each, and no preset file is touched."""
    if args.write_from is not None:
        out = json.loads(args.write_from.read_text())
        for path in write_presets(out["target"], out):
            print(f"wrote {path}")
        return None
    args.methods = [m for m in args.methods.split(",") if m]
    names = list(TARGETS) if args.target == "all" else [args.target]
    if "continual-omniglot" in names and not args.data_root.is_dir():
        if not quick:
            raise UsageError(f"no Omniglot folder at {args.data_root}; pass --data-root")
        names.remove("continual-omniglot")
    return _targets(names, args, write=not (args.no_write or quick))


def merged(out: dict[str, Any], previous: Path) -> dict[str, Any]:
    """``out`` (a run of some methods) with the other methods' candidates and choices of
    the earlier record ``previous``, so a target's record lists every method it chose."""
    if not previous.is_file():
        return out
    old = json.loads(previous.read_text())
    ran = {r["method"] for r in out["results"]}
    return {**out,
            "results": [r for r in old["results"] if r["method"] not in ran] + out["results"],
            "chosen": {**{m: p for m, p in old["chosen"].items() if m not in ran},
                       **out["chosen"]}}


def _targets(names: list[str], args: argparse.Namespace,
             write: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    for name in names:
        out = run_target(name, args)
        if args.methods and not args.quick:  # a subset: keep the others' record
            out = merged(out, args.out / f"presets_{name}.json")
        yield f"presets_{name}", out
        if write:
            for path in write_presets(name, out):
                print(f"wrote {path}")


BENCHMARK = Benchmark("select_presets", __doc__, run, markdown, add_arguments)

if __name__ == "__main__":
    raise SystemExit(main(BENCHMARK))
