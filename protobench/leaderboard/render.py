"""Ranked tables of a board: rows, Markdown, CSV and rich console output.

Rows are grouped by setting (e.g. 5-way 1-shot) and, within a setting, by the episodes
they were measured on (the manifest hash): a row is ranked by the primary metric, best
first, only against rows measured on the same episodes. The *main* episodes of a setting
are those most of its rows share (ties: the most recent); rows measured on other
episodes come after the main group, ranked among themselves and marked († ‡ ...), and
the notes under the table say so. The latest row wins when a run was repeated with the
same method, setting, seed and identity (see :mod:`protobench.leaderboard.labels`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from protobench.leaderboard.labels import differing, identity, label, shared
from protobench.tasks.record import ResultRecord
from protobench.tasks.store import ResultStore

MARKERS = ("†", "‡", "§", "¶")


@dataclass(frozen=True)
class Row:
    rank: int  # within the rows of its setting measured on the same episodes
    setting: str
    method: str
    value: float
    ci95: float | None
    n: int | None
    details: str  # the "config" label
    seed: int
    manifest: str
    when: str
    record: ResultRecord
    group: int = 0  # 0: the setting's main episodes; 1, 2, ...: other episodes
    marker: str = ""  # "" in the main group, else the group's footnote mark

    @property
    def value_text(self) -> str:
        ci = f" ± {100 * self.ci95:.2f}" if self.ci95 is not None and self.ci95 == self.ci95 else ""
        return f"{100 * self.value:.2f}{ci}"

    @property
    def rank_text(self) -> str:
        return f"{self.rank} {self.marker}" if self.marker else str(self.rank)


def setting_text(setting: dict) -> str:
    """``5w1s 15q`` for few-shot settings, ``key=value`` pairs otherwise."""
    if {"ways", "shots"} <= set(setting):
        text = f"{setting['ways']}w{setting['shots']}s"
        if "queries" in setting:
            text += f" {setting['queries']}q"
        extra = {k: v for k, v in setting.items()
                 if k not in ("ways", "shots", "queries", "episodes")}
    else:
        text, extra = "", dict(setting)
    rest = " ".join(f"{k}={v}" for k, v in sorted(extra.items()))
    return (text + " " + rest).strip()


def marker(group: int) -> str:
    """The footnote mark of a setting's ``group``-th other episodes (``""`` for the main)."""
    if group == 0:
        return ""
    return MARKERS[group - 1] if group <= len(MARKERS) else f"{MARKERS[0]}{group}"


def _episode_groups(records: list[ResultRecord]) -> list[list[ResultRecord]]:
    """Records by manifest hash; the main group (most rows, then most recent) first."""
    by_hash: dict[str, list[ResultRecord]] = {}
    for r in records:
        by_hash.setdefault(r.manifest_hash, []).append(r)
    return sorted(by_hash.values(),
                  key=lambda g: (len(g), max(r.timestamp for r in g)), reverse=True)


def ranked_rows(records: list[ResultRecord]) -> list[Row]:
    latest: dict[str, ResultRecord] = {}
    for r in records:
        key = json.dumps([r.method, r.split, r.setting, r.seed, identity(r)], sort_keys=True)
        latest[key] = r
    settings: dict[str, list[ResultRecord]] = {}
    for r in latest.values():
        settings.setdefault(setting_text(r.setting), []).append(r)
    rows = []
    for setting in sorted(settings):
        members = settings[setting]
        ids = {id(r): identity(r) for r in members}
        keys = {method: differing([ids[id(r)] for r in members if r.method == method])
                for method in {r.method for r in members}}
        for g, group in enumerate(_episode_groups(members)):
            ranked = sorted(group, key=lambda r: -r.metrics[r.primary_metric].value)
            for i, r in enumerate(ranked, 1):
                m = r.metrics[r.primary_metric]
                rows.append(Row(i, setting, r.method, m.value, m.ci95, m.n,
                                label(ids[id(r)], keys[r.method]), r.seed, r.manifest_hash[:12],
                                r.timestamp, r, g, marker(g)))
    return rows


def notes(rows: Sequence[Row], markdown: bool = True) -> list[str]:
    """What the table's columns mean, which rows were measured on other episodes, and what
    every row of a setting shares; one line each (Markdown bullets when ``markdown``)."""
    if not rows:
        return []
    code = (lambda s: f"`{s}`") if markdown else (lambda s: s)
    lines = [
        "config: backbone and metric, then every parameter whose value differs between the "
        "rows of the same setting and method (nested options flattened, e.g. "
        f"{code('metric_options.m=128')}; {code('checkpoint')}, {code('train_steps')}, "
        f"{code('geodesic_pool')} from the fit); a parameter absent from a row was not set on "
        "it (its default applied); the parameters all those rows share are listed below.",
        "rank: a row is ranked only against the rows of its setting measured on the same "
        "episodes (same manifest hash, column episodes).",
    ]
    used = list(dict.fromkeys(r.marker for r in rows if r.marker))
    if used:
        lines.append(
            f"{', '.join(used)}: measured on other episodes "
            "than the setting's main ones (the episodes most of its rows share; on a tie the "
            "most recent): ranked among themselves after the main group, not a paired "
            "comparison with it (compare through the confidence intervals).")
    by_setting: dict[str, list[Row]] = {}
    for r in rows:
        by_setting.setdefault(r.setting, []).append(r)
    for setting, members in by_setting.items():
        groups: dict[int, list[Row]] = {}
        for r in members:
            groups.setdefault(r.group, []).append(r)
        if len(groups) > 1:
            parts = [f"{g[0].marker or 'main'} {code(g[0].manifest or 'no manifest')} "
                     f"({len(g)} row{'s' if len(g) > 1 else ''})" for g in groups.values()]
            lines.append(f"{setting} episodes: " + ", ".join(parts) + ".")
        for method in sorted({r.method for r in members}):
            common = shared([identity(r.record) for r in members if r.method == method])
            if common:
                lines.append(f"{setting} {method}, same in every row: "
                             + ", ".join(code(f"{k}={v}") for k, v in common.items()) + ".")
    return [f"- {line}" for line in lines] if markdown else lines


HEADER = ("setting", "rank", "method", "accuracy % (95% CI)", "n", "config", "seed",
          "episodes", "when")
CONSOLE_HEADER = ("setting", "#", "method", "acc % ± CI95", "n", "config", "episodes", "row")


def value_name(rows: list[Row]) -> str:
    """The ranked metric of ``rows``: ``accuracy`` on few-shot and continual boards,
    ``auroc`` on OOD boards; ``value`` when a board mixes several."""
    names = {r.record.primary_metric for r in rows}
    return names.pop() if len(names) == 1 else "value"


def headers(rows: list[Row], console: bool = False) -> tuple[str, ...]:
    """:data:`HEADER` (or :data:`CONSOLE_HEADER`) naming the metric the rows rank by."""
    name = value_name(rows) if rows else "accuracy"
    if console:
        short = "acc" if name == "accuracy" else name
        return tuple(f"{short} % ± CI95" if h == CONSOLE_HEADER[3] else h for h in CONSOLE_HEADER)
    return tuple(f"{name} % (95% CI)" if h == HEADER[3] else h for h in HEADER)


def _n(row: Row) -> str:
    return "" if row.n is None else str(row.n)


def console_cells(row: Row) -> list[str]:
    """The cells of ``row`` under :data:`CONSOLE_HEADER`."""
    return [row.setting, row.rank_text, row.method, row.value_text, _n(row), row.details,
            row.manifest, "" if row.record.id is None else str(row.record.id)]


def _cells(row: Row) -> list[str]:
    return [row.setting, row.rank_text, row.method, row.value_text, _n(row), row.details,
            str(row.seed), row.manifest, row.when]


def _md(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def to_markdown(board: str, rows: list[Row]) -> str:
    header = headers(rows)
    lines = [f"## {board}", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(c) for c in _cells(r)) + " |" for r in rows]
    extra = notes(rows)
    return "\n".join(lines + ([""] + extra if extra else [])) + "\n"


def to_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["board", "setting", "rank", "method", "value", "ci95", "n", "config", "seed",
                "manifest_hash", "git_revision", "device", "wall_time_s", "timestamp",
                "details", "episodes_group", "marker"])
    for r in rows:
        rec = r.record
        w.writerow([rec.board, r.setting, r.rank, r.method, f"{r.value:.6f}",
                    "" if r.ci95 is None else f"{r.ci95:.6f}", r.n,
                    json.dumps(rec.config, sort_keys=True), r.seed, rec.manifest_hash,
                    rec.git_revision, rec.device, f"{rec.wall_time_s:.2f}", rec.timestamp,
                    r.details, "main" if r.group == 0 else f"other {r.group}", r.marker])
    return buf.getvalue()


def export(store: ResultStore, out_dir: str | Path) -> list[Path]:
    """Write ``<task>_<dataset>.md`` / ``.csv`` per board and an index ``README.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, index = [], ["# Leaderboards", ""]
    for board in store.boards():
        rows = ranked_rows(store.records(board))
        stem = board.replace("/", "_")
        md, cs = out / f"{stem}.md", out / f"{stem}.csv"
        md.write_text(to_markdown(board, rows))
        cs.write_text(to_csv(rows))
        written += [md, cs]
        index.append(f"- [{board}]({stem}.md) ({len(rows)} rows)")
    readme = out / "README.md"
    readme.write_text("\n".join(index) + "\n")
    return written + [readme]
