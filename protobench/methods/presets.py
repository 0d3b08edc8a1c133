"""Versioned presets: named method configurations, one YAML file per method next to it.

``<method>.yaml`` beside the method's module (``napa-vq.yaml`` beside ``napa_vq.py``)::

    method: napa-vq
    version: 2               # the file's version: the default of every entry's version
    presets:
      digits:                # named after the dataset it is for ...
        version: 3           # this preset's own version, bumped when its values change
        task: class-incremental
        chosen_on: >-        # ... and it says on what data it was chosen
          validation stream ... by benchmarks/select_presets.py
        params: {backbone: mlp, epochs: 30}
        dataset_options: {image_size: 8}   # loader options, under -o
      cifar100-necil:        # ... or after the paper setting it reproduces
        task: class-incremental
        chosen_on: the paper's setting (napa_vq.md section 6)
        params: {...}

``--config NAME`` picks a preset by name; ``--config best`` the preset named after the
dataset in use (an error when there is none); ``--config defaults`` the constructor
defaults (the card's recipe). Without ``--config`` the dataset's preset is used when one
exists, else the defaults. Explicit options (``-p``, ``--epochs``, ``--backbone``, ...)
override a preset's values. The row records ``preset`` = ``method:name@vVERSION`` (or
``defaults``), so a board says which configuration each row ran.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from protobench.errors import UserError, unknown_name
from protobench.methods.protocols import Method

BEST, DEFAULTS, AUTO = "best", "defaults", "auto"


@dataclass(frozen=True)
class Preset:
    """One named configuration of a method."""

    method: str
    name: str
    version: int
    task: str
    chosen_on: str
    params: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)  # e.g. image_size

    @property
    def label(self) -> str:
        return f"{self.method}:{self.name}@v{self.version}"


def _registered() -> dict[str, type[Method]]:
    """The registered method classes by name, found through the protocol classes (the
    registry in :mod:`protobench.methods.base` imports this module, not the reverse)."""
    out: dict[str, type[Method]] = {}
    todo = list(Method.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.name and cls.__dict__.get("name") == cls.name:
            out.setdefault(cls.name, cls)
    return out


def preset_file(method: str) -> Path:
    """``<registered name>.yaml`` in the folder of the method's module."""
    classes = _registered()
    if method not in classes:
        raise unknown_name("method", method, list(classes))
    return Path(inspect.getfile(classes[method])).with_name(f"{method}.yaml")


@cache
def list_presets(method: str) -> dict[str, Preset]:
    """The method's presets by name (empty when it has no preset file)."""
    path = preset_file(method)
    if not path.is_file():
        return {}
    blob = yaml.safe_load(path.read_text()) or {}
    version = int(blob.get("version", 1))
    out = {}
    for name, entry in (blob.get("presets") or {}).items():
        out[str(name)] = Preset(method, str(name), int(entry.get("version", version)),
                                str(entry.get("task", "")),
                                " ".join(str(entry.get("chosen_on", "")).split()),
                                dict(entry.get("params") or {}),
                                dict(entry.get("dataset_options") or {}))
    return out


def resolve_preset(method: str, config: str | None, dataset: str, task: str
                   ) -> Preset | None:
    """The preset ``--config`` asks for (see the module docstring); None = the defaults."""
    presets = {n: p for n, p in list_presets(method).items() if p.task in ("", task)}
    names = ", ".join(sorted(presets)) or "none"
    if config in (None, AUTO):
        return presets.get(dataset)
    if config == DEFAULTS:
        return None
    if config == BEST:
        if dataset not in presets:
            raise UserError(f"{method} has no preset for {dataset} ({task}); its presets: "
                            f"{names}; pass --config NAME or --config defaults")
        return presets[dataset]
    if config not in presets:
        raise UserError(f"{method} has no preset {config!r} for {task}; choose one of: "
                        f"{names}, best, defaults")
    return presets[config]


def with_preset(preset: Preset | None, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` over the preset's values (explicit options win)."""
    return {**(preset.params if preset else {}), **params}


def with_preset_options(preset: Preset | None, options: dict[str, Any]) -> dict[str, Any]:
    """Loader options ``options`` over the preset's (``-o`` wins)."""
    return {**(preset.dataset_options if preset else {}), **options}


def preset_label(preset: Preset | None) -> str:
    return preset.label if preset else DEFAULTS
