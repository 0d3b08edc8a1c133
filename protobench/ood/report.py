"""Presentation of OOD results: seed aggregation (mean, 95% CI), the console table, the
ROC figure (matplotlib Agg, PNG)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch


def mean_ci95(values: list[float]) -> tuple[float, float | None]:
    """Mean and Student-t 95% half-width over seeds (None for one seed)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), None
    from scipy.stats import t

    return float(v.mean()), float(t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


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


def save_roc(path: Path, title: str, roc_scores: dict[str, dict[str, torch.Tensor]]) -> Path:
    """One panel per score, one ROC curve (ID positive) per OOD set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from protobench.ood.metrics import auroc, roc_curve

    scores = list(roc_scores)
    cols = min(3, len(scores))
    rows = math.ceil(len(scores) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4 * rows), dpi=100,
                             squeeze=False)
    for ax, s in zip(axes.flat, scores):
        id_s = roc_scores[s]["__id__"]
        for name, o_s in roc_scores[s].items():
            if name == "__id__":
                continue
            fpr, tpr = roc_curve(id_s, o_s)
            ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUROC {100 * auroc(id_s, o_s):.1f})")
        ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
        ax.set(title=s, xlabel="FPR (OOD accepted as ID)", ylabel="TPR (ID accepted)",
               xlim=(0, 1), ylim=(0, 1.01))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(scores):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
