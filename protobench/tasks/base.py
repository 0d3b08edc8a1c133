"""The one job runner: every task (few-shot, continual, OOD) goes through :func:`run`.

A task (:class:`Task`) says how to validate its configuration, load its data once, and
run one seed (train or load the method, evaluate, describe the rows). The runner alone
owns what every task shares:

* device resolution and the loop over ``seeds`` (``--seeds 0,1,2``); with several seeds
  each row's metrics are the mean with a Student-t 95% CI over seeds, and the row keeps
  every seed's metrics (``per_seed``);
* run-folder naming (``runs/<task>/<name>``, one ``seed<N>`` sub-folder per seed when there
  are several) and checkpoint naming (``_seed<N>`` when several seeds);
* ``result.json`` in the run folder, provenance (versions, git revision, device, machine,
  wall time) and the single store write at the very end, so a failed run leaves no row;
* the job options a method accepts by name (:func:`method_params`), never by signature.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from protobench.errors import UserError
from protobench.evaluation.stats import mean_ci95
from protobench.methods import get_method_class, list_methods
from protobench.methods.presets import Preset, resolve_preset, with_preset
from protobench.tasks.provenance import Provenance, Stopwatch
from protobench.tasks.record import Metric, ResultRecord
from protobench.tasks.store import DEFAULT_STORE, ResultStore
from protobench.utils import resolve_device, sha256_json


def runs_root() -> Path:
    """Where run folders go: ``$PROTOBENCH_RUNS`` or ``runs/`` in the working directory."""
    return Path(os.environ.get("PROTOBENCH_RUNS", "runs"))


JOB_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """The fields every task shares (a task's config adds its protocol fields)."""

    method: str = ""
    method_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    seeds: tuple[int, ...] | int = ()  # empty: just ``seed``; an int N: N seeds from seed
    device: str = "auto"
    backbone: str | None = None
    data_root: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    save_checkpoint: str | None = None
    run_dir: str | None = None
    store: str | None = str(DEFAULT_STORE)
    progress: bool = True
    plot: bool = True
    config: str | None = None  # preset name, best, defaults; None = the dataset's preset

    def seed_list(self) -> tuple[int, ...]:
        if isinstance(self.seeds, int):  # a count: seed, seed+1, ...
            return tuple(range(self.seed, self.seed + self.seeds))
        return tuple(self.seeds) or (self.seed,)


@dataclass(frozen=True)
class SeedContext:
    """What the runner hands a task for one seed."""

    seed: int
    index: int
    several: bool
    run_dir: Path  # this seed's folder (the job folder when there is one seed)
    save_checkpoint: Path | None
    job_dir: Path  # the job folder (result.json)


@dataclass
class SeedRun:
    """One seed's rows (metrics and description, no provenance) and the task's outcome."""

    records: list[ResultRecord]
    outcome: Any = None


@dataclass
class JobOutcome:
    records: list[ResultRecord]
    runs: list[SeedRun]
    seeds: tuple[int, ...]
    run_dir: Path

    @property
    def outcome(self) -> Any:
        """The first seed's task outcome."""
        return self.runs[0].outcome


class Task(ABC):
    """One task definition (see the module docstring)."""

    name: ClassVar[str]  # record task and runs/<name>
    method_task: ClassVar[str]  # the capability a method must declare
    config_class: ClassVar[type[JobConfig]]

    def validate(self, cfg: Any) -> Any:
        """Checks before any data is read; returns the config with presets resolved."""
        return cfg

    @abstractmethod
    def load(self, cfg: Any, device: torch.device) -> Any:
        """Data shared by every seed, validated."""

    @abstractmethod
    def run_seed(self, cfg: Any, data: Any, ctx: SeedContext, device: torch.device) -> SeedRun:
        """Train/load, evaluate and describe the rows of one seed."""

    @abstractmethod
    def run_name(self, cfg: Any) -> str:
        """The default run folder name under ``runs/<task>/``."""

    def preset_dataset(self, cfg: Any) -> str:
        return cfg.dataset

    def preset(self, cfg: Any) -> Preset | None:
        return resolve_preset(cfg.method, cfg.config, self.preset_dataset(cfg),
                              self.method_task)

    def rerun_config(self, cfg: Any, record: ResultRecord) -> Any:
        """The config that re-runs exactly ``record`` (one row of the job)."""
        return cfg

    def result_extra(self, runs: list[SeedRun]) -> dict[str, Any]:
        """Task-specific additions to ``result.json``."""
        return {}


def parse_seeds(text: str | None, seed: int = 0) -> tuple[int, ...]:
    """``--seeds``: ``0,1,2`` (a list), ``0-4`` (a range) or ``N`` (N seeds from --seed)."""
    if text is None or str(text).strip() == "":
        return ()
    text = str(text).strip()
    try:
        if "," in text:
            out = tuple(int(s) for s in text.split(",") if s.strip())
        elif "-" in text.lstrip("-"):
            lo, hi = text.split("-", 1)
            out = tuple(range(int(lo), int(hi) + 1))
        else:
            n = int(text)
            if n < 1:
                raise UserError(f"--seeds must be at least 1, got {n}")
            out = tuple(range(seed, seed + n))
    except ValueError:
        raise UserError(f"--seeds expects 0,1,2 or 0-4 or a count, got {text!r}") from None
    if not out or len(set(out)) != len(out):
        raise UserError(f"--seeds {text!r} must list distinct seeds")
    return out


def method_params(task: Task, cfg: JobConfig, seed: int, options: dict[str, Any],
                  strict: Sequence[str] = ("backbone", "epochs", "clip_model", "pretrained"),
                  several: bool = False) -> dict[str, Any]:
    """The method's parameters: the preset's values under ``--param``, then the job options
    the method declares in ``job_options`` (``None`` = not given). An option given
    explicitly that the method does not declare is an error when it is in ``strict``
    and ignored otherwise (e.g. ``--train-steps`` for a training-free method)."""
    cls = get_method_class(cfg.method)
    if task.method_task not in cls.tasks:
        names = ", ".join(c.name for c in list_methods(task.method_task))
        raise UserError(f"method {cfg.method!r} does not support {task.method_task}; "
                        f"methods that do: {names} (see `protobench methods`)")
    params: dict[str, Any] = with_preset(task.preset(cfg), cfg.method_params)
    for key, value in options.items():
        if value is None:
            continue
        if key in cls.job_options:
            params[key] = value
        elif key in strict:
            takers = [c.name for c in list_methods(task.method_task) if key in c.job_options]
            raise UserError(f"--{key.replace('_', '-')} applies to methods that take it "
                            f"({', '.join(takers) or 'none'}), not {cfg.method}; "
                            f"{cfg.method} takes {', '.join(cls.job_options) or 'no job options'}")
    if "seed" in cls.job_options:
        if several and "seed" in cfg.method_params:
            raise UserError("-p seed=... fixes one seed; with --seeds the job sets each seed")
        if several or "seed" not in cfg.method_params:
            params["seed"] = seed
    return params


def run(task: Task, cfg: JobConfig, *, write: bool = True) -> JobOutcome:
    """Run ``cfg`` under ``task`` (see the module docstring); ``write=False`` skips the store
    and the run folder's ``result.json`` (``protobench rerun``)."""
    cfg = task.validate(cfg)
    seeds = cfg.seed_list()
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds lists a seed twice: {list(seeds)}")
    several = len(seeds) > 1
    if cfg.checkpoint and several:
        raise UserError("--checkpoint evaluates one trained model; drop --seeds or train")
    device = resolve_device(cfg.device)
    data = task.load(cfg, device)
    job_dir = Path(cfg.run_dir) if cfg.run_dir else runs_root() / task.name / task.run_name(cfg)
    runs: list[SeedRun] = []
    with Stopwatch() as sw:
        for i, seed in enumerate(seeds):
            ctx = SeedContext(seed, i, several, job_dir / f"seed{seed}" if several else job_dir,
                              _checkpoint(cfg.save_checkpoint, seed, several), job_dir)
            runs.append(task.run_seed(cfg, data, ctx, device))
    provenance = Provenance.capture(device)
    job = {"task": task.name, "version": JOB_VERSION,
           "config": {**asdict(cfg), "seeds": list(seeds), "seed": seeds[0]}}
    records = [_finish(r, provenance, job, seeds, sw.seconds if several else r.wall_time_s)
               for r in aggregate(runs, seeds)]
    if write:
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / "result.json").write_text(json.dumps(
            {"rows": [r.to_dict() for r in records], **task.result_extra(runs)},
            indent=1, default=str))
        if cfg.store:
            ids = ResultStore(cfg.store).add_all(records)
            records = [replace(r, id=i) for r, i in zip(records, ids)]
    return JobOutcome(records, runs, seeds, job_dir)


def _checkpoint(path: str | None, seed: int, several: bool) -> Path | None:
    if not path:
        return None
    p = Path(path)
    return p.with_name(f"{p.stem}_seed{seed}{p.suffix}") if several else p


def _finish(r: ResultRecord, p: Provenance, job: dict[str, Any], seeds: tuple[int, ...],
            seconds: float) -> ResultRecord:
    return replace(r, versions=p.versions, git_revision=p.git_revision, device=p.device,
                   machine=p.machine, timestamp=p.timestamp, wall_time_s=seconds, job=job,
                   seed=seeds[0], seeds=list(seeds))


def aggregate(runs: list[SeedRun], seeds: tuple[int, ...]) -> list[ResultRecord]:
    """One row per row of a seed; with several seeds, means and Student-t 95% CIs over
    seeds, every seed's metrics in ``per_seed`` and every seed's ``samples`` (keyed
    ``HASH#seedN`` when seeds share a manifest, e.g. a dataset's fixed episodes)."""
    if len(runs) == 1:
        return list(runs[0].records)
    counts = {len(r.records) for r in runs}
    if len(counts) != 1:
        raise RuntimeError("every seed must give the same rows")
    out = []
    for j, first in enumerate(runs[0].records):
        rows = [r.records[j] for r in runs]
        keys = [k for k in first.metrics if all(k in r.metrics for r in rows)]
        metrics = {}
        for k in keys:
            mean, ci = mean_ci95([r.metrics[k].value for r in rows])
            metrics[k] = Metric(mean, ci, len(rows))
        per_seed = [{"seed": s, "metrics": {k: asdict(m) for k, m in r.metrics.items()},
                     "manifest_hash": r.manifest_hash} for s, r in zip(seeds, rows)]
        fits = []
        for r in rows:
            fit = r.config.get("fit")
            fits.extend(fit["per_seed"] if isinstance(fit, dict) and "per_seed" in fit
                        else [fit])
        shared = len({r.manifest_hash for r in rows}) < len(rows)
        samples = {f"{k}#seed{s}" if shared else k: v
                   for s, r in zip(seeds, rows) for k, v in r.samples.items()}
        out.append(replace(
            first, metrics=metrics, per_seed=per_seed, samples=samples,
            config={**first.config, "fit": {"per_seed": fits}},
            manifest_hash=sha256_json([r.manifest_hash for r in rows]),
            data={**first.data, "per_seed": [r.data for r in rows]}))
    return out


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def rerun(record: ResultRecord, run_dir: str | Path | None = None,
          store: str | None = None) -> JobOutcome:
    """Re-run the job that made ``record``, restricted to its row, with exactly its method
    parameters (the preset is not resolved again). The outcome's matching record is
    ``outcome.records[index]`` where ``index`` is found by :func:`matching_record`."""
    job = record.job
    if not job or job.get("task") not in TASKS:
        raise UserError(f"row {record.id} has no job to re-run (written before records "
                        "rebuilt their run); re-run its command instead")
    task = TASKS[job["task"]]
    fields_ = {k: v for k, v in job["config"].items()
               if k in {f for f in task.config_class.__dataclass_fields__}}
    for k, v in list(fields_.items()):
        if isinstance(v, list) and isinstance(task.config_class.__dataclass_fields__[k].default,
                                                tuple):
            fields_[k] = tuple(v)
    params = dict(record.method_params)
    if "seed" in get_method_class(record.method_name).job_options:
        params.pop("seed", None)  # the job sets each seed
    cfg = task.config_class(**{**fields_, "method_params": params, "config": "defaults",
                               "store": store, "seeds": tuple(record.seeds),
                               "seed": record.seeds[0] if record.seeds else record.seed,
                               "run_dir": str(run_dir or runs_root() / "rerun" / f"row{record.id}"),
                               "save_checkpoint": None, "progress": False, "plot": False})
    cfg = task.rerun_config(cfg, record)
    return run(task, cfg, write=store is not None)


def matching_record(outcome: JobOutcome, record: ResultRecord) -> ResultRecord:
    """The re-run row that corresponds to ``record`` (same board, method and setting)."""
    for r in outcome.records:
        if (r.board, r.method, r.setting) == (record.board, record.method, record.setting):
            return r
    raise RuntimeError(f"the re-run gave no row for {record.method} {record.setting}")
