"""``msp``: maximum softmax probability, max_c softmax(f(x))_c (Hendrycks & Gimpel 2017;
OpenOOD ``base_postprocessor``). Needs logits."""

from __future__ import annotations

import torch

from protobench.ood.scores.base import OODScore, register_score


@register_score("msp")
class MSP(OODScore):
    needs_logits = True
    summary = "maximum softmax probability (logits)"

    def score(self, features: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        return self._logits(logits).softmax(dim=1).amax(dim=1)
