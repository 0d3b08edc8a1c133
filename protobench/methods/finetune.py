"""Naive fine-tuning, the lower bound of class-incremental learning.

One encoder and one linear head over every class seen so far; experience ``t`` trains both
with cross-entropy on ``head(f(x)) / T`` over the current experience's data only, so
nothing protects the old classes (catastrophic forgetting). The head grows by appending
rows for the new classes (old rows keep their weights). This is the fine-tune baseline of
the NAPA-VQ card (section 7): same encoder, growing linear head, CE on logits / 0.1, no
distillation, nothing frozen.

Defaults follow the NAPA-VQ card's base phase (``shared/methods/napa_vq.md`` section 1):
Adam lr 1e-3, weight decay 2e-4, StepLR(45, 0.1) restarted each experience, batch 64,
100 epochs per experience. The optimiser is rebuilt at each experience, so a checkpoint
between experiences needs only the networks. ``backbone="auto"`` picks
:func:`protobench.backbones.default_backbone` for the input shape (``resnet18`` from 32x32,
``conv4`` for 28x28 digits / Omniglot, ``mlp`` for feature vectors). ``amp``, ``compile``,
``channels_last``: the training-speed options of :mod:`protobench.methods.continual_base`
(off by default), shared by ``lwf`` and ``joint``.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from protobench.methods.base import register_method
from protobench.methods.continual_base import (
    ContinualMethod,
    ExperienceInfo,
    Inputs,
    TrainSpeed,
    input_shape,
    iterate_batches,
    num_batches,
    speed_options,
    speed_up,
)
from protobench.progress import training_bar


def grow_linear(head: nn.Linear | None, in_dim: int, num_classes: int) -> nn.Linear:
    """A linear layer with ``num_classes`` outputs whose first rows are ``head``'s weights."""
    new = nn.Linear(in_dim, num_classes)
    if head is not None and head.out_features:
        keep = min(head.out_features, num_classes)
        with torch.no_grad():
            new.weight[:keep] = head.weight[:keep].to(new.weight)
            new.bias[:keep] = head.bias[:keep].to(new.bias)
    return new


@register_method("finetune")
class Finetune(ContinualMethod):
    """Cross-entropy on the current experience only; encoder + growing linear head."""

    summary = "naive fine-tuning on each experience, growing linear head (lower bound)"

    job_options = ("epochs", "seed", "backbone")

    def __init__(self, backbone: str = "auto", epochs: int = 100, batch_size: int = 64,
                 lr: float = 1e-3, weight_decay: float = 2e-4, lr_step: int = 45,
                 lr_gamma: float = 0.1, temperature: float = 0.1, seed: int = 0,
                 amp: bool | None = None, compile: bool | None = None,
                 channels_last: bool | None = None) -> None:
        self.backbone = backbone
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_step = lr_step
        self.lr_gamma = lr_gamma
        self.temperature = temperature
        self.seed = seed
        self.amp, self.compile, self.channels_last = speed_options(amp, compile, channels_last)
        self.encoder: nn.Module | None = None
        self.head: nn.Linear | None = None
        self.in_shape: tuple[int, ...] | None = None
        self.backbone_name = ""

    def _build(self, in_shape: tuple[int, ...]) -> nn.Module:
        if self._new_encoder(in_shape):
            self.head = None
        return self.encoder

    def _training_data(self, x: Inputs, y: torch.Tensor,
                       info: ExperienceInfo) -> tuple[Inputs, torch.Tensor]:
        """The samples experience ``info`` trains on: the current ones only."""
        return x, y

    def _begin_experience(self, info: ExperienceInfo, device: torch.device) -> None:
        """Called before experience ``info`` trains (subclasses keep a teacher here)."""

    def _classification_loss(self, logits: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """The cross-entropy of a batch: over every seen class here."""
        return F.cross_entropy(logits, yb)

    def _extra_loss(self, xb: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        """A loss added to the cross-entropy of a batch (None: nothing; LwF distils)."""
        return None

    def train_experience(self, x: Inputs, y: torch.Tensor, info: ExperienceInfo,
                         device: torch.device, progress: bool = True) -> dict[str, Any]:
        x, y = self._training_data(x, y, info)
        if isinstance(x, torch.Tensor):  # in-memory data moves to the device once
            x, y = x.to(device), y.to(device)
        encoder = self._build(input_shape(x))
        self._begin_experience(info, device)
        self.head = grow_linear(self.head, encoder.out_dim, info.num_seen)
        encoder.to(device).train()
        head = self.head.to(device).train()
        params = [*encoder.parameters(), *head.parameters()]
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, self.lr_step, self.lr_gamma)
        gen = torch.Generator().manual_seed(info.seed)
        steps = self.epochs * num_batches(len(y), self.batch_size)
        stats: dict[str, float] = {}
        start = time.perf_counter()
        desc = f"{self.name} experience {info.index + 1}/{info.num_experiences}"
        with speed_up(encoder, TrainSpeed.of(self)) as fast, \
                training_bar(steps, desc, progress) as advance:
            for _ in range(self.epochs):
                loss_sum = torch.zeros((), device=device)
                correct = torch.zeros((), device=device)
                for xb, yb in iterate_batches(x, y, self.batch_size, gen):
                    xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                    if len(yb) > 1:  # BatchNorm needs two samples
                        logits = head(fast(xb)) / self.temperature
                        loss = self._classification_loss(logits, yb)
                        extra = self._extra_loss(xb, logits)
                        if extra is not None:
                            loss = loss + extra
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        loss_sum += loss.detach() * len(yb)
                        correct += (logits.argmax(1) == yb).sum()
                    advance(**stats)
                sched.step()
                stats = {"loss": loss_sum.item() / len(y), "acc": correct.item() / len(y)}
        return {"epochs": self.epochs, "steps": steps, "train_samples": len(y),
                "seconds": round(time.perf_counter() - start, 2),
                **{f"{k}_last_epoch": v for k, v in stats.items()}}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        if self.encoder is None or self.head is None:
            raise RuntimeError(f"{self.name} predicts only after train_experience")
        self.encoder.to(device).eval()
        self.head.to(device).eval()
        return self.head(self.encoder(x.to(device))).float().cpu()

    def state_dict(self) -> dict[str, Any]:
        if self.encoder is None or self.head is None:
            return {}
        return {"in_shape": self.in_shape, "backbone": self.backbone_name,
                "encoder": self.encoder.state_dict(), "head": self.head.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        encoder = self._build(tuple(state["in_shape"]))
        encoder.load_state_dict(state["encoder"])
        self.head = grow_linear(None, encoder.out_dim, state["head"]["weight"].shape[0])
        self.head.load_state_dict(state["head"])
