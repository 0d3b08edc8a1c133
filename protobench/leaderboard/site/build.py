"""``protobench leaderboard site``: a static HTML leaderboard built from a results store.

The site is plain files (``index.html``, ``boards/<task>-<dataset>.html``, SVG figures,
one stylesheet and one script, nothing fetched from the network): it opens from the file
system and can be published as-is. Per board:

* the ranked table aggregated over seeds (:func:`protobench.leaderboard.aggregate.
  aggregate_rows`: mean ± Student-t 95% CI, number of seeds), the task's secondary metrics,
  and a marker (†, ‡, ...) on configurations measured on other episodes or streams than
  the setting's main ones (those most configurations share), so they are not read as
  paired; sortable by any column and filterable by setting and method (``site.js``);
* a detail view per configuration: for each of its rows, every method parameter and the
  preset, the protocol, the dataset options and checksum, the episode manifest or stream
  hash and seed, versions, git revision, device, wall time, the sweep cell, and the
  commands that reproduce it (``protobench rerun ID`` and the full CLI line,
  :mod:`protobench.leaderboard.commands`); a continual row's accuracy matrix as a table;
* figures (:mod:`protobench.leaderboard.site.plots`): few-shot accuracy against shots per
  configuration with CI bars; continual accuracy after each experience of every
  configuration on one chart, and the accuracy-matrix heatmap of a chosen run (the best
  configuration's first seed, or ``matrix_row``); ROC curves per OOD set, one per
  configuration; per setting, the paired comparison of the best configuration with the
  best other one measured on the same episodes or streams
  (:func:`protobench.leaderboard.compare.compare_groups`) with the distribution of their
  per-episode (or per-seed) differences, or the reason they cannot be paired.

Figures are bounded per board (``MAX_LINES`` curves per chart, ``MAX_SETTINGS`` settings
with comparison and ROC figures, the best first), so a store of 10,000 rows builds in
seconds; the tables always hold every configuration.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from protobench.errors import UserError
from protobench.evaluation.stats import mean_ci95
from protobench.leaderboard import commands
from protobench.leaderboard.aggregate import SeedGroup, aggregate_rows
from protobench.leaderboard.compare import compare_groups
from protobench.leaderboard.render import MARKERS, setting_text
from protobench.leaderboard.site import plots
from protobench.tasks.record import CURVE_PREFIX, ResultRecord
from protobench.tasks.store import ResultStore

MAX_LINES = 12
MAX_SETTINGS = 24
SECONDARY = {"fewshot": (), "continual": ("final_accuracy", "average_forgetting"),
             "ood": ("fpr95_id_positive", "aupr_in", "id_accuracy")}
LOWER_IS_BETTER = ("average_forgetting", "fpr95_id_positive", "fpr95_ood_positive")
STATIC = Path(__file__).parent / "static"


@dataclass
class SiteResult:
    out: Path
    pages: list[Path]
    boards: int
    rows: int
    configurations: int
    figures: int
    seconds: float = 0.0


@dataclass
class BoardPage:
    board: str
    slug: str
    task: str
    rows: list[dict[str, Any]]  # one per configuration (SeedGroup)
    columns: list[dict[str, str]]
    settings: list[str]
    records: dict[str, dict[str, Any]]  # row id -> detail
    figures: list[dict[str, str]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def slug(board: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", board.replace("/", "-")).strip("-")


def _pct(v: float | None) -> float | None:
    return None if v is None or v != v else 100 * v


def _num(v: float | None, digits: int = 2) -> str:
    return "" if v is None or v != v else f"{v:.{digits}f}"


def seed_rows(r: ResultRecord) -> list[tuple[int, str, dict[str, Any]]]:
    """``(seed, manifest or stream hash, fit)`` of every seed of ``r``."""
    fit = r.config.get("fit")
    if r.per_seed:
        fits = fit.get("per_seed", []) if isinstance(fit, dict) else []
        return [(int(p["seed"]), p.get("manifest_hash", ""),
                 fits[i] if i < len(fits) and isinstance(fits[i], dict) else {})
                for i, p in enumerate(r.per_seed)]
    return [(r.seed, r.manifest_hash, fit if isinstance(fit, dict) else {})]


def seed_metric(r: ResultRecord, seed: int, metric: str) -> float | None:
    for p in r.per_seed:
        if int(p["seed"]) == seed and metric in p.get("metrics", {}):
            return float(p["metrics"][metric]["value"])
    m = r.metrics.get(metric)
    return m.value if m is not None and not r.per_seed else None


def _episode_markers(groups: list[SeedGroup], by_id: dict[int, ResultRecord]
                     ) -> dict[int, str]:
    """``index in groups -> marker``: "" where a configuration was measured on its
    setting's main episodes/streams (the set most configurations share), † ‡ ... else."""
    out: dict[int, str] = {}
    by_setting: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_setting.setdefault(g.setting, []).append(i)
    for members in by_setting.values():
        sigs = {}
        for i in members:
            rows = [by_id[j] for j in groups[i].row_ids if j in by_id]
            sigs[i] = tuple(sorted({h for r in rows for _, h, _ in seed_rows(r)}))
        order = [s for s, _ in Counter(sigs[i] for i in members).most_common()]
        for i in members:
            k = order.index(sigs[i])
            out[i] = "" if k == 0 else (MARKERS[k - 1] if k <= len(MARKERS)
                                        else f"{MARKERS[0]}{k}")
    return out


def _record_detail(r: ResultRecord, store_text: str) -> dict[str, Any]:
    job = (r.job or {}).get("config", {})
    protocol = {k: v for k, v in job.items() if k not in commands.NEVER and k not in (
        "method_params", "dataset_options", "data_root", "config", "method")}
    matrices = [(s, fit["accuracy_matrix"]) for s, _, fit in seed_rows(r)
                if isinstance(fit.get("accuracy_matrix"), list)]
    metrics = {k: {"value": m.value, "ci95": m.ci95, "n": m.n} for k, m in r.metrics.items()}
    return {
        "id": r.id, "board": r.board, "method": r.method, "method_name": r.method_name,
        "setting": setting_text(r.setting), "seeds": [s for s, _, _ in seed_rows(r)],
        "hashes": [h for _, h, _ in seed_rows(r)],
        "preset": r.config.get("preset", ""), "method_params": r.method_params,
        "protocol": protocol, "dataset_options": r.config.get("dataset_options")
        or job.get("dataset_options") or {}, "data": r.data, "metrics": metrics,
        "primary_metric": r.primary_metric, "versions": r.versions,
        "git_revision": r.git_revision, "device": r.device, "machine": r.machine,
        "wall_time_s": r.wall_time_s, "timestamp": r.timestamp,
        "sweep": r.config.get("sweep") or {},
        "rerun": commands.rerun_line(r, store_text), "cli": commands.cli_line(r),
        "matrices": [{"seed": s, "rows": m} for s, m in matrices[:3]],
    }


class _Builder:
    def __init__(self, store: ResultStore, out: Path, store_text: str,
                 matrix_row: int | None) -> None:
        self.store, self.out, self.store_text = store, out, store_text
        self.matrix_row = matrix_row
        self.figures = 0

    def figure(self, page: BoardPage, name: str, title: str, draw: Any, *args: Any) -> None:
        """Draw one figure; ``title`` is its caption, and a last string argument, when
        given, the shorter title drawn in the chart."""
        rel = f"figures/{page.slug}/{name}.svg"
        if args and isinstance(args[-1], str):
            args, drawn = args[:-1], args[-1]
        else:
            drawn = title
        draw(self.out / rel, drawn, *args)
        page.figures.append({"src": f"../{rel}", "title": title})
        self.figures += 1

    def page(self, board: str) -> BoardPage:
        records = self.store.records(board)
        by_id = {r.id: r for r in records if r.id is not None}
        groups = aggregate_rows(records)
        task = records[0].task if records else board.split("/")[0]
        secondary = {}
        for m in SECONDARY.get(task, ()):
            secondary[m] = {(g.setting, g.method, g.label): g
                            for g in aggregate_rows(records, metric=m)}
        markers = _episode_markers(groups, by_id)
        metric = groups[0].metric if groups else "value"
        columns = [{"key": "setting", "name": "setting", "type": "text"},
                   {"key": "rank", "name": "#", "type": "num"},
                   {"key": "method", "name": "method", "type": "text"},
                   {"key": "config", "name": "config", "type": "text"},
                   {"key": "value", "name": f"{metric} % ± t-CI95", "type": "num"},
                   *[{"key": m, "name": f"{m} %", "type": "num"} for m in secondary],
                   {"key": "n", "name": "seeds (n)", "type": "num"},
                   {"key": "rows", "name": "rows", "type": "text"}]
        rows = []
        for i, g in enumerate(groups):
            cells = {"setting": g.setting, "rank": g.rank, "method": g.method,
                     "config": g.label, "value": _pct(g.mean), "n": g.n,
                     "rows": ",".join(str(j) for j in g.row_ids if j is not None)}
            texts = {"value": g.value_text}
            for m, found in secondary.items():
                s = found.get((g.setting, g.method, g.label))
                cells[m] = _pct(s.mean) if s else None
                texts[m] = s.value_text if s else ""
            rows.append({"cells": cells, "texts": texts, "marker": markers.get(i, ""),
                         "seeds": ",".join(map(str, g.seeds)), "index": i})
        details = {str(r.id): _record_detail(r, self.store_text) for r in records
                   if r.id is not None}
        page = BoardPage(board, slug(board), task, rows, columns,
                         sorted({g.setting for g in groups}), details)
        if any(r["marker"] for r in rows):
            page.notes.append("† ‡ ...: configurations measured on other episodes or streams "
                              "than the setting's main ones (those most configurations "
                              "share): ranked by mean, not paired with the others.")
        lower = [m for m in secondary if m in LOWER_IS_BETTER]
        if lower:
            page.notes.append(f"Lower is better for {', '.join(lower)}.")
        self.task_figures(page, task, groups, by_id)
        self.comparisons(page, groups, by_id, markers)
        return page

    def task_figures(self, page: BoardPage, task: str, groups: list[SeedGroup],
                     by_id: dict[int, ResultRecord]) -> None:
        if task == "fewshot":
            self.fewshot_figures(page, groups, by_id)
        elif task == "continual":
            self.continual_figures(page, groups, by_id)
        elif task == "ood":
            self.ood_figures(page, groups, by_id)

    def fewshot_figures(self, page: BoardPage, groups: list[SeedGroup],
                        by_id: dict[int, ResultRecord]) -> None:
        panels: dict[tuple[int, int], dict[str, dict[int, tuple[float, float]]]] = {}
        for g in groups:
            r = by_id.get(g.row_ids[-1])
            if r is None or "shots" not in r.setting:
                continue
            ci = g.ci95 if g.n > 1 else r.metrics[r.primary_metric].ci95
            name = f"{g.method} {g.label}".strip()
            panel = panels.setdefault((r.setting["ways"], r.setting.get("queries", 0)), {})
            panel.setdefault(name, {})[int(r.setting["shots"])] = (
                100 * g.mean, 100 * (ci or 0.0))
        for (ways, queries), lines in sorted(panels.items()):
            best = sorted(lines.items(), key=lambda kv: -max(v[0] for v in kv[1].values()))
            data = [(name, sorted(pts), [pts[k][0] for k in sorted(pts)],
                     [pts[k][1] for k in sorted(pts)]) for name, pts in best[:MAX_LINES]]
            self.figure(page, f"shots-{ways}way-{queries}q",
                        f"{page.board}: {ways}-way, {queries} queries (mean ± 95% CI)",
                        plots.shots_curve, data)

    def continual_figures(self, page: BoardPage, groups: list[SeedGroup],
                          by_id: dict[int, ResultRecord]) -> None:
        for setting in page.settings[:MAX_SETTINGS]:
            lines = []
            for g in [g for g in groups if g.setting == setting][:MAX_LINES]:
                curves = [[100 * _mean([v for v in row[:i + 1] if v is not None])
                           for i, row in enumerate(m)]
                          for j in g.row_ids if j in by_id for m in _matrices(by_id[j])]
                if not curves:
                    continue
                n = min(map(len, curves))
                stats = [mean_ci95([c[i] for c in curves]) for i in range(n)]
                lines.append((f"{g.method} {g.label}".strip(), [s[0] for s in stats],
                              [s[1] or 0.0 for s in stats]))
            if lines:
                self.figure(page, f"experiences-{slug(setting)}",
                            f"{page.board} {setting}: accuracy after each experience",
                            plots.experience_curve, lines, f"{page.board}: accuracy after "
                            "each experience")
        # the chosen run: `matrix_row` when it is on this board, else the best first row
        order = ([self.matrix_row] if self.matrix_row in by_id else []) + [
            j for g in groups for j in g.row_ids if j in by_id]
        for j in order:
            found = _matrices(by_id[j])
            if found:
                r = by_id[j]
                pct = [[None if v is None else 100 * v for v in row] for row in found[0]]
                self.figure(page, f"matrix-row{j}", f"accuracy matrix of row {j}: "
                            f"{r.method}, seed {seed_rows(r)[0][0]}", plots.matrix_heatmap,
                            pct)
                break

    def ood_figures(self, page: BoardPage, groups: list[SeedGroup],
                    by_id: dict[int, ResultRecord]) -> None:
        for setting in page.settings[:MAX_SETTINGS]:
            members = [g for g in groups if g.setting == setting][:MAX_LINES]
            ids = [g.row_ids[-1] for g in members if g.row_ids[-1] is not None]
            samples = self.store.samples(ids)
            sets: dict[str, list[tuple[str, list[float], list[float], float]]] = {}
            for g in members:
                r = by_id.get(g.row_ids[-1])
                found = samples.get(g.row_ids[-1], {})
                if r is None:
                    continue
                seed = seed_rows(r)[0][0]
                for key, fpr in found.items():
                    m = re.fullmatch(rf"{re.escape(CURVE_PREFIX)}(.+):seed{seed}:fpr", key)
                    if not m:
                        continue
                    name = m.group(1)
                    tpr = found.get(key[:-3] + "tpr")
                    auc = seed_metric(r, seed, f"{name}/auroc")
                    if tpr is not None:
                        sets.setdefault(name, []).append(
                            (f"{g.method} {g.label}".strip(), fpr, tpr,
                             100 * (auc if auc is not None else math.nan)))
            for name, lines in sorted(sets.items()):
                self.figure(page, f"roc-{slug(setting)}-{slug(name)}",
                            f"{setting}: OOD set {name} (ROC, first seed; AUROC %)",
                            plots.roc_curves, lines, f"OOD set {name} (AUROC %)")

    def comparisons(self, page: BoardPage, groups: list[SeedGroup],
                    by_id: dict[int, ResultRecord], markers: dict[int, str]) -> None:
        """Per setting: the best configuration against the best other one measured on the
        same episodes or streams (the runner-up, unpaired, when there is none)."""
        for setting in page.settings[:MAX_SETTINGS]:
            members = [i for i, g in enumerate(groups) if g.setting == setting]
            if len(members) < 2:
                continue
            same = [i for i in members[1:] if markers.get(i) == markers.get(members[0])]
            a, b = groups[members[0]], groups[(same or members[1:])[0]]
            top = [a, b]
            ids = [j for g in top for j in g.row_ids if j is not None]
            samples = self.store.samples(ids)
            rows = {j: by_id[j] for j in ids}
            for j in ids:
                rows[j] = _with_samples(rows[j], samples.get(j, {}))
            na, nb = (f"{g.method} {g.label}".strip() for g in top)
            entry: dict[str, Any] = {"setting": setting, "a": na, "b": nb}
            try:
                c = compare_groups(page.board, setting, na, nb, a.metric,
                                   [rows[j] for j in a.row_ids if j is not None],
                                   [rows[j] for j in b.row_ids if j is not None])
            except UserError as exc:
                entry["error"] = str(exc)
                page.comparisons.append(entry)
                continue
            entry.update(pairs=f"{c.n} {c.unit}", mean_a=_num(100 * c.mean_a),
                         mean_b=_num(100 * c.mean_b), diff=_num(100 * c.diff),
                         ci=f"{_num(100 * c.ci_low)} to {_num(100 * c.ci_high)}",
                         t_p=_p_text(c.t_p), wilcoxon_p=_p_text(c.wilcoxon_p),
                         wins=f"{c.wins} / {c.ties} / {c.losses}", verdict=c.verdict)
            before = len(page.figures)
            self.figure(page, f"diff-{slug(setting)}",
                        f"{setting}: {na} - {nb}, paired on {c.n} {c.unit}",
                        plots.differences,
                        [100 * (x - y) for x, y in zip(c.a_values, c.b_values)], c.unit,
                        f"A - B: {a.method} - {b.method}")
            entry["figure"] = page.figures.pop(before)  # shown with its comparison
            page.comparisons.append(entry)


def _matrices(r: ResultRecord) -> list[list[list[float | None]]]:
    """The accuracy matrix of each seed of a continual row (``fit.accuracy_matrix``)."""
    return [fit["accuracy_matrix"] for _, _, fit in seed_rows(r)
            if isinstance(fit.get("accuracy_matrix"), list) and fit["accuracy_matrix"]]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _p_text(p: float) -> str:
    if p != p:
        return "-"
    return "< 1e-300" if p < 1e-300 else (f"{p:.2g}" if p < 0.001 else f"{p:.3f}")


def _with_samples(r: ResultRecord, samples: dict[str, list[float]]) -> ResultRecord:
    from dataclasses import replace

    return replace(r, samples=samples)


def _json_script(value: Any) -> str:
    """JSON safe inside ``<script type="application/json">``."""
    return (json.dumps(value, default=str, allow_nan=False, sort_keys=True)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def build_site(store: str | Path, out: str | Path, *, matrix_row: int | None = None,
               store_text: str | None = None) -> SiteResult:
    """Write the site for every board of ``store`` into ``out`` (replacing an earlier site
    there); ``store_text`` is the store path the reproduce commands name (default: as
    given). See the module docstring."""
    t0 = time.perf_counter()
    rs = ResultStore(store)
    if not rs.path.exists():
        raise UserError(f"no results store at {rs.path}; run a job or pass --store")
    boards = rs.boards()
    if not boards:
        raise UserError(f"{rs.path} holds no rows: nothing to publish")
    out = Path(out)
    if out.exists():
        if not (out / "index.html").exists() and any(out.iterdir()):
            raise UserError(f"{out} is not empty and holds no site; pass an empty or new "
                            "--out folder")
        shutil.rmtree(out)
    (out / "boards").mkdir(parents=True)
    builder = _Builder(rs, out, store_text or str(store), matrix_row)
    env = Environment(loader=PackageLoader("protobench.leaderboard.site", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    pages, summaries, n_rows, n_groups, newest = [], [], 0, 0, ""
    for board in boards:
        page = builder.page(board)
        n_rows += len(page.records)
        n_groups += len(page.rows)
        newest = max([newest, *(r["timestamp"] for r in page.records.values())])
        path = out / "boards" / f"{page.slug}.html"
        path.write_text(env.get_template("board.html").render(
            page=page, records_json=_json_script(_finite(page.records)), root="..",
            nav=boards, slug=slug))
        pages.append(path)
        summaries.append({"board": board, "slug": page.slug, "task": page.task,
                          "rows": len(page.records), "configurations": len(page.rows),
                          "settings": len(page.settings), "figures": len(page.figures),
                          "best": page.rows[0] if page.rows else None})
    index = out / "index.html"
    index.write_text(env.get_template("index.html").render(
        boards=summaries, store=store_text or str(store), rows=n_rows, newest=newest,
        root=".", nav=boards, slug=slug))
    for name in ("site.css", "site.js"):
        shutil.copyfile(STATIC / name, out / name)
    return SiteResult(out, [index, *pages], len(boards), n_rows, n_groups, builder.figures,
                      time.perf_counter() - t0)
