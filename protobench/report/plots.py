"""Figures (matplotlib Agg, PNG): the continual accuracy plot and the OOD ROC curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from protobench.continual.metrics import up_to_now_accuracy
from protobench.ood.metrics import auroc, roc_curve


def save_accuracy_plot(result: Any, path: Path, title: str) -> Path:
    """Accuracy per experience: up-to-now (class- and task-incremental) and each A[:, j]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = len(result.accuracy)
    stages = list(range(1, t + 1))
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for j in range(t):
        ax.plot(stages[j:], 100 * result.accuracy[j:, j].numpy(), color="0.75", lw=1,
                marker=".", label="per experience (class-incr.)" if j == 0 else None)
    ax.plot(stages, 100 * up_to_now_accuracy(result.accuracy, result.test_counts).numpy(),
            marker="o", lw=2, label="up to now, class-incremental")
    ax.plot(stages, 100 * up_to_now_accuracy(result.til_accuracy, result.test_counts).numpy(),
            marker="s", lw=2, ls="--", label="up to now, task-incremental")
    ax.set(xlabel="after experience", ylabel="accuracy %", title=title, ylim=(0, 101),
           xticks=stages)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def save_roc(path: Path, title: str, roc_scores: dict[str, dict[str, torch.Tensor]]) -> Path:
    """One panel per score, one ROC curve (ID positive) per OOD set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


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
