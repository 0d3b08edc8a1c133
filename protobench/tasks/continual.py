"""The continual task behind ``protobench continual``: stream, run, plot, leaderboard row.

For each seed (the runner's loop, :mod:`protobench.tasks.base`) the task builds the
class-incremental stream (the class order follows the seed), validates the method on it,
runs :func:`protobench.tasks.continual_run.run_stream` with a checkpoint in the seed's run
folder after every experience and saves ``accuracy.png`` there; the runner writes
``result.json`` and one row on the board ``continual/<dataset>`` at the very end, so a
failed run leaves no row. Without ``--resume`` an unfinished run in the same folder is an
error (it would be lost); a finished one is replaced. ``ood_score`` adds the open-world
task (:mod:`protobench.tasks.open_world`) after every experience.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from protobench.backbones import default_backbone
from protobench.continual.stream import (
    CLASS_ORDERS,
    ClassIncrementalStream,
    StreamSpec,
    stream_from_dataset,
)
from protobench.errors import SpecError, UserError
from protobench.methods import ContinualMethod, build_method, get_method_class
from protobench.methods.continual_base import input_shape
from protobench.methods.presets import preset_label, with_preset_options
from protobench.report.plots import save_accuracy_plot
from protobench.tasks.base import (
    JobConfig,
    SeedContext,
    SeedRun,
    Task,
    method_params,
    register_task,
    run,
    runs_root,
)
from protobench.tasks.continual_run import (
    ContinualResult,
    few_steps_warning,
    read_checkpoint,
    run_stream,
)
from protobench.tasks.open_world import OpenWorld
from protobench.tasks.record import Metric, ResultRecord

PRIMARY_METRIC = "average_incremental_accuracy"
TASK = "class-incremental"


@dataclass(frozen=True, kw_only=True)
class ContinualConfig(JobConfig):
    dataset: str
    method: str = "finetune"
    experiences: int = 5
    base_classes: int | None = None
    class_order: str = "seed"
    num_classes: int | None = None
    epochs: int | None = None
    test_fraction: float = 0.2
    resume: bool = False
    ood_score: str | None = None
    ood_score_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ContinualOutcome:
    stream: ClassIncrementalStream
    result: ContinualResult
    record: ResultRecord
    run_dir: Path
    plot: Path | None


def default_run_dir(cfg: ContinualConfig) -> Path:
    return runs_root() / "continual" / ContinualTask().run_name(cfg)


class ContinualTask(Task):
    name = "continual"
    method_task = TASK
    config_class = ContinualConfig

    def __init__(self, on_experience_end: Callable[[int, torch.Tensor], None] | None = None,
                 on_warning: Callable[[str], None] | None = None) -> None:
        self.on_experience_end = on_experience_end
        self.on_warning = on_warning

    def build(self, cfg: ContinualConfig, seed: int, in_shape: tuple[int, ...] | None,
              several: bool = False) -> ContinualMethod:
        params = method_params(self, cfg, seed, {"epochs": cfg.epochs, "backbone": cfg.backbone},
                               several=several)
        accepted = get_method_class(cfg.method).job_options
        if "backbone" in accepted and in_shape is not None and \
                params.get("backbone", "auto") == "auto":
            params["backbone"] = default_backbone(in_shape)  # recorded by name in the row
        method = build_method(cfg.method, task=TASK, **params)
        if not isinstance(method, ContinualMethod):
            raise UserError(f"method {cfg.method!r} is not a continual method; see "
                            "`protobench methods`")
        return method

    def validate(self, cfg: ContinualConfig) -> ContinualConfig:
        cfg = replace(cfg, dataset_options=with_preset_options(self.preset(cfg),
                                                               cfg.dataset_options))
        self.build(cfg, cfg.seed, None)  # names and parameters, before any data is read
        if cfg.ood_score is not None:
            OpenWorld(cfg.ood_score, cfg.ood_score_params)
        if cfg.class_order not in CLASS_ORDERS:
            raise SpecError(f"unknown class order {cfg.class_order!r}; use --class-order "
                            f"{'|'.join(CLASS_ORDERS)}")
        return cfg

    def load(self, cfg: ContinualConfig, device: torch.device) -> None:
        return None  # the stream depends on the seed: built per seed

    def run_name(self, cfg: ContinualConfig) -> str:
        base = f"-b{cfg.base_classes}" if cfg.base_classes else ""
        subset = f"-c{cfg.num_classes}" if cfg.num_classes else ""
        return (f"{cfg.dataset}-{cfg.method}-{cfg.experiences}exp{base}{subset}-"
                f"{cfg.class_order}-seed{cfg.seed}")

    def run_seed(self, cfg: ContinualConfig, data: None, ctx: SeedContext,
                 device: torch.device) -> SeedRun:
        spec = StreamSpec(cfg.experiences, cfg.base_classes, cfg.class_order, ctx.seed,
                          cfg.num_classes)
        stream = stream_from_dataset(cfg.dataset, spec, cfg.data_root,
                                     test_fraction=cfg.test_fraction, **cfg.dataset_options)
        method = self.build(cfg, ctx.seed, input_shape(stream.train.x), ctx.several)
        warning = few_steps_warning(method, stream)
        if warning is not None and self.on_warning is not None:
            self.on_warning(warning)
        run_dir = ctx.run_dir
        previous = read_checkpoint(run_dir)
        if not cfg.resume and previous is not None and \
                previous["completed"] < previous["experiences"]:
            raise UserError(f"{run_dir} holds an unfinished run ({previous['completed']}/"
                            f"{previous['experiences']} experiences); pass --resume to "
                            "continue it, or --run-dir for a new run")
        identity: dict[str, Any] = {"dataset_options": cfg.dataset_options,
                                    "test_fraction": cfg.test_fraction}
        open_world = OpenWorld(cfg.ood_score, cfg.ood_score_params) \
            if cfg.ood_score is not None else None
        if open_world is not None:
            identity["ood_score"] = open_world.identity()
        params = method.get_params()
        result = run_stream(method, stream, device, seed=ctx.seed, run_dir=run_dir,
                            resume=cfg.resume, progress=cfg.progress, identity=identity,
                            on_experience_end=self.on_experience_end,
                            open_world=open_world.hook(stream, device) if open_world else None)
        record = continual_record(cfg, stream, method, result, device, open_world, params)
        plot = save_accuracy_plot(result, run_dir / "accuracy.png",
                                  f"{cfg.dataset} - {cfg.method} ({len(stream)} experiences)") \
            if cfg.plot else None
        return SeedRun([record], ContinualOutcome(stream, result, record, run_dir, plot))

    def rerun_config(self, cfg: ContinualConfig, record: ResultRecord) -> ContinualConfig:
        return replace(cfg, resume=False)  # a fresh folder: the whole stream again


def _matrix(a: torch.Tensor) -> list[list[float | None]]:
    """JSON-safe matrix: NaN (not yet seen) becomes ``None``."""
    return [[None if math.isnan(v) else round(v, 6) for v in row] for row in a.tolist()]


def continual_record(cfg: ContinualConfig, stream: ClassIncrementalStream,
                     method: ContinualMethod, result: ContinualResult, device: torch.device,
                     open_world: OpenWorld | None = None,
                     params: dict[str, Any] | None = None) -> ResultRecord:
    """The row of one continual run (provenance is added by the runner)."""
    setting = {"experiences": len(stream), "classes": stream.num_classes,
               "base_classes": stream.sizes[0] if cfg.base_classes else 0,
               "class_order": cfg.class_order}
    stream_info = {"sizes": list(stream.sizes), "class_order": list(stream.class_order),
                   "test_fraction": cfg.test_fraction, "source": stream.source,
                   "hash": stream.hash}
    fit = {"experiences": list(result.fit_stats), "accuracy_matrix": _matrix(result.accuracy),
           "til_accuracy_matrix": _matrix(result.til_accuracy),
           "test_counts": list(result.test_counts), "resumed_from": result.resumed_from}
    metrics = {k: Metric(v, None, len(stream)) for k, v in result.metrics.items()}
    context: dict[str, Any] = {}
    if open_world is not None and "open_world" in result.extra:
        context["open_world"], extra = open_world.describe(result.extra["open_world"])
        metrics.update(extra)
    return ResultRecord(
        task="continual", dataset=cfg.dataset, split=stream.test.split, method=cfg.method,
        setting=setting,
        config={"preset": preset_label(ContinualTask().preset(cfg)),
                "dataset_options": cfg.dataset_options, "stream": stream_info, "fit": fit,
                **context},
        metrics=metrics, seed=cfg.seed,
        manifest_hash=stream.hash, wall_time_s=result.wall_time_s,
        primary_metric=PRIMARY_METRIC, method_name=cfg.method,
        method_params=params if params is not None else method.get_params(),
        data={"dataset": cfg.dataset, "dataset_options": cfg.dataset_options,
              "stream": stream_info, "checksum": {"train": stream.train.checksum,
                                                  "test": stream.test.checksum}})


register_task(ContinualTask())


def run_continual(cfg: ContinualConfig,
                  on_experience_end: Callable[[int, torch.Tensor], None] | None = None,
                  on_warning: Callable[[str], None] | None = None) -> ContinualOutcome:
    """Run the job described by ``cfg``; the first seed's outcome, whose ``record`` is the
    stored row (the mean over seeds when there are several)."""
    job = run(ContinualTask(on_experience_end, on_warning), cfg)
    return replace(job.outcome, record=job.records[0])


def run_continual_job(cfg: ContinualConfig,
                      on_experience_end: Callable[[int, torch.Tensor], None] | None = None,
                      on_warning: Callable[[str], None] | None = None) -> Any:
    """Like :func:`run_continual` but returns the whole :class:`JobOutcome` (every seed)."""
    return run(ContinualTask(on_experience_end, on_warning), cfg)
