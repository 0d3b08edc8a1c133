"""Check every cell of a grid before any runs: names, presets, parameters, settings.

Each cell's config goes through its task's own validation (dataset, method, task support,
preset, parameters, scores, ID/OOD overlap); few-shot episode specs are checked against
the evaluated split and continual stream specs against the dataset's classes (each data
set loaded once). Every problem is collected, so one report lists all of them.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from protobench.continual.stream import StreamSpec, stream_from_dataset
from protobench.datasets import get_dataset, load_dataset
from protobench.episodic import fixed_episodes
from protobench.episodic.lists import episode_lists
from protobench.errors import UserError
from protobench.methods.presets import preset_label
from protobench.sweep.grid import Grid, cell_key, expand
from protobench.tasks.base import TASKS, Task
from protobench.utils import canonical_json


def job_config(task: Task, config: dict[str, Any], **overrides: Any) -> Any:
    """The task's config for a cell (no store, no progress bars unless overridden), with
    ``{runs}`` filled in."""
    return task.config_class(**{"store": None, "progress": False, "plot": False,
                                **expand(config), **overrides})


def validate(grid: Grid, policy: str = "version") -> Grid:
    """``grid`` with every cell keyed, or a UserError listing every problem."""
    problems = list(grid.problems)
    task = TASKS[grid.task]
    data_cache: dict[str, Any] = {}
    keyed = []
    for cell in grid.cells:
        try:
            cfg = task.validate(job_config(task, cell.config))
            _check_data(grid.task, cfg, data_cache)
            preset = "from checkpoint" if cfg.checkpoint else preset_label(task.preset(cfg))
            keyed.append(replace(cell, key=cell_key(grid.task, cell.config, preset, policy)))
        except UserError as exc:
            problems.append(f"{cell.describe()}: {exc}")
        except (TypeError, ValueError) as exc:
            problems.append(f"{cell.describe()}: invalid value ({exc})")
    if problems:
        unique = list(dict.fromkeys(problems))
        raise UserError(f"grid {grid.name} has {len(unique)} problem(s); nothing ran:\n  - "
                        + "\n  - ".join(unique))
    return replace(grid, cells=keyed)


def _check_data(task: str, cfg: Any, cache: dict[str, Any]) -> None:
    if task == "fewshot":
        entry = get_dataset(cfg.dataset)
        split = cfg.split or entry.default_test_split
        key = canonical_json(["fewshot", cfg.dataset, split, cfg.data_root, cfg.dataset_options])
        if key not in cache:
            cache[key] = load_dataset(cfg.dataset, split, cfg.data_root, **cfg.dataset_options)
        test = cache[key]
        episode_lists(test, cfg.ways, tuple(cfg.shots), cfg.queries, cfg.episodes, cfg.seed,
                      fixed=fixed_episodes(entry, test), episodes_file=cfg.episodes_file,
                      check_only=True)
    elif task == "continual":
        spec = StreamSpec(cfg.experiences, cfg.base_classes, cfg.class_order, cfg.seed,
                          cfg.num_classes)
        key = canonical_json(["continual", cfg.dataset, cfg.data_root, cfg.dataset_options,
                              cfg.test_fraction, asdict(spec)])
        if key not in cache:
            cache[key] = stream_from_dataset(cfg.dataset, spec, cfg.data_root,
                                             test_fraction=cfg.test_fraction,
                                             **cfg.dataset_options)
    elif task == "ood":
        TASKS["ood"].scores(cfg)

