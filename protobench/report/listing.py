"""Rich tables of the registries: ``protobench list KIND [PATTERN]``, ``protobench methods
[NAME]``, ``protobench datasets`` and ``protobench presets``.

Every table is generated from a :class:`~protobench.registry.Registry` (names, summaries,
``describe``), so a newly registered method, dataset, score, distance or backbone shows up
without touching the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from protobench.registry import registry


def _cell(value: Any) -> str:
    """A table cell: ``yes``/``no`` for flags, comma-joined lists, ``-`` for nothing."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return "-" if value is None or value == "" else str(value)


def _options(params: list[dict[str, Any]]) -> str:
    """``name=default`` for each parameter (``name`` alone when required)."""
    return ", ".join(f"{p['name']}={p['default']!r}" if "default" in p else p["name"]
                     for p in params) or "-"


def _table(title: str, columns: Iterable[str], rows: Iterable[Iterable[str]]) -> Table:
    """A table of plain-text cells (never read as rich markup, so ``[C, H, W]`` shows);
    the first column (the name) never wraps, so names stay whole and greppable."""
    columns, rows = list(columns), [[str(c) for c in row] for row in rows]
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, no_wrap=i == 0, overflow="fold")
    for row in rows:
        table.add_row(*(Text(c) for c in row))
    return table


def methods_table(pattern: str | None = None) -> Table:
    """name, tasks, distances, trains, presets, summary of the registered methods."""
    from protobench.methods.presets import list_presets

    return _table("methods", ("name", "tasks", "distances", "trains", "presets", "summary"),
                  [(cls.name, _cell(sorted(cls.tasks)), _cell(cls.distances), _cell(cls.trains),
                    _cell(list(list_presets(cls.name))), cls.summary)
                   for cls in registry("methods").list(pattern)])


def datasets_table(pattern: str | None = None) -> Table:
    """name, splits, data root (needed / embedded), description of the registered datasets."""
    return _table("datasets", ("name", "splits", "data root", "description"),
                  [(e.name, _cell(e.splits), "needed" if e.needs_root else "embedded",
                    e.description) for e in registry("datasets").list(pattern)])


def scores_table(pattern: str | None = None) -> Table:
    """name, needs (logits / labels / features only), parameters, summary of the OOD scores."""
    reg, rows = registry("scores"), []
    for name in reg.names(pattern):
        d = reg.describe(name)
        needs = [w for w, flag in (("logits", d["needs_logits"]), ("labels", d["needs_labels"]))
                 if flag]
        rows.append((name, _cell(needs or "features"), _options(d["parameters"]), d["summary"]))
    return _table("scores", ("name", "needs", "parameters", "summary"), rows)


def metrics_table(pattern: str | None = None) -> Table:
    """name, fast ranker, summary of the registered distances (``--metric``)."""
    reg = registry("metrics")
    return _table("metrics", ("name", "fast ranker", "summary"),
                  [(name, _cell(d["fast_ranker"]), d["summary"])
                   for name, d in ((n, reg.describe(n)) for n in reg.names(pattern))])


def backbones_table(pattern: str | None = None) -> Table:
    """name, options, summary of the registered backbones (``--backbone``)."""
    reg = registry("backbones")
    return _table("backbones", ("name", "options", "summary"),
                  [(name, _options(d["parameters"]), d["summary"])
                   for name, d in ((n, reg.describe(n)) for n in reg.names(pattern))])


TABLES: dict[str, Callable[[str | None], Table]] = {  # one per registry.KINDS
    "methods": methods_table, "datasets": datasets_table, "scores": scores_table,
    "metrics": metrics_table, "backbones": backbones_table,
}


def kind_table(kind: str, pattern: str | None = None) -> Table:
    """The table of registry ``kind`` (a key of :data:`protobench.registry.KINDS`), restricted to
    names matching ``pattern``; an unknown kind is a RegistryError naming the kinds."""
    reg = registry(kind)  # validates the kind (singular accepted)
    return TABLES[f"{reg.kind}s"](pattern)


def presets_table(methods: Iterable[str]) -> Table:
    """method, preset (version), task, parameters, chosen on: the presets of ``methods``."""
    from protobench.methods.presets import list_presets

    rows = [(name, f"{p.name} (v{p.version})", p.task, _cell({**p.params, **p.dataset_options}),
             p.chosen_on) for name in methods for p in list_presets(name).values()]
    return _table("presets", ("method", "preset", "task", "parameters", "chosen on"), rows)


def method_details(name: str) -> Group:
    """Everything ``protobench methods NAME`` shows: the summary, the constructor parameters
    (``-p key=value``) with their defaults, the declared capabilities, the job options (and
    their CLI flags) and the presets (``--config NAME``)."""
    d = registry("methods").describe(name)
    params = _table(f"{name} parameters (-p key=value)", ("parameter", "type", "default"),
                    [(p["name"], p["type"] or "-",
                      repr(p["default"]) if "default" in p else "required")
                     for p in d["parameters"]])
    caps = [(key, _cell(value)) for key, value in d["capabilities"].items()
            if key != "job_options"]
    caps.append(("job options", _cell([f"{o} (--{o.replace('_', '-')})"
                                       for o in d["job_options"]])))
    parts: list[Any] = [Text(f"{name}: {d['summary']}", style="bold"), params,
                        _table(f"{name} capabilities", ("capability", "value"), caps)]
    parts.append(presets_table([name]) if d["presets"] else Text(f"{name} has no presets"))
    return Group(*parts)
