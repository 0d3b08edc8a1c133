"""The few-shot job: train (when the method needs it), evaluate episodes, record results.

``run_fewshot(FewShotConfig(...))`` validates everything it can before any training
(names, episode specs against the data, features), evaluates each requested shot on
seeded episodes (or the dataset's fixed episode list), and writes all leaderboard rows
in one transaction at the very end, so a failed run leaves no row.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protobench.datasets import LabeledData, get_dataset, load_dataset
from protobench.datasets.base import check_disjoint_classes, shared_classes
from protobench.episodic import (
    EpisodeList,
    EpisodeResult,
    EpisodeSpec,
    evaluate_episodes,
    make_episodes,
)
from protobench.episodic.evaluate import check_features
from protobench.episodic.sampler import check_spec
from protobench.episodic.scored import evaluate_scored
from protobench.errors import DataError, UserError
from protobench.feature_cache import FeatureCache
from protobench.geometry.geodesic import evaluate_geodesic
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
from protobench.methods import FewShotMethod, build_method, get_method_class, load_method
from protobench.methods.presets import Preset, preset_label, resolve_preset, with_preset
from protobench.utils import resolve_device


@dataclass(frozen=True)
class FewShotConfig:
    dataset: str
    method: str = "protonet"
    ways: int = 5
    shots: tuple[int, ...] = (1,)
    queries: int = 15
    episodes: int = 1000
    seed: int = 0
    split: str | None = None
    metric: str | None = None
    backbone: str | None = None
    train_steps: int | None = None
    train_ways: int | None = None
    train_shots: int | None = None
    train_queries: int | None = None
    device: str = "auto"
    data_root: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    train_dataset: str | None = None
    train_options: dict[str, Any] = field(default_factory=dict)
    method_params: dict[str, Any] = field(default_factory=dict)
    clip_model: str | None = None  # proto-clip methods: open_clip model name / tag
    pretrained: str | None = None
    metric_options: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    save_checkpoint: str | None = None
    save_episodes: str | None = None
    episodes_file: str | None = None
    store: str | None = str(DEFAULT_STORE)
    progress: bool = True
    feature_cache: bool = True
    cache_dir: str | None = None
    allow_class_overlap: bool = False
    config: str | None = None  # preset name, best, defaults; None = the dataset's preset


@dataclass(frozen=True)
class FewShotOutcome:
    setting: dict[str, Any]
    result: EpisodeResult
    record: ResultRecord


def preset(cfg: FewShotConfig) -> Preset | None:
    """The preset ``cfg.config`` selects for this dataset (None = the card's defaults)."""
    return resolve_preset(cfg.method, cfg.config, cfg.dataset, "fewshot")


def _method_params(cfg: FewShotConfig, shots: int) -> dict[str, Any]:
    # preset values under --param (strict, checked by build) and the job's own options
    params: dict[str, Any] = with_preset(preset(cfg), cfg.method_params)
    accepted = inspect.signature(get_method_class(cfg.method).__init__).parameters
    for key in ("metric", "backbone", "train_steps", "train_ways", "train_queries"):
        value = getattr(cfg, key)
        if value is not None and (key in accepted or key in ("metric", "backbone")):
            params[key] = value  # training options are ignored by training-free methods
    for key in ("clip_model", "pretrained"):  # vision-language encoders (proto-clip)
        value = getattr(cfg, key)
        if value is not None:
            if key not in accepted:
                raise UserError(f"--{key.replace('_', '-')} applies to methods with a CLIP "
                                f"encoder (proto-clip, proto-clip-f), not {cfg.method}")
            params[key] = value
    if "train_shots" in accepted:
        params["train_shots"] = cfg.train_shots or shots
    if "seed" in accepted:
        params.setdefault("seed", cfg.seed)
    if cfg.metric_options:  # --metric-option: merged into the method's metric_options
        params["metric_options"] = {**(params.get("metric_options") or {}),
                                    **cfg.metric_options}
    return params


def _train_groups(cfg: FewShotConfig, trainable: bool) -> list[tuple[int, ...]]:
    """Shots that share one trained model: one model per shot unless train_shots is fixed."""
    if not trainable or cfg.train_shots or cfg.checkpoint or len(cfg.shots) == 1:
        return [tuple(cfg.shots)]
    return [(k,) for k in cfg.shots]


def run_fewshot(cfg: FewShotConfig) -> list[FewShotOutcome]:
    """Run the job described by ``cfg``; returns one outcome per evaluated setting."""
    if not cfg.shots:
        raise UserError("give at least one --shots value")
    entry = get_dataset(cfg.dataset)
    device = resolve_device(cfg.device)
    split = cfg.split or entry.default_test_split
    probe = build_method(cfg.method, task="fewshot", **_method_params(cfg, cfg.shots[0]))
    assert isinstance(probe, FewShotMethod)
    test = load_dataset(cfg.dataset, split, cfg.data_root, **cfg.dataset_options)
    if test.is_features:
        check_features(test.x)

    fixed = entry.episodes(test) if entry.episodes is not None else None
    episode_lists = _episode_lists(cfg, test, fixed)

    train = None
    if probe.trainable and not cfg.checkpoint and probe.get_params().get("train_steps", 1) != 0:
        train = _load_train(cfg, entry, test)
        if train is None:
            raise UserError(f"{cfg.method} needs a training split and {cfg.dataset} has none; "
                            "pass --train-dataset NAME[:SPLIT] or --checkpoint")
    elif not probe.trainable:
        try:  # optional: e.g. NCM centres features on the meta-train mean when there is one
            train = _load_train(cfg, entry, test)
        except DataError:
            train = None

    overlap: dict[str, Any] = {}  # recorded in every row when overlap is allowed
    if cfg.allow_class_overlap:
        overlap = {"allow_class_overlap": True,
                   "shared_classes": len(shared_classes(train, test)) if train else 0}
    cache = None
    if cfg.feature_cache:
        cache = FeatureCache(Path(cfg.cache_dir)) if cfg.cache_dir else FeatureCache()
    outcomes: list[FewShotOutcome] = []
    versions, revision = package_versions(), git_revision()
    groups = _train_groups(cfg, probe.trainable)
    for group in groups:
        with Stopwatch() as sw:
            if cfg.checkpoint:
                method = load_method(cfg.checkpoint, **_metric_overrides(cfg))
                trained_on = getattr(method, "trained_on", None)
                if trained_on is not None:  # the checkpoint's own meta-train classes
                    check_disjoint_classes(trained_on, test, cfg.allow_class_overlap)
                method.feature_cache = cache
                fit_stats: dict[str, Any] = {"checkpoint": cfg.checkpoint}
            else:
                method = build_method(cfg.method, task="fewshot",
                                      **_method_params(cfg, group[0]))
                method.feature_cache = cache  # NCM's fit reads the train features through it
                fit_stats = dict(method.fit(train, device, progress=cfg.progress))
            if cfg.save_checkpoint:
                method.save(_checkpoint_path(cfg.save_checkpoint, group, len(groups) > 1))
            before = (cache.hits, cache.misses) if cache else (0, 0)
            feats = method.transform(method.cached_features(test, device))
            if cache is None or cache.misses > before[1]:
                fit_stats["test_features"] = "computed"
            elif cache.hits > before[0]:
                fit_stats["test_features"] = "cached"
            check_features(feats)
            head = getattr(method, "geodesic", None)
            if head is not None and head.needs_train_pool and head.pool is None:
                train = train if train is not None else _load_train(cfg, entry, test)
                if train is None:
                    raise UserError("geo_pool with pool=train needs a meta-train split; pass "
                                    "--train-dataset or --metric-option pool=test")
                head.set_pool(method.transform(method.cached_features(train, device)))
                fit_stats["geodesic_pool"] = f"{train.name}:{train.split}"
        for shots in group:
            episodes = episode_lists[shots]
            extra: dict[str, Any] = {}  # per-setting choices of self-scoring methods
            with Stopwatch() as ev:
                if head is not None:
                    result = evaluate_geodesic(head, feats, episodes, device=device)
                elif callable(getattr(method, "score_episodes", None)):  # e.g. proto-clip
                    extra["selected"] = method.prepare_episodes(
                        test, episodes.ways, episodes.shots, episodes.queries, device)
                    result = evaluate_scored(feats, episodes, method, method.episode_chunk,
                                             device, cfg.progress)
                else:
                    result = evaluate_episodes(feats, episodes, metric=method.metric,
                                               device=device)
            setting = {"ways": episodes.ways, "shots": episodes.shots,
                       "queries": episodes.queries, "episodes": episodes.episodes}
            record = ResultRecord(
                task=head.task if head is not None else "fewshot", dataset=cfg.dataset,
                split=split, method=cfg.method,
                setting=setting,
                config={**method.get_params(), "preset": "from checkpoint" if cfg.checkpoint
                        else preset_label(preset(cfg)),
                        "fit": fit_stats,
                        "dataset_options": cfg.dataset_options,
                        "train_dataset": cfg.train_dataset or "",
                        "train_options": cfg.train_options, **overlap, **extra},
                metrics={"accuracy": Metric(result.mean, result.ci95, result.n)},
                seed=cfg.seed, manifest_hash=episodes.hash, versions=versions,
                git_revision=revision, device=device_name(device),
                wall_time_s=sw.seconds + ev.seconds, timestamp=now_utc())
            outcomes.append(FewShotOutcome(setting, result, record))
    if cfg.store:
        ResultStore(cfg.store).add_all([o.record for o in outcomes])
    return outcomes


def _episode_lists(cfg: FewShotConfig, test: LabeledData,
                   fixed: EpisodeList | None) -> dict[int, EpisodeList]:
    """Episodes per shot, validated against the data before any training starts."""
    if cfg.episodes_file:
        if len(cfg.shots) != 1:
            raise UserError("--episodes-file replays one list: give a single --shots value")
        lst = EpisodeList.load(cfg.episodes_file)
        lst.check_against(test.name, test.split, test.checksum)
        return {cfg.shots[0]: lst}
    if fixed is not None:
        if tuple(cfg.shots) != (fixed.shots,) or cfg.ways not in (5, fixed.ways):
            raise UserError(f"{test.name} has fixed {fixed.ways}-way {fixed.shots}-shot "
                            f"episodes; use --ways {fixed.ways} --shots {fixed.shots}")
        return {fixed.shots: fixed}
    lists = {}
    for k in cfg.shots:
        spec = EpisodeSpec(cfg.ways, k, cfg.queries, cfg.episodes, cfg.seed)
        check_spec(test, spec)
        lists[k] = make_episodes(test, spec)
        if cfg.save_episodes:
            out = Path(cfg.save_episodes)
            out.mkdir(parents=True, exist_ok=True)
            lists[k].save(out / f"{test.name}_{test.split}_{cfg.ways}w{k}s{cfg.queries}q"
                                f"_{cfg.episodes}e_seed{cfg.seed}.json")
    return lists


def _load_train(cfg: FewShotConfig, entry: Any, test: LabeledData) -> LabeledData | None:
    """The meta-train split (``--train-dataset``, the dataset's declared one, or its own
    ``train`` split). The evaluated dataset's options (``-o image_size=...``) carry over to
    a split of the same dataset, ``--train-option`` overriding them, so both are loaded
    alike. A split that shares classes with the evaluated one is refused unless
    ``allow_class_overlap`` (see :func:`check_disjoint_classes`)."""
    if cfg.train_dataset:
        name, _, split = cfg.train_dataset.partition(":")
        split = split or "train"
    elif entry.train_dataset is not None:
        name, split = entry.train_dataset
    elif "train" in entry.splits:
        name, split = cfg.dataset, "train"
    else:
        return None
    options = {**cfg.dataset_options, **cfg.train_options} if name == cfg.dataset \
        else dict(cfg.train_options)
    train = load_dataset(name, split, cfg.data_root, **options)
    check_disjoint_classes(train, test, cfg.allow_class_overlap)
    return train


def _metric_overrides(cfg: FewShotConfig) -> dict[str, Any]:
    """--metric / --metric-option applied to a loaded checkpoint (evaluation-time choices)."""
    out: dict[str, Any] = {}
    if cfg.metric is not None:
        out["metric"] = cfg.metric
    if cfg.metric_options:
        out["metric_options"] = cfg.metric_options
    return out


def _checkpoint_path(path: str, group: tuple[int, ...], several: bool) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p.with_name(f"{p.stem}_{group[0]}shot{p.suffix}") if several else p

