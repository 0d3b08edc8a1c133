"""The few-shot task: train (when the method needs it), evaluate episodes, describe rows.

``run_fewshot(FewShotConfig(...))`` validates everything it can before any training
(names, episode specs against the data, features), then for each seed (the runner's
loop, :mod:`protobench.tasks.base`) evaluates each requested shot on seeded episodes (or
the dataset's fixed episode list). The runner writes all rows in one transaction at the
very end, so a failed run leaves no row. A seed's row keeps the normal 95% CI over its
episodes; over several seeds the row is the mean with a Student-t CI over seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from protobench.datasets import LabeledData, get_dataset, load_dataset
from protobench.datasets.base import check_disjoint_classes, shared_classes
from protobench.datasets.meta_train import load_meta_train
from protobench.episodic import EpisodeList, fixed_episodes
from protobench.episodic.lists import episode_lists
from protobench.errors import DataError, UserError
from protobench.evaluation import EpisodeResult, check_features
from protobench.feature_cache import FeatureCache
from protobench.methods import FewShotMethod, build_method, get_method_class, load_method
from protobench.methods.presets import preset_label
from protobench.tasks.base import (
    JobConfig,
    SeedContext,
    SeedRun,
    Task,
    method_params,
    register_task,
    run,
)
from protobench.tasks.provenance import Stopwatch
from protobench.tasks.record import Metric, ResultRecord


@dataclass(frozen=True, kw_only=True)
class FewShotConfig(JobConfig):
    dataset: str
    method: str = "protonet"
    ways: int = 5
    shots: tuple[int, ...] = (1,)
    queries: int = 15
    episodes: int = 1000
    split: str | None = None
    metric: str | None = None
    train_steps: int | None = None
    train_ways: int | None = None
    train_shots: int | None = None
    train_queries: int | None = None
    train_dataset: str | None = None
    train_options: dict[str, Any] = field(default_factory=dict)
    clip_model: str | None = None  # proto-clip methods: open_clip model name / tag
    pretrained: str | None = None
    metric_options: dict[str, Any] = field(default_factory=dict)
    save_episodes: str | None = None
    episodes_file: str | None = None
    feature_cache: bool = True
    cache_dir: str | None = None
    allow_class_overlap: bool = False


@dataclass(frozen=True)
class FewShotOutcome:
    setting: dict[str, Any]
    result: EpisodeResult
    record: ResultRecord


@dataclass
class FewShotData:
    entry: Any
    split: str
    test: LabeledData
    fixed: EpisodeList | None
    cache: FeatureCache | None
    train: LabeledData | None = None
    train_loaded: bool = False


class FewShotTask(Task):
    name = "fewshot"
    method_task = "fewshot"
    config_class = FewShotConfig

    def params(self, cfg: FewShotConfig, seed: int, shots: int, several: bool = False
               ) -> dict[str, Any]:
        cls = get_method_class(cfg.method)
        options = {"backbone": cfg.backbone, "train_steps": cfg.train_steps,
                   "train_ways": cfg.train_ways, "train_queries": cfg.train_queries,
                   "clip_model": cfg.clip_model, "pretrained": cfg.pretrained,
                   "train_shots": cfg.train_shots or shots}
        params = method_params(self, cfg, seed, options, several=several)
        if cfg.metric is not None:
            if not cls.distances:
                raise UserError(f"method {cfg.method!r} scores episodes itself and takes no "
                                "--metric")
            params["metric"] = cfg.metric
        if cfg.metric_options:  # --metric-option: merged into the method's metric_options
            params["metric_options"] = {**(params.get("metric_options") or {}),
                                        **cfg.metric_options}
        return params

    def validate(self, cfg: FewShotConfig) -> FewShotConfig:
        if not cfg.shots:
            raise UserError("give at least one --shots value")
        get_dataset(cfg.dataset)
        build_method(cfg.method, task="fewshot", **self.params(cfg, cfg.seed, cfg.shots[0]))
        return cfg

    def load(self, cfg: FewShotConfig, device: torch.device) -> FewShotData:
        entry = get_dataset(cfg.dataset)
        split = cfg.split or entry.default_test_split
        test = load_dataset(cfg.dataset, split, cfg.data_root, **cfg.dataset_options)
        if test.is_features:
            check_features(test.x)
        fixed = fixed_episodes(entry, test)
        for seed in cfg.seed_list():  # episode specs checked before any training
            self.episodes(cfg, test, fixed, seed, check_only=True)
        cache = None
        if cfg.feature_cache:
            cache = FeatureCache(Path(cfg.cache_dir)) if cfg.cache_dir else FeatureCache()
        data = FewShotData(entry, split, test, fixed, cache)
        cls = get_method_class(cfg.method)
        steps = self.params(cfg, cfg.seed, cfg.shots[0]).get("train_steps", 1)
        if cls.trains and not cfg.checkpoint and steps != 0:
            if self.train_split(cfg, data) is None:
                raise UserError(f"{cfg.method} needs a training split and {cfg.dataset} has "
                                "none; pass --train-dataset NAME[:SPLIT] or --checkpoint")
        elif not cls.trains:
            try:  # optional: e.g. NCM centres features on the meta-train mean when there is one
                self.train_split(cfg, data)
            except DataError:
                data.train, data.train_loaded = None, True
        return data

    def run_name(self, cfg: FewShotConfig) -> str:
        return f"{cfg.dataset}-{cfg.method}-{cfg.ways}w-seed{cfg.seed}"

    def run_seed(self, cfg: FewShotConfig, data: FewShotData, ctx: SeedContext,
                 device: torch.device) -> SeedRun:
        lists = self.episodes(cfg, data.test, data.fixed, ctx.seed)
        overlap: dict[str, Any] = {}  # recorded in every row when overlap is allowed
        if cfg.allow_class_overlap:
            overlap = {"allow_class_overlap": True, "shared_classes":
                       len(shared_classes(data.train, data.test)) if data.train else 0}
        trains = get_method_class(cfg.method).trains
        one_model = not trains or cfg.train_shots or cfg.checkpoint or len(cfg.shots) == 1
        groups = [tuple(cfg.shots)] if one_model else [(k,) for k in cfg.shots]
        records, outcomes = [], []
        for group in groups:
            with Stopwatch() as sw:
                method, fit, params = self.fitted(cfg, data, ctx, group, len(groups) > 1, device)
                feats = self.test_features(method, data, fit, device)
                if method.needs_train_features:
                    train = self.train_split(cfg, data)
                    if train is None:
                        raise UserError("geo_pool with pool=train needs a meta-train split; "
                                        "pass --train-dataset or --metric-option pool=test")
                    method.set_train_features(
                        method.transform(method.cached_features(train, device)))
                    fit["geodesic_pool"] = f"{train.name}:{train.split}"
            for shots in group:
                episodes = lists[shots]
                with Stopwatch() as ev:
                    result, extra = method.evaluate(data.test, feats, episodes, device,
                                                    cfg.progress)
                record = self.record(cfg, data, method, params, episodes, result,
                                     {"fit": fit, **overlap, **extra},
                                     sw.seconds + ev.seconds)
                records.append(record)
                outcomes.append(FewShotOutcome(dict(record.setting), result, record))
        return SeedRun(records, outcomes)

    def fitted(self, cfg: FewShotConfig, data: FewShotData, ctx: SeedContext,
               group: tuple[int, ...], several_groups: bool, device: torch.device
               ) -> tuple[FewShotMethod, dict[str, Any], dict[str, Any]]:
        """The trained (or loaded) method for one group of shots, its fit statistics and the
        parameters it was built with."""
        if cfg.checkpoint:
            overrides: dict[str, Any] = {}
            if cfg.metric is not None:
                overrides["metric"] = cfg.metric
            if cfg.metric_options:
                overrides["metric_options"] = cfg.metric_options
            method = load_method(cfg.checkpoint, **overrides)
            if not isinstance(method, FewShotMethod):
                raise UserError(f"{cfg.checkpoint} holds no few-shot method")
            if method.trained_on is not None:  # the checkpoint's own meta-train classes
                check_disjoint_classes(method.trained_on, data.test, cfg.allow_class_overlap)
            method.feature_cache = data.cache
            return method, {"checkpoint": cfg.checkpoint}, method.get_params()
        params = self.params(cfg, ctx.seed, group[0], ctx.several)
        method = build_method(cfg.method, task="fewshot", **params)
        assert isinstance(method, FewShotMethod)
        params = method.get_params()
        method.feature_cache = data.cache  # NCM's fit reads the train features through it
        fit = dict(method.fit(data.train, device, progress=cfg.progress))  # None: not needed
        if ctx.save_checkpoint is not None:
            path = ctx.save_checkpoint
            if several_groups:
                path = path.with_name(f"{path.stem}_{group[0]}shot{path.suffix}")
            path.parent.mkdir(parents=True, exist_ok=True)
            method.save(path)
        return method, fit, params

    def test_features(self, method: FewShotMethod, data: FewShotData, fit: dict[str, Any],
                      device: torch.device) -> torch.Tensor:
        cache = data.cache
        before = (cache.hits, cache.misses) if cache else (0, 0)
        feats = method.transform(method.cached_features(data.test, device))
        if cache is None or cache.misses > before[1]:
            fit["test_features"] = "computed"
        elif cache.hits > before[0]:
            fit["test_features"] = "cached"
        check_features(feats)
        return feats

    def record(self, cfg: FewShotConfig, data: FewShotData, method: FewShotMethod,
               params: dict[str, Any], episodes: EpisodeList, result: EpisodeResult,
               context: dict[str, Any], seconds: float) -> ResultRecord:
        setting = {"ways": episodes.ways, "shots": episodes.shots,
                   "queries": episodes.queries, "episodes": episodes.episodes}
        preset = "from checkpoint" if cfg.checkpoint else preset_label(self.preset(cfg))
        return ResultRecord(
            task=method.board_task(), dataset=cfg.dataset, split=data.split,
            method=cfg.method, setting=setting,
            config={"preset": preset, "dataset_options": cfg.dataset_options,
                    "train_dataset": cfg.train_dataset or "",
                    "train_options": cfg.train_options, **context},
            metrics={"accuracy": Metric(result.mean, result.ci95, result.n)},
            samples={episodes.hash: result.accuracies.double().cpu().tolist()},
            seed=cfg.seed, manifest_hash=episodes.hash, wall_time_s=seconds,
            method_name=cfg.method, method_params=params,
            data={"dataset": cfg.dataset, "split": data.split, "checksum": data.test.checksum,
                  "dataset_options": cfg.dataset_options, "train_dataset": cfg.train_dataset,
                  "train_options": cfg.train_options, "manifest_hash": episodes.hash,
                  "episode_seed": episodes.seed})

    def episodes(self, cfg: FewShotConfig, test: LabeledData, fixed: EpisodeList | None,
                 seed: int, check_only: bool = False) -> dict[int, EpisodeList]:
        return episode_lists(test, cfg.ways, tuple(cfg.shots), cfg.queries, cfg.episodes, seed,
                             fixed=fixed, episodes_file=cfg.episodes_file,
                             save_dir=cfg.save_episodes, check_only=check_only)

    def rerun_config(self, cfg: FewShotConfig, record: ResultRecord) -> FewShotConfig:
        s = record.setting
        return replace(cfg, shots=(int(s["shots"]),), ways=int(s["ways"]),
                       queries=int(s["queries"]), episodes=int(s["episodes"]),
                       save_episodes=None)

    def train_split(self, cfg: FewShotConfig, data: FewShotData) -> LabeledData | None:
        """The meta-train split, loaded once (:func:`load_meta_train`)."""
        if not data.train_loaded:
            data.train = load_meta_train(
                cfg.dataset, data.test, train_dataset=cfg.train_dataset,
                dataset_options=cfg.dataset_options, train_options=cfg.train_options,
                data_root=cfg.data_root, allow_class_overlap=cfg.allow_class_overlap)
            data.train_loaded = True
        return data.train


TASK = register_task(FewShotTask())


def run_fewshot(cfg: FewShotConfig) -> list[FewShotOutcome]:
    """Run the job described by ``cfg``; one outcome per row (per evaluated setting), each
    with the stored record (mean over seeds when there are several)."""
    job = run(TASK, cfg)
    first: list[FewShotOutcome] = job.outcome
    return [FewShotOutcome(o.setting, o.result, rec) for o, rec in zip(first, job.records)]
