"""Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017), the classic
exemplar-free baseline of class-incremental learning, as a plain reference implementation.

It is :mod:`fine-tuning <protobench.methods.finetune>` (same encoder, growing linear head,
cross-entropy on ``head(f(x)) / temperature`` over the current experience, same optimiser
and schedule) plus knowledge distillation: before experience t > 1 the model is copied and
frozen (the teacher); on every batch of the new data the student's logits of the old
classes are pulled towards the teacher's with Li & Hoiem's modified cross-entropy at
temperature T = 2 (``distill_temperature``),
``L_old = -mean_i sum_c softmax(t_i / T)_c log softmax(s_i / T)_c`` over the old classes,
weighted by ``lambda_old`` (default 1, the paper's lambda_o). The distilled logits are the
ones the cross-entropy sees (``head(f(x)) / temperature``). With ``new_classes_only``
(default) the cross-entropy of experience t > 1 is taken over the new classes' logits only
(targets ``y - num_old``): Li & Hoiem train the new task's head on the new data while the
old heads are only distilled, which is how class-incremental ports (PyCIL's ``lwf``) apply
it to one growing head; ``new_classes_only=False`` is fine-tuning's cross-entropy over
every seen class plus the distillation (with ``lambda_old=0`` it is ``finetune``).
Nothing of an old experience is kept but the teacher's weights (no sample, no per-sample
feature).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from protobench.errors import UserError
from protobench.methods.base import register_method
from protobench.methods.continual_base import ExperienceInfo
from protobench.methods.finetune import Finetune


def lwf_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0
             ) -> torch.Tensor:
    """Li & Hoiem's distillation loss: the teacher's softened distribution over the old
    classes as the target of the student's, ``[n, C_old]`` logits each."""
    target = F.softmax(teacher / temperature, dim=1)
    return -(target * F.log_softmax(student / temperature, dim=1)).sum(1).mean()


@register_method("lwf")
class LwF(Finetune):
    """Fine-tuning plus distillation of the old head's logits at temperature 2."""

    summary = "Learning without Forgetting (Li & Hoiem 2017): fine-tuning + logit distillation"

    def __init__(self, backbone: str = "auto", epochs: int = 100, batch_size: int = 64,
                 lr: float = 1e-3, weight_decay: float = 2e-4, lr_step: int = 45,
                 lr_gamma: float = 0.1, temperature: float = 0.1,
                 distill_temperature: float = 2.0, lambda_old: float = 1.0,
                 new_classes_only: bool = True, seed: int = 0, amp: bool | None = None,
                 compile: bool | None = None, channels_last: bool | None = None) -> None:
        super().__init__(backbone, epochs, batch_size, lr, weight_decay, lr_step, lr_gamma,
                         temperature, seed, amp=amp, compile=compile,
                         channels_last=channels_last)
        self.distill_temperature = distill_temperature
        self.lambda_old = lambda_old
        self.new_classes_only = new_classes_only
        self._num_old = 0
        if float(distill_temperature) <= 0 or float(lambda_old) < 0:
            raise UserError(f"lwf needs distill_temperature > 0 and lambda_old >= 0, got "
                            f"{distill_temperature} and {lambda_old}")
        self._teacher: tuple[nn.Module, nn.Linear] | None = None

    def _begin_experience(self, info: ExperienceInfo, device: torch.device) -> None:
        self._teacher = None
        self._num_old = info.num_old
        if info.index > 0 and self.encoder is not None and self.head is not None:
            encoder, head = copy.deepcopy(self.encoder), copy.deepcopy(self.head)
            for p in [*encoder.parameters(), *head.parameters()]:
                p.requires_grad_(False)
            self._teacher = (encoder.to(device).eval(), head.to(device).eval())

    def _classification_loss(self, logits: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if not self.new_classes_only or not self._num_old:
            return super()._classification_loss(logits, yb)
        return F.cross_entropy(logits[:, self._num_old:], yb - self._num_old)

    def _extra_loss(self, xb: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        if self._teacher is None or not self.lambda_old:
            return None
        encoder, head = self._teacher
        with torch.no_grad():
            old = head(encoder(xb)) / self.temperature
        return self.lambda_old * lwf_loss(logits[:, :old.shape[1]], old,
                                          float(self.distill_temperature))

    def train_experience(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        out = super().train_experience(*args, **kwargs)
        self._teacher = None  # the teacher lives for one experience only
        return out
