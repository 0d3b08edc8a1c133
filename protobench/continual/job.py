"""The continual job behind ``protobench continual``: stream, run, plot, leaderboard row.

``run_continual(ContinualConfig(...))`` validates what it can before any training (the
method and its parameters, the class order, the device, then the stream against the
data), runs :func:`protobench.continual.run.run_stream` with a checkpoint in the run
folder after every experience, writes ``result.json`` and ``accuracy.png`` there, and
writes one row on the board ``continual/<dataset>`` at the very end, so a failed run
leaves no row. Without ``--resume`` an unfinished run in the same folder is an error
(it would be lost); a finished one is replaced.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from protobench.backbones import default_backbone
from protobench.continual.run import ContinualResult, read_checkpoint, run_stream
from protobench.continual.stream import (
    CLASS_ORDERS,
    ClassIncrementalStream,
    StreamSpec,
    stream_from_dataset,
)
from protobench.errors import SpecError, UserError
from protobench.leaderboard.record import (
    Metric,
    ResultRecord,
    device_name,
    git_revision,
    now_utc,
    package_versions,
)
from protobench.leaderboard.store import DEFAULT_STORE, ResultStore
from protobench.methods import build_method, get_method_class, list_methods
from protobench.methods.continual_base import ContinualMethod, input_shape
from protobench.methods.presets import (
    Preset,
    preset_label,
    resolve_preset,
    with_preset,
    with_preset_options,
)
from protobench.utils import resolve_device

DEFAULT_RUNS = Path("runs") / "continual"
PRIMARY_METRIC = "average_incremental_accuracy"
TASK = "class-incremental"


@dataclass(frozen=True)
class ContinualConfig:
    dataset: str
    method: str = "finetune"
    experiences: int = 5
    base_classes: int | None = None
    class_order: str = "seed"
    num_classes: int | None = None
    seed: int = 0
    epochs: int | None = None
    backbone: str | None = None
    device: str = "auto"
    data_root: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    method_params: dict[str, Any] = field(default_factory=dict)
    test_fraction: float = 0.2
    run_dir: str | None = None
    resume: bool = False
    store: str | None = str(DEFAULT_STORE)
    progress: bool = True
    plot: bool = True
    ood_score: str | None = None
    ood_score_params: dict[str, Any] = field(default_factory=dict)
    config: str | None = None  # preset name, best, defaults; None = the dataset's preset


@dataclass(frozen=True)
class ContinualOutcome:
    stream: ClassIncrementalStream
    result: ContinualResult
    record: ResultRecord
    run_dir: Path
    plot: Path | None


def default_run_dir(cfg: ContinualConfig) -> Path:
    base = f"-b{cfg.base_classes}" if cfg.base_classes else ""
    subset = f"-c{cfg.num_classes}" if cfg.num_classes else ""
    return DEFAULT_RUNS / (f"{cfg.dataset}-{cfg.method}-{cfg.experiences}exp{base}{subset}-"
                           f"{cfg.class_order}-seed{cfg.seed}")


def preset(cfg: ContinualConfig) -> Preset | None:
    """The preset ``cfg.config`` selects for this dataset (None = the card's defaults)."""
    return resolve_preset(cfg.method, cfg.config, cfg.dataset, TASK)


def _method_params(cfg: ContinualConfig, in_shape: tuple[int, ...] | None) -> dict[str, Any]:
    cls = get_method_class(cfg.method)
    if TASK not in cls.tasks:
        raise UserError(f"method {cfg.method!r} does not support {TASK}; continual methods: "
                        f"{', '.join(c.name for c in list_methods(TASK))}")
    params: dict[str, Any] = with_preset(preset(cfg), cfg.method_params)
    accepted = inspect.signature(cls.__init__).parameters
    if cfg.epochs is not None:
        if "epochs" not in accepted:
            raise UserError(f"method {cfg.method!r} takes no --epochs")
        params["epochs"] = cfg.epochs
    if cfg.backbone is not None:
        params["backbone"] = cfg.backbone  # unknown to the method: build_method says so
    elif "backbone" in accepted and in_shape is not None and \
            params.get("backbone", accepted["backbone"].default) == "auto":
        params["backbone"] = default_backbone(in_shape)  # recorded by name in the row
    if "seed" in accepted:
        params.setdefault("seed", cfg.seed)
    return params


def _build(cfg: ContinualConfig, in_shape: tuple[int, ...] | None) -> ContinualMethod:
    method = build_method(cfg.method, task=TASK, **_method_params(cfg, in_shape))
    if not isinstance(method, ContinualMethod):
        raise UserError(f"method {cfg.method!r} is not a continual method; see "
                        "`protobench methods`")
    return method


MIN_STEPS_PER_EPOCH = 4


def few_steps_warning(method: ContinualMethod, stream: ClassIncrementalStream) -> str | None:
    """A warning when the smallest experience gives a batch-trained method fewer than
    :data:`MIN_STEPS_PER_EPOCH` SGD steps per epoch (e.g. PRD's batch 128 on an Omniglot
    experience of 80 images: one step per epoch, and the method stays near chance)."""
    batch = getattr(method, "batch_size", None)
    if not isinstance(batch, int) or batch < 1 or not len(stream):
        return None
    smallest = min(len(e.train_indices) for e in stream)
    steps = -(-smallest // batch)
    if steps >= MIN_STEPS_PER_EPOCH:
        return None
    fit = max(1, smallest // MIN_STEPS_PER_EPOCH)
    return (f"{method.name}: the smallest experience has {smallest} training samples, so "
            f"batch_size={batch} gives {steps} SGD step(s) per epoch; consider "
            f"-p batch_size={fit} or more --epochs")


def run_continual(cfg: ContinualConfig,
                  on_experience_end: Callable[[int, torch.Tensor], None] | None = None,
                  on_warning: Callable[[str], None] | None = None,
                  ) -> ContinualOutcome:
    """Run the job described by ``cfg`` (see the module docstring); ``on_warning`` receives
    advice found before training (e.g. :func:`few_steps_warning`)."""
    cfg = replace(cfg, dataset_options=with_preset_options(preset(cfg), cfg.dataset_options))
    _build(cfg, None)  # names and parameters, before any data is read
    if cfg.ood_score is not None:
        from protobench.ood.scores import build_score

        build_score(cfg.ood_score, **cfg.ood_score_params)  # name and parameters
    if cfg.class_order not in CLASS_ORDERS:
        raise SpecError(f"unknown class order {cfg.class_order!r}; use --class-order "
                        f"{'|'.join(CLASS_ORDERS)}")
    device = resolve_device(cfg.device)
    spec = StreamSpec(cfg.experiences, cfg.base_classes, cfg.class_order, cfg.seed,
                      cfg.num_classes)
    stream = stream_from_dataset(cfg.dataset, spec, cfg.data_root,
                                 test_fraction=cfg.test_fraction, **cfg.dataset_options)
    method = _build(cfg, input_shape(stream.train.x))
    warning = few_steps_warning(method, stream)
    if warning is not None and on_warning is not None:
        on_warning(warning)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    previous = read_checkpoint(run_dir)
    if not cfg.resume and previous is not None and previous["completed"] < previous["experiences"]:
        raise UserError(f"{run_dir} holds an unfinished run ({previous['completed']}/"
                        f"{previous['experiences']} experiences); pass --resume to continue "
                        "it, or --run-dir for a new run")
    identity = {"dataset_options": cfg.dataset_options, "test_fraction": cfg.test_fraction}
    open_world = None
    if cfg.ood_score is not None:
        from protobench.ood.open_world import open_world_metrics

        identity["ood_score"] = [cfg.ood_score, cfg.ood_score_params]

        def open_world(m: ContinualMethod, t: int) -> dict[str, Any] | None:
            return open_world_metrics(m, stream, t, device, str(cfg.ood_score),
                                      cfg.ood_score_params)
    result = run_stream(method, stream, device, seed=cfg.seed, run_dir=run_dir,
                        resume=cfg.resume, progress=cfg.progress, identity=identity,
                        on_experience_end=on_experience_end, open_world=open_world)
    record = _record(cfg, stream, method, result, device)
    (run_dir / "result.json").write_text(json.dumps(record.to_dict(), indent=1, default=str))
    plot = save_plot(result, run_dir / "accuracy.png",
                     f"{cfg.dataset} - {cfg.method} ({len(stream)} experiences)") \
        if cfg.plot else None
    if cfg.store:
        ResultStore(cfg.store).add_all([record])
    return ContinualOutcome(stream, result, record, run_dir, plot)


def _matrix(a: torch.Tensor) -> list[list[float | None]]:
    """JSON-safe matrix: NaN (not yet seen) becomes ``None``."""
    return [[None if math.isnan(v) else round(v, 6) for v in row] for row in a.tolist()]


def _record(cfg: ContinualConfig, stream: ClassIncrementalStream, method: ContinualMethod,
            result: ContinualResult, device: torch.device) -> ResultRecord:
    setting = {"experiences": len(stream), "classes": stream.num_classes,
               "base_classes": stream.sizes[0] if cfg.base_classes else 0,
               "class_order": cfg.class_order}
    stream_info = {"sizes": list(stream.sizes), "class_order": list(stream.class_order),
                   "test_fraction": cfg.test_fraction, "source": stream.source}
    fit = {"experiences": list(result.fit_stats), "accuracy_matrix": _matrix(result.accuracy),
           "til_accuracy_matrix": _matrix(result.til_accuracy),
           "test_counts": list(result.test_counts), "resumed_from": result.resumed_from}
    metrics = {k: Metric(v, None, len(stream)) for k, v in result.metrics.items()}
    config: dict[str, Any] = {}
    if "open_world" in result.extra:
        from protobench.ood.metrics import METRIC_NAMES

        rows = [r for r in result.extra["open_world"] if r is not None]
        config["open_world"] = {"score": cfg.ood_score, "score_params": cfg.ood_score_params,
                                "per_experience": rows}
        for m in METRIC_NAMES if rows else ():
            metrics[f"open_world_{m}"] = Metric(sum(r[m] for r in rows) / len(rows), None,
                                                len(rows))
    return ResultRecord(
        task="continual", dataset=cfg.dataset, split=stream.test.split, method=cfg.method,
        setting=setting,
        config={**method.get_params(), "preset": preset_label(preset(cfg)),
                "dataset_options": cfg.dataset_options, "stream": stream_info, "fit": fit,
                **config},
        metrics=metrics,
        seed=cfg.seed, manifest_hash=stream.hash, versions=package_versions(),
        git_revision=git_revision(), device=device_name(device),
        wall_time_s=result.wall_time_s, timestamp=now_utc(), primary_metric=PRIMARY_METRIC)


def save_plot(result: ContinualResult, path: Path, title: str) -> Path:
    """Accuracy per experience: up-to-now (class- and task-incremental) and each A[:, j]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from protobench.continual.metrics import up_to_now_accuracy

    t = len(result.accuracy)
    stages = list(range(1, t + 1))
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for j in range(t):
        ax.plot(stages[j:], 100 * result.accuracy[j:, j].numpy(), color="0.75", lw=1,
                marker=".", label="per experience (class-incr.)" if j == 0 else None)
    ax.plot(stages, 100 * up_to_now_accuracy(result.accuracy, result.test_counts).numpy(),
            marker="o", lw=2, label="up to now, class-incremental")
    ax.plot(stages, 100 * up_to_now_accuracy(result.til_accuracy, result.test_counts).numpy(),
            marker="s", lw=2, ls="--", label="up to now, task-incremental")
    ax.set(xlabel="after experience", ylabel="accuracy %", title=title, ylim=(0, 101),
           xticks=stages)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def matrix_table(outcome: ContinualOutcome, title: str = "") -> Any:
    """A rich table of the class-incremental matrix, with up-to-now and task-incr. columns."""
    from rich.table import Table

    from protobench.continual.metrics import up_to_now_accuracy

    res = outcome.result
    t = len(res.accuracy)
    table = Table(title=title or f"{outcome.record.board} - {outcome.record.method}: "
                                 "accuracy % after experience i (rows) on experience j")
    table.add_column("after")
    for j in range(t):
        table.add_column(f"exp {j + 1}", justify="right")
    table.add_column("up to now", justify="right", style="bold")
    table.add_column("task-incr.", justify="right")
    cil = up_to_now_accuracy(res.accuracy, res.test_counts)
    til = up_to_now_accuracy(res.til_accuracy, res.test_counts)
    for i in range(t):
        cells = [f"{100 * res.accuracy[i, j]:.1f}" if j <= i else "" for j in range(t)]
        table.add_row(f"exp {i + 1}", *cells, f"{100 * cil[i]:.2f}", f"{100 * til[i]:.2f}")
    return table


def metrics_table(outcome: ContinualOutcome) -> Any:
    from rich.table import Table

    table = Table(title="metrics (%)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in outcome.result.metrics.items():
        table.add_row(k.replace("_", " "), f"{100 * v:.2f}")
    return table


def open_world_table(outcome: ContinualOutcome) -> Any:
    """Per experience: OOD metrics of the unseen classes' test data vs the seen ones' (%)."""
    from rich.table import Table

    cfg = outcome.record.config.get("open_world") or {}
    table = Table(title=f"open world: score {cfg.get('score')}, unseen classes as OOD (%)")
    for col in ("after", "n ID", "n OOD", "AUROC", "FPR95 ID+", "FPR95 OOD+"):
        table.add_column(col, justify="right")
    for r in cfg.get("per_experience", []):
        table.add_row(f"exp {r['after']}", str(r["n_id"]), str(r["n_ood"]),
                      f"{100 * r['auroc']:.2f}", f"{100 * r['fpr95_id_positive']:.2f}",
                      f"{100 * r['fpr95_ood_positive']:.2f}")
    return table
