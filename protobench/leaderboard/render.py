"""Ranked tables of a board: rows, Markdown, CSV and rich console output.

Rows are grouped by setting (e.g. 5-way 1-shot) and ranked within a group by the
primary metric, best first; the latest row wins when a run was repeated with the
same method, setting, config and seed.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from protobench.leaderboard.record import ResultRecord
from protobench.leaderboard.store import ResultStore


@dataclass(frozen=True)
class Row:
    rank: int
    setting: str
    method: str
    value: float
    ci95: float | None
    n: int | None
    details: str
    seed: int
    manifest: str
    when: str
    record: ResultRecord

    @property
    def value_text(self) -> str:
        ci = f" ± {100 * self.ci95:.2f}" if self.ci95 is not None and self.ci95 == self.ci95 else ""
        return f"{100 * self.value:.2f}{ci}"


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


def _details(r: ResultRecord) -> str:
    """Short config summary: ``conv4 sqeuclidean, 200 steps 5w1s``."""
    c = r.config
    text = " ".join(str(c[k]) for k in ("backbone", "metric") if k in c)
    if "clip_model" in c:  # proto-clip: encoder/weights and the (alpha, beta) used
        sel = c.get("selected") or {}
        text += (f"{Path(str(c['clip_model'])).stem}/{c.get('pretrained')} "
                 f"alpha={sel.get('alpha', c.get('alpha'))} beta={sel.get('beta', c.get('beta'))}")
    fit = c.get("fit") or {}
    if fit.get("train_steps"):
        ways = fit.get("train_ways_used", c.get("train_ways"))
        text += f", {fit['train_steps']} steps {ways}w{c.get('train_shots')}s"
    elif fit.get("checkpoint") or c.get("checkpoint"):
        text += f", checkpoint {Path(fit.get('checkpoint') or c['checkpoint']).name}"
    if c.get("amp"):
        text += ", bf16 autocast"
    if c.get("train_dataset"):
        opts = " ".join(f"{k}={v}" for k, v in sorted((c.get("train_options") or {}).items()))
        text += f", trained on {c['train_dataset']}" + (f" ({opts})" if opts else "")
    return text


def ranked_rows(records: list[ResultRecord]) -> list[Row]:
    latest: dict[str, ResultRecord] = {}
    for r in records:
        config = {k: v for k, v in r.config.items() if k != "fit"}  # fit = measured stats
        key = json.dumps([r.method, r.split, r.setting, config, r.seed], sort_keys=True)
        latest[key] = r
    groups: dict[str, list[ResultRecord]] = {}
    for r in latest.values():
        groups.setdefault(setting_text(r.setting), []).append(r)
    rows = []
    for setting in sorted(groups):
        ranked = sorted(groups[setting], key=lambda r: -r.metrics[r.primary_metric].value)
        for i, r in enumerate(ranked, 1):
            m = r.metrics[r.primary_metric]
            rows.append(Row(i, setting, r.method, m.value, m.ci95, m.n, _details(r), r.seed,
                            r.manifest_hash[:12], r.timestamp, r))
    return rows


HEADER = ("setting", "rank", "method", "accuracy % (95% CI)", "n", "config", "seed",
          "episodes", "when")
CONSOLE_HEADER = ("setting", "#", "method", "acc % ± CI95", "n", "config", "episodes")


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


def _cells(row: Row) -> list[str]:
    return [row.setting, str(row.rank), row.method, row.value_text,
            "" if row.n is None else str(row.n), row.details, str(row.seed), row.manifest,
            row.when]


def to_markdown(board: str, rows: list[Row]) -> str:
    header = headers(rows)
    lines = [f"## {board}", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["board", "setting", "rank", "method", "value", "ci95", "n", "config", "seed",
                "manifest_hash", "git_revision", "device", "wall_time_s", "timestamp"])
    for r in rows:
        rec = r.record
        w.writerow([rec.board, r.setting, r.rank, r.method, f"{r.value:.6f}",
                    "" if r.ci95 is None else f"{r.ci95:.6f}", r.n,
                    json.dumps(rec.config, sort_keys=True), r.seed, rec.manifest_hash,
                    rec.git_revision, rec.device, f"{rec.wall_time_s:.2f}", rec.timestamp])
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
