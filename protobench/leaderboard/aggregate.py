"""Rows that differ only in the seed, averaged: mean and Student-t 95% CI over seeds.

``aggregate_rows(records)`` groups a board's rows by method, split, setting and identity
(:func:`protobench.leaderboard.labels.identity`) without what a seed changes (the seed, the
episode manifest and stream hashes; fit statistics are never part of an identity) and
gives one :class:`SeedGroup` per group: each seed's value of the primary metric, their
mean and the Student-t 95% half-width over seeds (:func:`protobench.evaluation.stats.
mean_ci95`, scipy). A row that already averages several seeds (``per_seed``) contributes
each of its seeds; a seed found in several rows of a group takes the latest row's value,
as on the board. Groups are ranked by their mean within a setting; seeds draw their own
episodes or streams, so two groups are not paired: ``protobench compare`` pairs them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

from rich.markup import escape
from rich.table import Table

from protobench.evaluation.stats import mean_ci95
from protobench.leaderboard.labels import differing, identity, label
from protobench.leaderboard.render import setting_text
from protobench.tasks.record import ResultRecord


def seed_dependent(key: str) -> bool:
    """Identity keys a seed changes: the seed itself, the seed count, manifest and stream
    hashes (``stream.hash``, ``...manifest...``)."""
    return key in ("seed", "seeds") or key.endswith("hash") or "manifest" in key


def seed_free(r: ResultRecord) -> dict[str, str]:
    """``r``'s identity without its seed-dependent keys. A row over several seeds keeps its
    fit statistics per seed (``fit.per_seed``): its fit choices (``centred_on``,
    ``train_steps``, ...) are read from its first seed, as on a single-seed row."""
    fit = r.config.get("fit")
    if isinstance(fit, dict) and fit.get("per_seed") and isinstance(fit["per_seed"][0], dict):
        r = replace(r, config={**r.config, "fit": fit["per_seed"][0]})
    return {k: v for k, v in identity(r).items() if not seed_dependent(k)}


def group_key(r: ResultRecord) -> str:
    """Rows with the same key differ only in the seed (same board, method and setting)."""
    return json.dumps([r.board, r.method, r.split, r.setting, seed_free(r)], sort_keys=True,
                      default=str)


def seed_values(r: ResultRecord, metric: str) -> list[tuple[int, float]]:
    """``(seed, value)`` of ``metric`` for every seed ``r`` holds (``per_seed`` when filled)."""
    if r.per_seed:
        return [(int(p["seed"]), float(p["metrics"][metric]["value"])) for p in r.per_seed
                if metric in p.get("metrics", {})]
    return [(r.seed, r.metrics[metric].value)] if metric in r.metrics else []


@dataclass(frozen=True)
class SeedGroup:
    """One configuration over its seeds: ``values[i]`` is seed ``seeds[i]``'s value."""

    board: str
    setting: str
    method: str
    label: str  # the config label, telling the groups of one setting and method apart
    metric: str
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    mean: float
    ci95: float | None  # Student-t half-width; None for one seed
    row_ids: tuple[int | None, ...]
    rank: int = 0  # by mean within the setting, best first

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def value_text(self) -> str:
        ci = f" ± {100 * self.ci95:.2f}" if self.ci95 is not None else ""
        return f"{100 * self.mean:.2f}{ci}"

    def cells(self) -> list[str]:
        return [self.setting, str(self.rank), self.method, self.label, self.value_text,
                str(self.n), ",".join(map(str, self.seeds)),
                ",".join("" if i is None else str(i) for i in self.row_ids)]


def aggregate_rows(records: Sequence[ResultRecord], metric: str | None = None
                   ) -> list[SeedGroup]:
    """One :class:`SeedGroup` per set of rows differing only in the seed (module
    docstring), ``metric`` (default: each row's primary metric) over their seeds; sorted by
    setting, then by mean, best first. Rows without the metric are left out."""
    groups: dict[str, list[ResultRecord]] = {}
    for r in records:
        groups.setdefault(group_key(r), []).append(r)
    out: list[SeedGroup] = []
    by_setting: dict[str, list[tuple[list[ResultRecord], dict[int, float]]]] = {}
    for rows in groups.values():
        name = metric or rows[-1].primary_metric
        values: dict[int, float] = {}
        for r in rows:  # oldest first: the latest row of a seed wins
            values.update(seed_values(r, name))
        if values:
            by_setting.setdefault(setting_text(rows[0].setting), []).append((rows, values))
    for setting in sorted(by_setting):
        members = by_setting[setting]
        ids = [seed_free(rows[-1]) for rows, _ in members]
        keys = {m: differing([i for (rows, _), i in zip(members, ids) if rows[-1].method == m])
                for m in {rows[-1].method for rows, _ in members}}
        made = []
        for (rows, values), ident in zip(members, ids):
            seeds = tuple(sorted(values))
            mean, ci = mean_ci95([values[s] for s in seeds])
            last = rows[-1]
            made.append(SeedGroup(last.board, setting, last.method,
                                  label(ident, keys[last.method]),
                                  metric or last.primary_metric, seeds,
                                  tuple(values[s] for s in seeds), mean, ci,
                                  tuple(r.id for r in rows)))
        made.sort(key=lambda g: -g.mean)
        out += [replace(g, rank=i) for i, g in enumerate(made, 1)]
    return out


def headers(groups: Sequence[SeedGroup]) -> tuple[str, ...]:
    """The columns of :meth:`SeedGroup.cells`, naming the metric (``acc`` for accuracy)."""
    names = {g.metric for g in groups}
    name = names.pop() if len(names) == 1 else "value"
    name = "acc" if name == "accuracy" else name
    return ("setting", "#", "method", "config", f"{name} % ± t-CI95", "n", "seeds", "rows")


def notes(groups: Sequence[SeedGroup], markdown: bool = True) -> list[str]:
    """What the aggregated table shows, one line each (Markdown bullets when ``markdown``)."""
    if not groups:
        return []
    cmd = "`protobench compare BOARD A B`" if markdown else "protobench compare BOARD A B"
    lines = [
        "Rows that differ only in the seed (and the episodes or stream it drew) are one "
        "group: the mean over its seeds with a Student-t 95% CI (n = seeds; no CI for one "
        "seed); a row averaging several seeds contributes each of them.",
        "Seeds draw their own episodes, so groups are ranked by mean, not paired: "
        f"{cmd} tests two of them on the same episodes or seeds.",
    ]
    return [f"- {line}" for line in lines] if markdown else lines


def table(board: str, groups: Sequence[SeedGroup]) -> Table:
    """A rich table of ``groups`` (:func:`aggregate_rows`)."""
    t = Table(title=escape(f"{board} (mean over seeds, Student-t 95% CI)"))
    for col in headers(groups):
        t.add_column(col, overflow="fold")
    for g in groups:
        t.add_row(*map(escape, g.cells()))
    return t


def to_markdown(board: str, groups: Sequence[SeedGroup]) -> str:
    header = headers(groups)
    lines = [f"## {board} (mean over seeds, Student-t 95% CI)", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in g.cells()) + " |"
              for g in groups]
    extra = notes(groups)
    return "\n".join(lines + ([""] + extra if extra else [])) + "\n"
