"""The site's figures, drawn by matplotlib at build time as self-contained SVG files.

Each function takes plain numbers (the pages module gathers them from the rows) and writes
one figure: accuracy against shots with CI bars, continual accuracy after each experience,
an accuracy-matrix heatmap, ROC curves, and the distribution of paired differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "protobench",
                     "font.size": 9})


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


def _legend(ax, n: int) -> None:
    if n:
        ax.legend(fontsize=7, loc="best", frameon=False, ncol=1 if n <= 8 else 2)


def shots_curve(path: Path, title: str,
                lines: Sequence[tuple[str, Sequence[int], Sequence[float], Sequence[float]]]
                ) -> Path:
    """One line per configuration: ``(label, shots, accuracy %, 95% CI half-width %)``."""
    fig, ax = plt.subplots(layout="constrained", figsize=(6.4, 3.8))
    for label, shots, acc, ci in lines:
        ax.errorbar(shots, acc, yerr=ci, marker="o", ms=4, capsize=3, lw=1.4, label=label)
    ticks = sorted({k for _, shots, _, _ in lines for k in shots})
    ax.set(title=title, xlabel="shots", ylabel="accuracy %", xticks=ticks)
    if ticks and ticks[-1] / max(ticks[0], 1) >= 8:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.grid(alpha=0.3)
    _legend(ax, len(lines))
    return _save(fig, path)


def experience_curve(path: Path, title: str,
                     lines: Sequence[tuple[str, Sequence[float], Sequence[float]]]) -> Path:
    """One line per configuration: accuracy % on the classes seen so far after each
    experience, with its 95% CI half-width over seeds (0 for one seed)."""
    fig, ax = plt.subplots(layout="constrained", figsize=(6.4, 3.8))
    for label, acc, ci in lines:
        x = list(range(1, len(acc) + 1))
        ax.plot(x, acc, marker="o", ms=3, lw=1.4, label=label)
        if any(ci):
            ax.fill_between(x, [a - c for a, c in zip(acc, ci)],
                            [a + c for a, c in zip(acc, ci)], alpha=0.15)
    n = max((len(a) for _, a, _ in lines), default=1)
    ax.set(title=title, xlabel="after experience", ylabel="accuracy on seen classes %",
           xticks=list(range(1, n + 1)), ylim=(0, 100))
    ax.grid(alpha=0.3)
    _legend(ax, len(lines))
    return _save(fig, path)


def matrix_heatmap(path: Path, title: str, matrix: Sequence[Sequence[float | None]]) -> Path:
    """``matrix[i][j]``: accuracy % on experience j after training experience i."""
    n = len(matrix)
    values = [[math.nan if v is None else v for v in row] for row in matrix]
    fig, ax = plt.subplots(layout="constrained", figsize=(1.2 + 0.42 * n, 1.0 + 0.38 * n))
    im = ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if v == v:
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if v < 60 else "black")
    ax.set(title=title, xlabel="accuracy on experience j", ylabel="after experience i",
           xticks=range(n), yticks=range(n))
    ax.set_xticklabels(range(1, n + 1))
    ax.set_yticklabels(range(1, n + 1))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def roc_curves(path: Path, title: str,
               lines: Sequence[tuple[str, Sequence[float], Sequence[float], float]]) -> Path:
    """One curve per configuration: ``(label, fpr, tpr, AUROC %)``; ID is the positive."""
    fig, ax = plt.subplots(layout="constrained", figsize=(5.0, 4.2))
    for label, fpr, tpr, auc in lines:
        ax.plot(fpr, tpr, lw=1.3, label=f"{label} ({auc:.1f})")
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
    ax.set(title=title, xlabel="FPR (OOD accepted as ID)", ylabel="TPR (ID accepted)",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.grid(alpha=0.3)
    _legend(ax, len(lines))
    return _save(fig, path)


def differences(path: Path, title: str, diffs: Sequence[float], unit: str) -> Path:
    """Histogram of the paired differences A - B (points), with their mean and zero."""
    fig, ax = plt.subplots(layout="constrained", figsize=(5.0, 3.2))
    bins = min(40, max(5, int(math.sqrt(len(diffs))) + 1))
    ax.hist(diffs, bins=bins, color="#4c72b0", alpha=0.85, histtype="stepfilled")
    mean = sum(diffs) / len(diffs)
    ax.axvline(0, color="0.3", lw=1, ls="--")
    ax.axvline(mean, color="#c44e52", lw=1.5, label=f"mean {mean:+.2f}")
    ax.set(title=title, xlabel=f"A - B per {unit.rstrip('s')} (points)", ylabel=unit)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    return _save(fig, path)
