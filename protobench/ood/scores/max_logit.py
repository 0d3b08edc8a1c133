"""``max-logit``: max_c f_c(x) (Hendrycks et al. 2022; OpenOOD ``mls``). Needs logits."""

from __future__ import annotations

import torch

from protobench.ood.scores.base import OODScore, register_score


@register_score("max-logit")
class MaxLogit(OODScore):
    needs_logits = True
    summary = "maximum logit (logits)"

    def score(self, features: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        return self._logits(logits).amax(dim=1)
