"""``ce``: a cross-entropy classifier (backbone + linear head), the baseline every post-hoc
OOD score is applied to (OpenOOD's CE models; the "post-hoc on a CE model" rows of PALM's
Table 1).

Training follows OpenOOD's CE recipe: SGD (momentum 0.9, Nesterov), lr 0.1, weight
decay 5e-4, batch 128, a per-step cosine schedule to 0, 100 epochs; images of 32x32 and
more get the standard CIFAR views (4-pixel padded random crop + horizontal flip), smaller
inputs none. Inputs are normalised with the per-channel mean and std of the ID training
set (also at test time), as PALM does, so both methods see the same inputs.

The backbone is built exactly like PALM's (``auto`` = :func:`default_backbone` for the
input shape; ``mlp`` is the card's toy MLP ``in-128-64``), so ``--method ce`` and
``--method palm`` compare the same network. ``features`` = the penultimate backbone output
``[B, D]``; ``logits`` = the head ``[B, C]``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from protobench.backbones import build_backbone, default_backbone
from protobench.datasets.base import LabeledData
from protobench.errors import UserError, check_input_shape
from protobench.methods.base import register_method
from protobench.methods.protocols import OODMethod
from protobench.progress import training_bar

MLP_KWARGS = {"hidden": 128, "out_dim": 64}  # PALM's toy encoder (palm.md section 8)


def standard_view(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop of a ``pad``-padded image + horizontal flip, per sample ``[B, C, H, W]``."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)).to(x.device)  # [B, H]
    cols = (dx[:, None] + torch.arange(w)).to(x.device)  # [B, W]
    out = padded[torch.arange(b, device=x.device)[:, None, None, None],
                 torch.arange(x.shape[1], device=x.device)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


@register_method("ce")
class CrossEntropyOOD(OODMethod):
    """Backbone + linear head trained with cross-entropy on the ID classes."""

    has_classifier = True
    default_score = "msp"
    summary = "cross-entropy classifier (backbone + linear head) for post-hoc OOD scores"

    job_options = ("epochs", "seed", "backbone")

    def __init__(self, backbone: str = "auto", epochs: int = 100, batch_size: int = 128,
                 lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4,
                 augment: str = "auto", seed: int = 0) -> None:
        self.backbone = backbone
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.augment = augment
        self.seed = seed
        self.encoder: nn.Module | None = None
        self.head: nn.Linear | None = None
        self.config_: dict[str, Any] = {}
        self.input_mean = self.input_std = torch.empty(0)

    def _build(self, in_shape: tuple[int, ...], num_classes: int) -> None:
        name = default_backbone(in_shape) if self.backbone == "auto" else self.backbone
        if self.augment not in ("auto", "standard", "none"):
            raise UserError(f"ce: unknown augment {self.augment!r}; choose auto, standard or "
                            "none")
        images = len(in_shape) == 3
        augment = self.augment if self.augment != "auto" else \
            ("standard" if images and min(in_shape[1:]) >= 32 else "none")
        if augment == "standard" and not images:
            raise UserError("ce: augment='standard' needs images [C, H, W]; use none")
        torch.manual_seed(self.seed)
        self.encoder = build_backbone(name, in_shape, **(MLP_KWARGS if name == "mlp" else {}))
        self.head = nn.Linear(self.encoder.out_dim, num_classes)
        self.config_ = {"backbone": name, "in_shape": list(in_shape),
                        "num_classes": num_classes, "augment": augment}

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2) if x.dim() == 4 else (1,) * x.dim()
        return (x - self.input_mean.to(x.device).view(shape)) / \
            self.input_std.to(x.device).view(shape)

    def fit(self, train: LabeledData, device: torch.device, epochs: int | None = None,
            progress: bool = True) -> dict[str, Any]:
        from protobench.methods.palm import input_statistics

        epochs = int(self.epochs if epochs is None else epochs)
        in_shape = tuple(train.get(torch.tensor([0])).shape[1:])
        self._build(in_shape, train.num_classes)
        assert self.encoder is not None and self.head is not None
        self.input_mean, self.input_std = input_statistics(train)
        encoder, head = self.encoder.to(device).train(), self.head.to(device).train()
        opt = torch.optim.SGD([*encoder.parameters(), *head.parameters()], lr=self.lr,
                              momentum=self.momentum, nesterov=True,
                              weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        n, bs = len(train), int(self.batch_size)
        total, step = epochs * math.ceil(n / bs), 0
        curve: list[float] = []
        start = time.perf_counter()
        with training_bar(total, "ce", progress) as advance:
            for _ in range(epochs):
                loss_sum = torch.zeros((), device=device)
                correct = torch.zeros((), device=device)
                order = torch.randperm(n, generator=gen)
                for lo in range(0, n, bs):
                    idx = order[lo:lo + bs]
                    x = self._normalise(train.get(idx).to(device))
                    y = train.labels[idx].to(device)
                    if self.config_["augment"] == "standard":
                        x = standard_view(x, gen)
                    for group in opt.param_groups:  # cosine to 0 over every step
                        group["lr"] = 0.5 * self.lr * (1 + math.cos(math.pi * step / total))
                    logits = head(encoder(x))
                    loss = F.cross_entropy(logits, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step += 1
                    loss_sum += loss.detach() * len(idx)
                    correct += (logits.argmax(1) == y).sum()
                    advance(loss=loss.item())
                curve.append(loss_sum.item() / n)
        return {"config": dict(self.config_), "epochs": epochs, "steps": step,
                "train_seconds": round(time.perf_counter() - start, 3),
                "train_accuracy_last_epoch": round(correct.item() / n, 6),
                "loss_curve": [round(v, 6) for v in curve]}

    def _check(self) -> tuple[nn.Module, nn.Linear]:
        if self.encoder is None or self.head is None:
            raise UserError("ce: no trained model; run fit or load a checkpoint first")
        return self.encoder, self.head

    @torch.no_grad()
    def features(self, x: torch.Tensor, device: torch.device,
                 batch_size: int = 512) -> torch.Tensor:
        """Penultimate features ``[B, D]`` (CPU float32), eval mode."""
        encoder, _ = self._check()
        check_input_shape("ce", self.config_["in_shape"], x.shape[1:])
        encoder.to(device).eval()
        out = [encoder(self._normalise(x[lo:lo + batch_size].to(device))).float().cpu()
               for lo in range(0, len(x), batch_size)]
        return torch.cat(out) if out else torch.empty(0, encoder.out_dim)

    @torch.no_grad()
    def logits(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Class scores ``[B, C]`` (CPU float32)."""
        _, head = self._check()
        return head.cpu().eval()(self.features(x, device))

    @torch.no_grad()
    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """The head applied to cached features ``[B, D]`` -> ``[B, C]`` (no backbone pass)."""
        _, head = self._check()
        return head.cpu().eval()(features.float())

    def state_dict(self) -> dict[str, Any]:
        if self.encoder is None or self.head is None:
            return {}
        return {"config": dict(self.config_), "input_mean": self.input_mean.clone(),
                "input_std": self.input_std.clone(),
                "encoder": {k: v.detach().cpu().clone()
                            for k, v in self.encoder.state_dict().items()},
                "head": {k: v.detach().cpu().clone() for k, v in self.head.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        cfg = state["config"]
        backbone, augment = self.backbone, self.augment
        self.backbone, self.augment = cfg["backbone"], cfg["augment"]
        try:
            self._build(tuple(cfg["in_shape"]), int(cfg["num_classes"]))
        finally:
            self.backbone, self.augment = backbone, augment
        assert self.encoder is not None and self.head is not None
        self.encoder.load_state_dict(state["encoder"])
        self.head.load_state_dict(state["head"])
        self.input_mean, self.input_std = state["input_mean"].clone(), state["input_std"].clone()
