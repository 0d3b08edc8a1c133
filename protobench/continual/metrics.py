"""Accuracy matrices and the continual-learning metrics computed from them.

``A[i, j]`` is the accuracy on the test data of experience ``j`` after training on
experience ``i`` (``NaN`` for ``j > i``, not yet seen). With ``T`` experiences and
``n_j`` test samples in experience ``j``:

- final average accuracy: ``mean_j A[T-1, j]`` (PRD's "final average accuracy");
- up-to-now accuracy after stage ``i``: accuracy over the test samples of every class seen
  so far, ``sum_{j<=i} n_j A[i, j] / sum_{j<=i} n_j`` (PASS / NAPA-VQ, sample-weighted);
- average incremental accuracy: mean of the up-to-now accuracies over the ``T`` stages,
  base stage included;
- average forgetting: ``mean_{j<T-1} (max_{j<=i<T-1} A[i, j] - A[T-1, j])`` (best earlier
  accuracy minus final, over the old experiences; Chaudhry et al. 2018);
- backward transfer: ``mean_{j<T-1} (A[T-1, j] - A[j, j])`` (Lopez-Paz & Ranzato 2017).

Forgetting and backward transfer are 0 for a single experience. :class:`AccuracyMatrix`
accumulates correct / total counts (mergeable over chunks or processes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class AccuracyMatrix:
    """Counts of correct and evaluated test samples per (trained up to i, tested on j)."""

    experiences: int
    correct: torch.Tensor = field(default=None)  # type: ignore[assignment]
    total: torch.Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        shape = (self.experiences, self.experiences)
        if self.correct is None:
            self.correct = torch.zeros(shape, dtype=torch.int64)
        if self.total is None:
            self.total = torch.zeros(shape, dtype=torch.int64)

    def update(self, i: int, j: int, correct: int, total: int) -> None:
        self.correct[i, j] += int(correct)
        self.total[i, j] += int(total)

    def merge(self, other: AccuracyMatrix) -> AccuracyMatrix:
        return AccuracyMatrix(self.experiences, self.correct + other.correct,
                              self.total + other.total)

    def compute(self) -> torch.Tensor:
        """``[T, T]`` float64 accuracies, ``NaN`` where nothing was evaluated."""
        acc = self.correct.double() / self.total.double()
        return torch.where(self.total > 0, acc, torch.full_like(acc, float("nan")))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"correct": self.correct.clone(), "total": self.total.clone()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> AccuracyMatrix:
        return cls(len(state["correct"]), state["correct"].clone(), state["total"].clone())


def _as_matrix(acc: torch.Tensor | list) -> torch.Tensor:
    a = torch.as_tensor(acc, dtype=torch.float64)
    if a.dim() != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"an accuracy matrix is square [T, T], got {tuple(a.shape)}")
    return a


def final_average_accuracy(acc: torch.Tensor | list) -> float:
    a = _as_matrix(acc)
    return float(a[-1].mean())


def up_to_now_accuracy(acc: torch.Tensor | list, counts: torch.Tensor | list | None = None
                       ) -> torch.Tensor:
    """``[T]``: accuracy over all classes seen after each stage (weights ``counts`` ``[T]``)."""
    a = _as_matrix(acc)
    t = len(a)
    w = torch.ones(t, dtype=torch.float64) if counts is None else \
        torch.as_tensor(counts, dtype=torch.float64)
    out = torch.empty(t, dtype=torch.float64)
    for i in range(t):
        out[i] = (a[i, :i + 1] * w[:i + 1]).sum() / w[:i + 1].sum()
    return out


def average_incremental_accuracy(acc: torch.Tensor | list,
                                 counts: torch.Tensor | list | None = None) -> float:
    return float(up_to_now_accuracy(acc, counts).mean())


def average_forgetting(acc: torch.Tensor | list) -> float:
    a = _as_matrix(acc)
    t = len(a)
    if t == 1:
        return 0.0
    drops = [a[j:t - 1, j].max() - a[t - 1, j] for j in range(t - 1)]
    return float(torch.stack(drops).mean())


def backward_transfer(acc: torch.Tensor | list) -> float:
    a = _as_matrix(acc)
    t = len(a)
    if t == 1:
        return 0.0
    return float((a[t - 1, :t - 1] - a.diagonal()[:t - 1]).mean())


def summarize(acc: torch.Tensor | list, til: torch.Tensor | list | None = None,
              counts: torch.Tensor | list | None = None) -> dict[str, float]:
    """Every metric of a finished run (``til``: the task-incremental matrix)."""
    out = {
        "average_incremental_accuracy": average_incremental_accuracy(acc, counts),
        "final_accuracy": final_average_accuracy(acc),
        "final_up_to_now_accuracy": float(up_to_now_accuracy(acc, counts)[-1]),
        "average_forgetting": average_forgetting(acc),
        "backward_transfer": backward_transfer(acc),
    }
    if til is not None:
        out.update({
            "til_final_accuracy": final_average_accuracy(til),
            "til_average_incremental_accuracy": average_incremental_accuracy(til, counts),
            "til_average_forgetting": average_forgetting(til),
        })
    return out
