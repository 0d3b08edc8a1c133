"""The commands that reproduce a leaderboard row: ``protobench rerun ID`` and the full CLI
line of the same job.

:func:`cli_argv` writes the row's job (``record.job``) as the ``protobench fewshot |
continual | ood`` flags that build the same job configuration, with the method's resolved
parameters (``--config defaults`` and one ``--param`` for each that differs from the
method's own default, as ``protobench rerun`` does, so a later change of a preset does not
change what the line runs). Job fields at their default are left out; run folders, stores,
checkpoints to save and progress options are never part of the line. Values that YAML
would read differently are written as JSON.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import shlex
from dataclasses import MISSING, fields
from typing import Any

import yaml

from protobench.methods import get_method_class
from protobench.tasks.base import TASKS
from protobench.tasks.record import ResultRecord

# config field -> flag; a dict field is one `--flag key=value` per entry
FLAGS = {  # in the order the line lists them
    "id": "--id", "ood": "--ood", "dataset": "--dataset", "method": "--method",
    "ways": "--ways", "shots": "--shots",
    "queries": "--queries", "episodes": "--episodes", "split": "--split",
    "metric": "--metric", "train_steps": "--train-steps", "train_ways": "--train-ways",
    "train_shots": "--train-shots", "train_queries": "--train-queries",
    "train_dataset": "--train-dataset", "train_options": "--train-option",
    "clip_model": "--clip-model", "pretrained": "--pretrained",
    "metric_options": "--metric-option", "episodes_file": "--episodes-file",
    "allow_class_overlap": "--allow-class-overlap", "cache_dir": "--cache-dir",
    "experiences": "--experiences", "base_classes": "--base-classes",
    "class_order": "--class-order", "num_classes": "--classes", "epochs": "--epochs",
    "test_fraction": "--test-fraction", "ood_score": "--ood-score",
    "ood_score_params": "--ood-score-param", "score_params": "--score-param",
    "ood_roots": "--ood-root", "backbone": "--backbone",
    "device": "--device", "data_root": "--data-root", "dataset_options": "--dataset-option",
    "checkpoint": "--checkpoint", "method_params": "--param", "config": "--config",
}
NEVER = ("store", "progress", "plot", "run_dir", "save_checkpoint", "save_episodes", "resume",
         "feature_cache", "seed", "seeds", "scores")


_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./:+-]*")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "nan", "inf"}


def _value(v: Any) -> str:
    """``v`` as the CLI reads it back (values are YAML: ``5`` -> 5, ``true`` -> True)."""
    if isinstance(v, str) and v:
        if _PLAIN.fullmatch(v) and not v.endswith(":") and v.lower() not in _YAML_WORDS:
            return v  # a word YAML reads as this very string (the common case, fast)
        if yaml.safe_load(v) == v:
            return v
    return json.dumps(v)


@functools.cache
def _defaults(cls: type) -> dict[str, Any]:
    """A method class's own parameter defaults (its constructor's)."""
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _differs(default: Any, value: Any) -> bool:
    """Whether a recorded (JSON) parameter value differs from the method's default."""
    try:
        return json.loads(json.dumps(default)) != value
    except TypeError:
        return True


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING


def cli_argv(record: ResultRecord) -> list[str]:
    """The ``protobench`` arguments that re-run ``record``'s row (module docstring); empty
    when the row has no job (written before rows recorded one)."""
    job = record.job or {}
    task = TASKS.get(job.get("task", ""))
    if task is None:
        return []
    cfg = dict(job["config"])
    cls = get_method_class(record.method_name)
    own = _defaults(cls)
    params = {k: v for k, v in record.method_params.items()
              if k not in own or _differs(own[k], v)}
    if "seed" in cls.job_options:
        params.pop("seed", None)  # the job sets it from --seed
    cfg.update(method_params=params, config="defaults")
    argv = ["protobench", task.name]
    known = {f.name: f for f in fields(task.config_class)}
    for name in [n for n in FLAGS if n in known]:
        f = known[name]
        value = cfg.get(name, _default(f))
        if name in NEVER or value is None:
            continue
        default = _default(f)
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        if value == default and name not in ("method", "config"):
            continue
        flag = FLAGS[name]
        if isinstance(value, dict):
            argv += [a for k, v in sorted(value.items()) for a in (flag, f"{k}={_value(v)}")]
        elif isinstance(value, tuple | list):
            argv += [a for v in value for a in (flag, _value(v))]
        elif isinstance(value, bool):
            argv += [flag] if value else []
        else:
            argv += [flag, _value(value)]
    seeds = [int(s) for s in record.seeds] or [record.seed]
    if task.name == "ood":  # this row's score only
        argv += ["--score", str(record.config.get("score", ""))]
    argv += ["--seeds", ",".join(map(str, seeds))] if len(seeds) > 1 else ["--seed",
                                                                           str(seeds[0])]
    return argv


def cli_line(record: ResultRecord) -> str:
    """:func:`cli_argv` as one shell line ("" without a job)."""
    argv = cli_argv(record)
    return shlex.join(argv) if argv else ""


def rerun_line(record: ResultRecord, store: str) -> str:
    return shlex.join(["protobench", "rerun", str(record.id), "--store", store])
