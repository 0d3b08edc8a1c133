"""The OOD task behind ``protobench ood``: train (or load) the ID model, score, describe.

Validation comes before any training (set specs, class overlap between ID and OOD, score
names and parameters, logit scores on a method without a classifier head, the method and
its parameters). ``load`` reads the ID training / test data and the OOD sets once
(recording each OOD set's size); for each seed (the runner's loop) the task trains the
method (or loads ``checkpoint``), extracts features (and logits) once per set, fits every
score once and scores every set (:mod:`protobench.tasks.ood_eval`), and saves ``roc.png``
in the seed's run folder. The runner writes ``result.json`` and one row per score on the
board ``ood/<id dataset>`` at the very end; with several seeds every metric is the mean
over seeds with a Student-t 95% CI.

Row layout: ``method`` is ``<method>+<score>`` (e.g. ``palm+ssd``, ``ce+msp``) so that
every method/score pair ranks in one table; ``setting`` = the ID and OOD specs;
``metrics``: ``auroc``, ``aupr_in``, ``aupr_out``, ``fpr95_id_positive``,
``fpr95_ood_positive`` (means over OOD sets), the same with ``near_`` / ``far_``,
``<set>/<metric>`` per set and ``id_accuracy``; primary metric ``auroc``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from protobench.errors import UserError, check_input_shape
from protobench.methods import OODMethod, build_method, get_method_class, load_method
from protobench.methods.presets import preset_label, with_preset_options
from protobench.ood.data import check_disjoint, load_id, load_ood, ood_group, parse_set, parse_sets
from protobench.ood.metrics import METRIC_NAMES
from protobench.ood.scores import resolve_scores
from protobench.report.plots import save_roc
from protobench.tasks.base import (
    JobConfig,
    SeedContext,
    SeedRun,
    Task,
    method_params,
    register_task,
    run,
)
from protobench.tasks.ood_eval import Evaluation, evaluate
from protobench.tasks.provenance import Stopwatch
from protobench.tasks.record import Metric, ResultRecord, curve_key
from protobench.utils import sha256_json

TASK = "ood"


@dataclass(frozen=True, kw_only=True)
class OODConfig(JobConfig):
    id: str
    ood: str
    method: str = "ce"
    scores: tuple[str, ...] = ()
    epochs: int | None = None
    score_params: dict[str, Any] = field(default_factory=dict)
    ood_roots: dict[str, str] = field(default_factory=dict)
    test_fraction: float = 0.2


@dataclass(frozen=True)
class OODOutcome:
    scores: tuple[str, ...]
    per_seed: list[Evaluation]
    groups: dict[str, str]
    counts: dict[str, int]
    records: list[ResultRecord]
    run_dir: Path
    plot: Path | None


@dataclass
class OODData:
    id_text: str
    train: Any
    test: Any
    ood: dict[str, Any]
    groups: dict[str, str]
    counts: dict[str, int]
    scores: tuple[str, ...]
    score_params: dict[str, dict[str, Any]]
    id_shape: tuple[int, ...]


class OODTask(Task):
    name = "ood"
    method_task = TASK
    config_class = OODConfig

    def preset_dataset(self, cfg: OODConfig) -> str:
        return parse_set(cfg.id).name

    def scores(self, cfg: OODConfig) -> tuple[tuple[str, ...], dict[str, dict[str, Any]]]:
        cls = get_method_class(cfg.method)
        return resolve_scores(cfg.method, cls.has_classifier, cls.default_score,
                              tuple(cfg.scores), cfg.score_params)

    def params(self, cfg: OODConfig, seed: int, several: bool = False) -> dict[str, Any]:
        return method_params(self, cfg, seed, {"backbone": cfg.backbone}, several=several)

    def validate(self, cfg: OODConfig) -> OODConfig:
        cfg = replace(cfg, dataset_options=with_preset_options(self.preset(cfg),
                                                               cfg.dataset_options))
        probe = build_method(cfg.method, task=TASK, **self.params(cfg, cfg.seed))
        if not isinstance(probe, OODMethod):
            raise UserError(f"method {cfg.method!r} is not an OOD method; see "
                            "`protobench methods`")
        self.scores(cfg)
        id_spec, ood_specs = parse_set(cfg.id), parse_sets(cfg.ood)
        if not ood_specs:
            raise UserError("give at least one OOD set with --ood NAME[,NAME2]")
        texts = [o.text for o in ood_specs]
        if len(set(texts)) != len(texts):
            raise UserError(f"an OOD set is listed twice in --ood {cfg.ood!r}")
        for o in ood_specs:  # same-dataset overlap: before any data is read
            if o.name == id_spec.name:
                check_disjoint(id_spec, (), o, ())
        return cfg

    def load(self, cfg: OODConfig, device: torch.device) -> OODData:
        id_spec, ood_specs = parse_set(cfg.id), parse_sets(cfg.ood)
        train, test = load_id(id_spec, cfg.data_root, cfg.dataset_options, cfg.test_fraction)
        id_shape = tuple(train.get(torch.tensor([0])).shape[1:])
        ood = {}
        for o in ood_specs:
            root = cfg.ood_roots.get(o.name, cfg.data_root if o.name == id_spec.name else None)
            opts = cfg.dataset_options if o.name == id_spec.name else {}
            data = load_ood(o, id_shape, root, opts)
            check_disjoint(id_spec, train.class_names, o, data.class_names)
            ood[o.text] = data
        groups = {o.text: ood_group(id_spec.name, o.name) for o in ood_specs}
        scores, score_params = self.scores(cfg)
        return OODData(id_spec.text, train, test, ood, groups,
                       {name: len(d) for name, d in ood.items()}, scores, score_params,
                       id_shape)

    def run_name(self, cfg: OODConfig) -> str:
        return f"{parse_set(cfg.id).text.replace(':', '_')}-{cfg.method}-seed{cfg.seed}"

    def run_seed(self, cfg: OODConfig, data: OODData, ctx: SeedContext,
                 device: torch.device) -> SeedRun:
        with Stopwatch() as sw:
            if cfg.checkpoint:
                method = load_method(cfg.checkpoint)
                if not isinstance(method, OODMethod):
                    raise UserError(f"{cfg.checkpoint} holds no OOD method")
                self.check_checkpoint(cfg.checkpoint, method, data)
                params = method.get_params()
                fit: dict[str, Any] = {"checkpoint": cfg.checkpoint}
            else:
                method = build_method(cfg.method, task=TASK,
                                      **self.params(cfg, ctx.seed, ctx.several))
                assert isinstance(method, OODMethod)
                params = method.get_params()
                fit = dict(method.fit(data.train, device, cfg.epochs, progress=cfg.progress))
            if ctx.save_checkpoint is not None:
                ctx.save_checkpoint.parent.mkdir(parents=True, exist_ok=True)
                method.save(ctx.save_checkpoint)
            ev = evaluate(method, data.train, data.test, data.ood, data.groups,
                          list(data.scores), data.score_params, device,
                          keep_scores=cfg.plot and ctx.index == 0)
        plot = save_roc(ctx.job_dir / "roc.png", f"ID {data.id_text} - {cfg.method} (seed "
                        f"{ctx.seed})", ev.roc_scores) if cfg.plot and ctx.index == 0 else None
        records = [self.record(cfg, data, method, params, s, ev, fit, ctx.seed, sw.seconds)
                   for s in data.scores]
        return SeedRun(records, OODOutcome(data.scores, [ev], data.groups, data.counts,
                                           records, ctx.run_dir, plot))

    def check_checkpoint(self, path: str, method: OODMethod, data: OODData) -> None:
        """A loaded model must have been trained for these ID inputs and classes."""
        trained = method.trained_config()
        check_input_shape(f"{method.name} (checkpoint {path})", trained.get("in_shape"),
                          data.id_shape)
        classes = trained.get("num_classes")
        if classes is not None and int(classes) != data.train.num_classes:
            raise UserError(f"checkpoint {path} was trained on {classes} ID classes but --id "
                            f"gives {data.train.num_classes}; pass the --id set it was "
                            "trained on")

    def record(self, cfg: OODConfig, data: OODData, method: OODMethod,
               params: dict[str, Any], score: str, ev: Evaluation, fit: dict[str, Any],
               seed: int, seconds: float) -> ResultRecord:
        manifest = sha256_json({"id": data.id_text, "id_test": data.test.checksum,
                                "ood": data.counts, "seeds": [seed]})
        metrics: dict[str, Metric] = {"id_accuracy": Metric(ev.id_accuracy, None, 1)}
        for key, value in ev.summary[score].items():
            metrics[key] = Metric(value, None, 1)
        for name in ev.metrics[score]:
            for m in METRIC_NAMES:
                metrics[f"{name}/{m}"] = Metric(ev.metrics[score][name][m], None, 1)
        resolved = method.trained_config().get("backbone")  # "auto" -> its choice
        preset = "from checkpoint" if cfg.checkpoint else preset_label(self.preset(cfg))
        return ResultRecord(
            task=TASK, dataset=data.id_text.split(":")[0], split=data.test.split,
            method=f"{cfg.method}+{score}",
            setting={"id": data.id_text, "ood": ",".join(data.counts)},
            config={"preset": preset, "score": score,
                    "score_params": data.score_params[score], "epochs": cfg.epochs,
                    "ood_counts": data.counts, "groups": data.groups,
                    "id_test_count": len(data.test),
                    "id_accuracy_source": ev.id_accuracy_source, "fpr_rule": "roc_first",
                    "resolved_backbone": resolved or params.get("backbone"),
                    "dataset_options": cfg.dataset_options, "test_fraction": cfg.test_fraction,
                    "fit": {"per_seed": [fit]}},
            metrics=metrics, seed=seed, manifest_hash=manifest, wall_time_s=seconds,
            primary_metric="auroc", method_name=cfg.method, method_params=params,
            data={"id": data.id_text, "ood": data.counts, "dataset_options": cfg.dataset_options,
                  "test_fraction": cfg.test_fraction,
                  "checksum": {"id_train": data.train.checksum, "id_test": data.test.checksum,
                               **{name: d.checksum for name, d in data.ood.items()}}},
            samples={curve_key(name, seed, axis): values
                     for name, (fpr, tpr) in ev.curves[score].items()
                     for axis, values in (("fpr", fpr), ("tpr", tpr))})

    def rerun_config(self, cfg: OODConfig, record: ResultRecord) -> OODConfig:
        return replace(cfg, scores=(record.config["score"],), score_params=dict(
            record.config.get("score_params") or {}))

    def result_extra(self, runs: list[SeedRun]) -> dict[str, Any]:
        first = runs[0].outcome
        return {"ood_counts": first.counts, "groups": first.groups}


register_task(OODTask())


def run_ood(cfg: OODConfig) -> OODOutcome:
    """Run the job described by ``cfg``; every seed's evaluation and the stored rows."""
    job = run(OODTask(), cfg)
    first = job.outcome
    return OODOutcome(first.scores, [r.outcome.per_seed[0] for r in job.runs], first.groups,
                      first.counts, job.records, job.run_dir, first.plot)
