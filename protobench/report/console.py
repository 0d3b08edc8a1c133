"""Console tables (rich) for every task: few-shot settings, the continual accuracy
matrix and metrics, open-world and OOD results."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from protobench.continual.metrics import up_to_now_accuracy
from protobench.evaluation.stats import mean_ci95


def fewshot_table(title: str, outcomes: list[Any]) -> Table:
    """One line per evaluated setting: accuracy, CI (over episodes, or over seeds)."""
    table = Table(title=title)
    for col in ("setting", "accuracy %", "95% CI", "n", "manifest"):
        table.add_column(col)
    for o in outcomes:
        s, m = o.setting, o.record.metrics["accuracy"]
        seeds = len(o.record.seeds) > 1
        ci = f"± {100 * m.ci95:.2f}" + (" (seeds)" if seeds else "") if m.ci95 is not None \
            else "-"
        table.add_row(f"{s['ways']}-way {s['shots']}-shot {s['queries']}-query",
                      f"{100 * m.value:.2f}", ci,
                      f"{m.n} seeds" if seeds else str(m.n), o.record.manifest_hash[:12])
    return table


def matrix_table(outcome: Any, title: str = "") -> Any:
    """A rich table of the class-incremental matrix, with up-to-now and task-incr. columns."""
    res = outcome.result
    t = len(res.accuracy)
    table = Table(title=title or f"{outcome.record.board} - {outcome.record.method}: "
                                 "accuracy % after experience i (rows) on experience j")
    table.add_column("after")
    for j in range(t):
        table.add_column(f"exp {j + 1}", justify="right")
    table.add_column("up to now", justify="right", style="bold")
    table.add_column("task-incr.", justify="right")
    cil = up_to_now_accuracy(res.accuracy, res.test_counts)
    til = up_to_now_accuracy(res.til_accuracy, res.test_counts)
    for i in range(t):
        cells = [f"{100 * res.accuracy[i, j]:.1f}" if j <= i else "" for j in range(t)]
        table.add_row(f"exp {i + 1}", *cells, f"{100 * cil[i]:.2f}", f"{100 * til[i]:.2f}")
    return table


def metrics_table(outcome: Any) -> Any:
    table = Table(title="metrics (%)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in outcome.result.metrics.items():
        table.add_row(k.replace("_", " "), f"{100 * v:.2f}")
    return table


def open_world_table(outcome: Any) -> Any:
    """Per experience: OOD metrics of the unseen classes' test data vs the seen ones' (%)."""
    cfg = outcome.record.config.get("open_world") or {}
    table = Table(title=f"open world: score {cfg.get('score')}, unseen classes as OOD (%)")
    for col in ("after", "n ID", "n OOD", "AUROC", "FPR95 ID+", "FPR95 OOD+"):
        table.add_column(col, justify="right")
    for r in cfg.get("per_experience", []):
        table.add_row(f"exp {r['after']}", str(r["n_id"]), str(r["n_ood"]),
                      f"{100 * r['auroc']:.2f}", f"{100 * r['fpr95_id_positive']:.2f}",
                      f"{100 * r['fpr95_ood_positive']:.2f}")
    return table


def cell(values: list[float]) -> str:
    mean, ci = mean_ci95(values)
    return f"{100 * mean:.2f}" + ("" if ci is None else f" ± {100 * ci:.2f}")


TABLE_METRICS = (("auroc", "AUROC"), ("fpr95_id_positive", "FPR95 ID+"),
                 ("fpr95_ood_positive", "FPR95 OOD+"), ("aupr_in", "AUPR-In"),
                 ("aupr_out", "AUPR-Out"))


def results_table(title: str, score: str, per_seed: list[Any], groups: dict[str, str],
                  counts: dict[str, int]) -> Any:
    """A rich table of one score: one row per OOD set, then near / far / all means."""
    from rich.table import Table

    table = Table(title=f"{title} - score {score} (%; mean ± 95% CI over "
                        f"{len(per_seed)} seed(s))")
    for col in ("OOD set", "group", "n", *(label for _, label in TABLE_METRICS)):
        table.add_column(col, justify="left" if col in ("OOD set", "group") else "right")
    for name in per_seed[0].metrics[score]:
        table.add_row(name, groups[name], str(counts[name]),
                      *(cell([e.metrics[score][name][m] for e in per_seed])
                        for m, _ in TABLE_METRICS))
    for prefix, label in (("near_", "near-OOD mean"), ("far_", "far-OOD mean"),
                          ("", "mean over sets")):
        if prefix + "auroc" in per_seed[0].summary[score]:
            table.add_row(f"[bold]{label}", "", "",
                          *(cell([e.summary[score][prefix + m] for e in per_seed])
                            for m, _ in TABLE_METRICS))
    return table


def seeds_table(record: Any) -> Table:
    """A row's primary metric per seed and its mean ± Student-t 95% CI over seeds."""
    key = record.primary_metric
    table = Table(title=f"{key.replace('_', ' ')} over seeds (%)")
    table.add_column("seed")
    table.add_column("value", justify="right")
    for entry in record.per_seed:
        table.add_row(str(entry["seed"]), f"{100 * entry['metrics'][key]['value']:.2f}")
    m = record.metrics[key]
    ci = f" ± {100 * m.ci95:.2f}" if m.ci95 is not None else ""
    table.add_row("mean", f"{100 * m.value:.2f}{ci}", style="bold")
    return table
