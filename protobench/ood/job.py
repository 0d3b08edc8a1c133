"""The OOD job behind ``protobench ood``: train (or load) the ID model, score, record.

``run_ood(OODConfig(...))`` validates everything it can before any training (set specs,
class overlap between ID and OOD, score names and parameters, logit scores on a method
without a classifier head, the method and its parameters, the device), loads the ID
training / test data and the OOD sets (recording each OOD set's size), then for each seed
trains the method (or loads ``checkpoint``), extracts features (and logits) once per set,
fits every score once and scores every set (:mod:`protobench.ood.evaluate`). It writes
``result.json`` and ``roc.png`` (first seed's curves) into the run folder, and one
leaderboard row per score on the board ``ood/<id dataset>`` at the very end, so a failed
run leaves no row. With several seeds every metric is the mean over seeds with a
Student-t 95% CI.

Row layout: ``method`` is ``<method>+<score>`` (e.g. ``palm+ssd``, ``ce+msp``) so that
every method/score pair ranks in one table; ``setting`` = the ID and OOD specs;
``metrics``: ``auroc``, ``aupr_in``, ``aupr_out``, ``fpr95_id_positive``,
``fpr95_ood_positive`` (means over OOD sets), the same with ``near_`` / ``far_``,
``<set>/<metric>`` per set and ``id_accuracy``; primary metric ``auroc``.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from protobench.errors import UserError, check_input_shape
from protobench.leaderboard.record import (
    Metric,
    ResultRecord,
    Stopwatch,
    device_name,
    git_revision,
    now_utc,
    package_versions,
)
from protobench.leaderboard.store import DEFAULT_STORE, ResultStore
from protobench.methods import build_method, get_method_class, load_method
from protobench.methods.presets import (
    Preset,
    preset_label,
    resolve_preset,
    with_preset,
    with_preset_options,
)
from protobench.ood.data import (
    check_disjoint,
    load_id,
    load_ood,
    ood_group,
    parse_set,
    parse_sets,
)
from protobench.ood.evaluate import Evaluation, evaluate
from protobench.ood.metrics import METRIC_NAMES
from protobench.ood.model import OODMethod
from protobench.ood.report import mean_ci95, save_roc
from protobench.ood.scores import get_score_class, score_parameters
from protobench.utils import resolve_device, sha256_json

DEFAULT_RUNS = Path("runs") / "ood"
TASK = "ood"


@dataclass(frozen=True)
class OODConfig:
    id: str
    ood: str
    method: str = "ce"
    scores: tuple[str, ...] = ()
    epochs: int | None = None
    seed: int = 0
    seeds: int = 1
    device: str = "auto"
    backbone: str | None = None
    method_params: dict[str, Any] = field(default_factory=dict)
    score_params: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    save_checkpoint: str | None = None
    data_root: str | None = None
    ood_roots: dict[str, str] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    test_fraction: float = 0.2
    run_dir: str | None = None
    store: str | None = str(DEFAULT_STORE)
    progress: bool = True
    plot: bool = True
    config: str | None = None  # preset name, best, defaults; None = the ID dataset's preset


@dataclass(frozen=True)
class OODOutcome:
    scores: tuple[str, ...]
    per_seed: list[Evaluation]
    groups: dict[str, str]
    counts: dict[str, int]
    records: list[ResultRecord]
    run_dir: Path
    plot: Path | None


def _scores(cfg: OODConfig, cls: type) -> tuple[tuple[str, ...], dict[str, dict[str, Any]]]:
    scores = tuple(dict.fromkeys(cfg.scores)) or (cls.default_score,)
    for s in scores:
        sc = get_score_class(s)
        if sc.needs_logits and not cls.has_classifier:
            raise UserError(f"score {s!r} needs logits but method {cfg.method!r} has no "
                            "classifier head; use a feature score (knn, mahalanobis, ssd, "
                            "mahalanobis-centred, prototype) or --method ce")
    per_score = {s: {k: v for k, v in cfg.score_params.items() if k in score_parameters(s)}
                 for s in scores}
    unused = sorted(set(cfg.score_params) - {k for p in per_score.values() for k in p})
    if unused:
        raise UserError(f"no requested score takes parameter(s) {', '.join(unused)}; "
                        f"scores: {', '.join(scores)}")
    return scores, per_score


def preset(cfg: OODConfig) -> Preset | None:
    """The preset ``cfg.config`` selects for the ID dataset (None = the card's defaults)."""
    return resolve_preset(cfg.method, cfg.config, parse_set(cfg.id).name, TASK)


def _method_params(cfg: OODConfig, seed: int) -> dict[str, Any]:
    params: dict[str, Any] = with_preset(preset(cfg), cfg.method_params)
    accepted = inspect.signature(get_method_class(cfg.method).__init__).parameters
    if cfg.backbone is not None:
        params["backbone"] = cfg.backbone  # unknown to the method: build_method says so
    if "seed" in accepted:
        params["seed"] = seed
    return params


def run_ood(cfg: OODConfig) -> OODOutcome:
    """Run the job described by ``cfg`` (see the module docstring)."""
    cls = get_method_class(cfg.method)
    cfg = replace(cfg, dataset_options=with_preset_options(preset(cfg), cfg.dataset_options))
    probe = build_method(cfg.method, task=TASK, **_method_params(cfg, cfg.seed))
    if not isinstance(probe, OODMethod):
        raise UserError(f"method {cfg.method!r} is not an OOD method; see `protobench methods`")
    scores, score_params = _scores(cfg, cls)
    if cfg.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {cfg.seeds}")
    if cfg.checkpoint and cfg.seeds > 1:
        raise UserError("--checkpoint evaluates one trained model; drop --seeds or train")
    id_spec, ood_specs = parse_set(cfg.id), parse_sets(cfg.ood)
    if not ood_specs:
        raise UserError("give at least one OOD set with --ood NAME[,NAME2]")
    texts = [o.text for o in ood_specs]
    if len(set(texts)) != len(texts):
        raise UserError(f"an OOD set is listed twice in --ood {cfg.ood!r}")
    for o in ood_specs:  # same-dataset overlap: before any data is read
        if o.name == id_spec.name:
            check_disjoint(id_spec, (), o, ())
    device = resolve_device(cfg.device)
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
    counts = {name: len(d) for name, d in ood.items()}

    per_seed: list[Evaluation] = []
    fits: list[dict[str, Any]] = []
    run_dir = Path(cfg.run_dir) if cfg.run_dir else \
        DEFAULT_RUNS / f"{id_spec.text.replace(':', '_')}-{cfg.method}-seed{cfg.seed}"
    with Stopwatch() as sw:
        for i in range(cfg.seeds):
            seed = cfg.seed + i
            if cfg.checkpoint:
                method = load_method(cfg.checkpoint)
                if not isinstance(method, OODMethod):
                    raise UserError(f"{cfg.checkpoint} holds no OOD method")
                _check_checkpoint(cfg.checkpoint, method, train, id_shape)
                fits.append({"checkpoint": cfg.checkpoint})
            else:
                method = build_method(cfg.method, task=TASK, **_method_params(cfg, seed))
                assert isinstance(method, OODMethod)
                fits.append(dict(method.fit(train, device, cfg.epochs, progress=cfg.progress)))
            if cfg.save_checkpoint:
                path = Path(cfg.save_checkpoint)
                if cfg.seeds > 1:
                    path = path.with_name(f"{path.stem}_seed{seed}{path.suffix}")
                path.parent.mkdir(parents=True, exist_ok=True)
                method.save(path)
            per_seed.append(evaluate(method, train, test, ood, groups, list(scores),
                                     score_params, device, keep_scores=cfg.plot and i == 0))
    plot = save_roc(run_dir / "roc.png", f"ID {id_spec.text} - {cfg.method} (seed {cfg.seed})",
                    per_seed[0].roc_scores) if cfg.plot else None
    records = _records(cfg, id_spec.text, test, method, scores, score_params, per_seed, fits,
                       groups, counts, device, sw.seconds)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").write_text(json.dumps(
        {"rows": [r.to_dict() for r in records], "ood_counts": counts, "groups": groups},
        indent=1, default=str))
    if cfg.store:
        ResultStore(cfg.store).add_all(records)
    return OODOutcome(scores, per_seed, groups, counts, records, run_dir, plot)


def _check_checkpoint(path: str, method: OODMethod, train: Any, id_shape: tuple[int, ...]
                      ) -> None:
    """A loaded model must have been trained for these ID inputs and classes."""
    trained = getattr(method, "config_", {}) or {}
    check_input_shape(f"{method.name} (checkpoint {path})", trained.get("in_shape"), id_shape)
    classes = trained.get("num_classes")
    if classes is not None and int(classes) != train.num_classes:
        raise UserError(f"checkpoint {path} was trained on {classes} ID classes but --id "
                        f"gives {train.num_classes}; pass the --id set it was trained on")


def _records(cfg: OODConfig, id_text: str, test: Any, method: OODMethod,
             scores: tuple[str, ...], score_params: dict[str, dict[str, Any]],
             per_seed: list[Evaluation], fits: list[dict[str, Any]], groups: dict[str, str],
             counts: dict[str, int], device: Any, seconds: float) -> list[ResultRecord]:
    versions, revision = package_versions(), git_revision()
    manifest = sha256_json({"id": id_text, "id_test": test.checksum, "ood": counts,
                            "seeds": [cfg.seed + i for i in range(cfg.seeds)]})
    acc, acc_ci = mean_ci95([e.id_accuracy for e in per_seed])
    records = []
    for s in scores:
        metrics: dict[str, Metric] = {"id_accuracy": Metric(acc, acc_ci, cfg.seeds)}
        for key in per_seed[0].summary[s]:
            metrics[key] = Metric(*mean_ci95([e.summary[s][key] for e in per_seed]), cfg.seeds)
        for name in per_seed[0].metrics[s]:
            for m in METRIC_NAMES:
                metrics[f"{name}/{m}"] = Metric(
                    *mean_ci95([e.metrics[s][name][m] for e in per_seed]), cfg.seeds)
        params = method.get_params()
        params.pop("seed", None)
        resolved = getattr(method, "config_", {}).get("backbone")  # "auto" -> its choice
        if resolved:
            params["backbone"] = resolved
        records.append(ResultRecord(
            task=TASK, dataset=id_text.split(":")[0], split=test.split,
            method=f"{cfg.method}+{s}", setting={"id": id_text, "ood": ",".join(counts)},
            config={**params, "preset": preset_label(preset(cfg)), "method": cfg.method,
                    "score": s, "score_params": score_params[s],
                    "seeds": cfg.seeds, "epochs": cfg.epochs, "ood_counts": counts,
                    "groups": groups, "id_test_count": len(test),
                    "id_accuracy_source": per_seed[0].id_accuracy_source,
                    "fpr_rule": "roc_first", "dataset_options": cfg.dataset_options,
                    "test_fraction": cfg.test_fraction, "fit": {"per_seed": fits}},
            metrics=metrics, seed=cfg.seed, manifest_hash=manifest, versions=versions,
            git_revision=revision, device=device_name(device), wall_time_s=seconds,
            timestamp=now_utc(), primary_metric="auroc"))
    return records
