"""``energy``: T * logsumexp(f(x) / T), T = 1 (Liu et al. 2020; OpenOOD ``ebo``). Needs
logits. pytorch-ood's ``EnergyBased`` returns the negative (an outlier score)."""

from __future__ import annotations

import torch

from protobench.ood.scores.base import OODScore, register_score


@register_score("energy")
class Energy(OODScore):
    needs_logits = True
    summary = "T * logsumexp(logits / T), negative free energy (logits)"

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = temperature

    def score(self, features: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        t = float(self.temperature)
        return (t * torch.logsumexp(self._logits(logits).double() / t, dim=1)).float()
