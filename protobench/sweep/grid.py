"""Grid files: a task, datasets, methods, settings and seeds that multiply into cells.

A grid is a YAML mapping::

    name: digits-fewshot          # default: the file name
    task: fewshot                 # fewshot | continual | ood
    datasets: [digits]            # (ood: `id` and `ood` lists instead)
    methods:                      # a name, or a mapping: name, params, config (preset), label
      - protonet
      - {name: ncm, params: {metric: cosine}, label: ncm-cosine}
    settings: {ways: 5, shots: [1, 5], episodes: 1000}    # lists multiply
    options: {device: cpu, dataset_options: {image_size: 16}}  # every cell, never multiplied
    seeds: [0, 1, 2]              # or a count, or "0-4"
    exclude: [{method: ncm, shots: 5}]   # drop matching cells of the product
    include: [{method: protonet, shots: 10}]   # add cells (lists inside multiply)
    matrix:                       # instead of the product: explicit entries (lists multiply)
      - {method: protonet, dataset: digits, shots: [1, 5]}

Each cell is one job of one seed and one setting (few-shot: one ``shots`` value, or
several evaluated on one trained model when written as a nested list, ``shots: [[1, 5]]``;
OOD: one ID/OOD pair and its scores), keyed by :func:`cell_key`: the hash of the task, the cell's
whole job configuration with the preset resolved to its versioned label, and the code
policy (``version``: the protobench version; ``git``: also the git revision). Run folders,
stores and progress settings are not part of the key.

Paths may name the runs folder as ``{runs}`` (``$PROTOBENCH_RUNS`` or ``runs/``), e.g.
``save_checkpoint: "{runs}/boards/checkpoints/model.pt"``; the placeholder is filled in when
a cell runs, and the key holds the text as written, so it does not depend on the machine.
``overrides`` (``protobench sweep --set KEY=VALUE``) replace a field in every cell, e.g.
``episodes=20`` for a smoke run (the keys change with them).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from protobench.errors import UserError
from protobench.tasks.base import TASKS, parse_seeds, runs_root
from protobench.tasks.provenance import git_revision, package_versions
from protobench.utils import sha256_json

TOP_KEYS = ("name", "task", "datasets", "dataset", "id", "ood", "methods", "settings",
            "options", "seeds", "exclude", "include", "matrix", "description")
NOT_IN_KEY = ("store", "run_dir", "progress", "plot", "cache_dir", "feature_cache",
              "save_checkpoint", "save_episodes", "resume")
POLICIES = ("version", "git")


@dataclass(frozen=True)
class CellSpec:
    """One cell: the task and the keyword arguments of its config class."""

    grid: str
    task: str
    config: dict[str, Any]
    label: str  # the method's label in the grid (its name unless `label:` is given)
    key: str = ""

    def describe(self) -> str:
        c = self.config
        what = c.get("dataset") or f"{c.get('id')} vs {c.get('ood')}"
        skip = {"dataset", "id", "ood", "method", "method_params", "seed", "seeds", "config"}
        setting = ", ".join(f"{k}={v}" for k, v in sorted(c.items())
                            if k not in skip and k not in NOT_IN_KEY and not isinstance(v, dict))
        return f"{self.task} {what} {self.label} seed={c.get('seed')} {setting}".strip()


@dataclass
class Grid:
    name: str
    task: str
    cells: list[CellSpec]
    problems: list[str] = field(default_factory=list)
    source: str = ""


def expand(value: Any) -> Any:
    """``value`` with ``{runs}`` filled in, inside strings, lists and mappings."""
    if isinstance(value, str):
        return value.replace("{runs}", str(runs_root())) if "{runs}" in value else value
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(expand(v) for v in value)
    return value


def _listify(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list | tuple) else [v]


def _method(entry: Any) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"method": entry, "label": entry}
    if isinstance(entry, dict) and "name" in entry:
        unknown = set(entry) - {"name", "params", "config", "label"}
        if unknown:
            raise UserError(f"a method entry takes name, params, config, label; got "
                            f"{', '.join(sorted(unknown))}")
        out = {"method": entry["name"], "label": entry.get("label", entry["name"])}
        if entry.get("params"):
            out["method_params"] = dict(entry["params"])
        if entry.get("config") is not None:
            out["config"] = entry["config"]
        return out
    raise UserError(f"a method is a name or a mapping with `name`, got {entry!r}")


def _product(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the list-valued keys of ``entry`` (dict values stay whole)."""
    keys = list(entry)
    values = [_listify(entry[k]) if not isinstance(entry[k], dict) else [entry[k]]
              for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def _matches(cell: dict[str, Any], pattern: dict[str, Any]) -> bool:
    return all(cell.get(k) == v or (k == "method" and cell.get("label") == v)
               for k, v in pattern.items())


def _entries(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The flat cell entries (method, dataset, settings; no seed yet)."""
    task = doc["task"]
    data_key = {"ood": ("id", "ood")}.get(task, ("dataset",))
    if doc.get("matrix") is not None:
        entries = [c for e in _listify(doc["matrix"]) for c in _product(dict(e))]
    else:
        base: dict[str, Any] = {}
        if task == "ood":
            base["id"], base["ood"] = doc.get("id"), doc.get("ood")
        else:
            base["dataset"] = doc.get("datasets", doc.get("dataset"))
        base.update(doc.get("settings") or {})
        methods = [_method(m) for m in _listify(doc.get("methods") or [])]
        entries = [{**m, **c} for c in _product(base) for m in methods]
        for pattern in _listify(doc.get("exclude") or []):
            entries = [e for e in entries if not _matches(e, dict(pattern))]
    for extra in _listify(doc.get("include") or []):
        entries += _product(dict(extra))
    out = []
    for e in entries:
        if "name" in e:  # include/matrix entries may name a method like the methods list
            e = {**{k: v for k, v in e.items() if k not in ("name", "params", "label")},
                 **_method({k: e[k] for k in ("name", "params", "config", "label") if k in e})}
        elif "method" in e and "label" not in e:
            e = {**e, "label": e["method"]}
        missing = [k for k in ("method", *data_key) if e.get(k) is None]
        if missing:
            raise UserError(f"a cell lacks {', '.join(missing)}: {e}")
        out.append(e)
    return out


def cell_key(task: str, config: dict[str, Any], preset: str, policy: str = "version") -> str:
    """The cell's identity (see the module docstring)."""
    if policy not in POLICIES:
        raise UserError(f"unknown revision policy {policy!r}; choose {' or '.join(POLICIES)}")
    material = {"task": task, "preset": preset,
                "config": {k: v for k, v in sorted(config.items()) if k not in NOT_IN_KEY},
                "protobench": package_versions().get("protobench", "")}
    if policy == "git":
        material["git"] = git_revision()
    return sha256_json(material)


def load_grid(path: str | Path, policy: str = "version",
              overrides: dict[str, Any] | None = None) -> Grid:
    """Parse and expand ``path``; structural errors raise, per-cell problems are collected
    by :func:`protobench.sweep.checks.validate` (nothing runs before it passes).
    ``overrides`` replace those fields in every cell (see the module docstring)."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise UserError(f"cannot read grid {p}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"grid {p} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise UserError(f"grid {p} must be a mapping with task, datasets, methods, seeds")
    unknown = sorted(set(doc) - set(TOP_KEYS))
    if unknown:
        raise UserError(f"grid {p}: unknown key(s) {', '.join(unknown)}; a grid takes "
                        f"{', '.join(TOP_KEYS)}")
    task = doc.get("task")
    if task not in TASKS:
        raise UserError(f"grid {p}: task must be one of {', '.join(sorted(TASKS))}, got "
                        f"{task!r}")
    name = str(doc.get("name") or p.stem)
    fixed = sorted({"seed", "seeds"} & set(overrides or {}))
    if fixed:
        raise UserError(f"--set cannot change {', '.join(fixed)}: the grid's `seeds:` names "
                        "the seeds its cells run")
    seeds_doc = doc.get("seeds", [0])
    seeds = list(parse_seeds(str(seeds_doc))) if isinstance(seeds_doc, int | str) \
        else [int(s) for s in _listify(seeds_doc)]
    options = dict(doc.get("options") or {})
    config_fields = {f.name for f in fields(TASKS[task].config_class)}
    cells, problems = [], []
    for e in _entries(doc):
        label = e.pop("label")
        cfg: dict[str, Any] = {**options, **e, **(overrides or {})}
        if task == "fewshot" and "shots" in cfg:
            cfg["shots"] = tuple(_listify(cfg["shots"]))
        if task == "ood" and "scores" in cfg:
            cfg["scores"] = tuple(str(cfg["scores"]).split(",")) \
                if isinstance(cfg["scores"], str) else tuple(cfg["scores"])
        bad = sorted(set(cfg) - config_fields)
        if bad:
            problems.append(f"{label}: {task} cells take no {', '.join(bad)} (fields: "
                            f"{', '.join(sorted(config_fields - set(NOT_IN_KEY)))})")
            continue
        for seed in seeds:
            cells.append(CellSpec(name, task, {**cfg, "seed": seed}, label))
    keys = [c.describe() for c in cells]
    if len(set(keys)) != len(keys):
        problems.append("the grid lists the same cell twice (check include/matrix entries)")
    return Grid(name, task, cells, problems, str(p))
