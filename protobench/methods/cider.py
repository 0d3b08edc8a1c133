"""CIDER: compactness and dispersion regularised hyperspherical embeddings for OOD
detection (Ming et al., ICLR 2023; card ``cider.md``; reference ``deeplearning-wisc/cider``).

Encoder ``f`` and head ``g`` (Linear-ReLU-Linear), ``z = normalize(g(f(x)))`` of two views
per image; one unit prototype per class in a buffer, initialised with the normalised class
means of ``z`` over the ID training set under the randomly initialised network (eval
mode). Each step, with ``Z`` = all first views then all second views:

1. the EMA update, sequential per sample in batch order:
   ``p_y <- normalize(alpha p_y + (1 - alpha) z_j)``; ``z_j`` keeps its graph (the
   dispersion loss reaches the encoder only through this step); the buffer then stores the
   detached result;
2. dispersion on the updated prototypes:
   ``L_dis = (tau / tau_b) mean_i log[ mean_{j != i} exp(p_i . p_j / tau) ]``;
3. compactness on the detached updated prototypes, a prototype-softmax cross-entropy with
   the reference's ``tau_b = 0.07`` (an extra factor 0.1 / 0.07):
   ``L_comp = -(tau / tau_b) mean_n log softmax_c(z_n . p_c / tau)[y_n]``;
4. ``L = w L_comp + L_dis``, SGD with Nesterov momentum.

At test time the penultimate features ``h = f(x)`` go to a feature score; the paper's is
KNN on normalised ``h`` (``default_score = "knn"``; ``--score-param k=300`` for CIFAR-100).

Presets (``preset="auto"`` picks by input shape, as PALM's): ``paper`` (32x32 images and up;
the CIFAR-100 script): ResNet-34 (CIFAR stem), head 512-512-128, 500 epochs, batch 512,
SGD lr 0.5, weight decay 1e-4, alpha 0.5, w 1, the crop/flip/jitter/grayscale views, an
epoch-wise cosine down to lr / 1000 with the reference's warm-up (forced above batch 256:
10 epochs from 0.001 to the cosine's value at epoch 10); ``toy`` (card section 8): MLP
64-128-64, head d-d-16, 20 epochs, batch 64, lr 0.05, alpha 0.5, w 1, 1-pixel shifts +
noise, no warm-up. Inputs are normalised with the ID training set's statistics.

The reference's warm-up counts epochs from 0 in a formula written for epochs from 1, so its
first epoch runs at a negative learning rate (card property 7). ``warmup_from_one=False``
(default) keeps that, faithfully; ``True`` counts from 1 (no negative rate). The last
epoch's weights are kept (no model selection, as the reference).
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
from protobench.errors import UserError
from protobench.methods.base import register_method
from protobench.methods.palm import (
    encoder_features,
    input_statistics,
    normalise_inputs,
    projection_head,
)
from protobench.methods.palm_augment import paper_view, shift_noise_view
from protobench.methods.protocols import OODMethod
from protobench.progress import training_bar

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"backbone": "resnet34", "epochs": 500, "batch_size": 512, "lr": 0.5,
              "alpha": 0.5, "compactness_weight": 1.0, "projection_dim": 128,
              "augment": "paper"},
    "toy": {"backbone": "auto", "epochs": 20, "batch_size": 64, "lr": 0.05, "alpha": 0.5,
            "compactness_weight": 1.0, "projection_dim": 16, "augment": "shift-noise"},
}
OVERRIDABLE = tuple(PRESETS["paper"])


def ema_update(protos: torch.Tensor, z: torch.Tensor, y: torch.Tensor, alpha: float
               ) -> torch.Tensor:
    """The sequential per-sample EMA (module docstring, step 1): the updated ``[C, D]``
    prototypes, with the graph to ``z``. Samples of different classes do not interact, so
    the r-th sample of every class is applied at once (same result as the sample loop)."""
    rank = torch.zeros_like(y)
    for c in y.unique():  # position of each sample among its class's, in batch order
        idx = (y == c).nonzero().squeeze(1)
        rank[idx] = torch.arange(len(idx), device=y.device)
    p = protos
    for r in range(int(rank.max()) + 1 if len(y) else 0):
        sel = (rank == r).nonzero().squeeze(1)
        rows = y[sel]
        new = F.normalize(alpha * p[rows] + (1 - alpha) * z[sel], dim=1)
        p = p.index_copy(0, rows, new)
    return p


def dispersion_loss(protos: torch.Tensor, temperature: float = 0.1,
                    base_temperature: float = 0.1) -> torch.Tensor:
    """``(tau / tau_b) mean_i log[ mean_{j != i} exp(p_i . p_j / tau) ]`` (NaN rows dropped)."""
    c = protos.shape[0]
    logits = protos @ protos.T / temperature
    off = ~torch.eye(c, dtype=torch.bool, device=protos.device)
    per = torch.log((torch.exp(logits) * off).sum(1) / (c - 1))
    per = per[~torch.isnan(per)]
    return temperature / base_temperature * per.mean()


def compactness_loss(z: torch.Tensor, protos: torch.Tensor, y: torch.Tensor,
                     temperature: float = 0.1, base_temperature: float = 0.07) -> torch.Tensor:
    """``-(tau / tau_b) mean_n log softmax_c(z_n . p_c / tau)[y_n]``, prototypes detached."""
    logits = z @ F.normalize(protos.detach(), dim=1).T / temperature
    return temperature / base_temperature * F.cross_entropy(logits, y)


def cider_lr(epoch: int, batch: int, batches: int, cfg: dict[str, Any], warm: bool,
             from_one: bool) -> float:
    """The reference's learning rate (SupCon's ``adjust_learning_rate`` and
    ``warmup_learning_rate``): epoch-wise cosine to ``lr / 1000``; in the first 10 epochs
    a linear warm-up from 0.001, with the reference's epoch counting (module docstring)."""
    lr, epochs, warm_epochs = cfg["lr"], cfg["epochs"], 10
    eta_min = lr * 0.1 ** 3
    cosine = eta_min + (lr - eta_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2
    if warm and epoch <= warm_epochs:
        warmup_to = eta_min + (lr - eta_min) * (1 + math.cos(math.pi * warm_epochs / epochs)) / 2
        e = epoch + 1 if from_one else epoch
        p = (batch + (e - 1) * batches) / (warm_epochs * batches)
        return 0.001 + p * (warmup_to - 0.001)
    return cosine


def preset_for(in_shape: tuple[int, ...]) -> str:
    return "paper" if len(in_shape) == 3 and min(in_shape[1:]) >= 32 else "toy"


@register_method("cider")
class CIDER(OODMethod):
    """CIDER (ICLR 2023): one EMA prototype per class, compactness + dispersion, KNN score."""

    has_classifier = False
    default_score = "knn"
    summary = "CIDER (Ming et al. 2023): hyperspherical prototypes, compactness + dispersion"

    job_options = ("epochs", "seed", "backbone")

    def __init__(self, backbone: str | None = None, preset: str = "auto",
                 epochs: int | None = None, batch_size: int | None = None,
                 lr: float | None = None, momentum: float = 0.9, weight_decay: float = 1e-4,
                 alpha: float | None = None, compactness_weight: float | None = None,
                 temperature: float = 0.1, compactness_base_temperature: float = 0.07,
                 projection_dim: int | None = None, augment: str | None = None,
                 warmup: str = "auto", warmup_from_one: bool = False, seed: int = 0) -> None:
        self.backbone = backbone
        self.preset = preset
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.alpha = alpha
        self.compactness_weight = compactness_weight
        self.temperature = temperature
        self.compactness_base_temperature = compactness_base_temperature
        self.projection_dim = projection_dim
        self.augment = augment
        self.warmup = warmup
        self.warmup_from_one = warmup_from_one
        self.seed = seed
        self.encoder: nn.Module | None = None
        self.head: nn.Module | None = None
        self.protos = torch.empty(0)
        self.config_: dict[str, Any] = {}
        self.input_mean = self.input_std = torch.empty(0)

    def config(self, in_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
        preset = preset_for(in_shape) if self.preset == "auto" else self.preset
        if preset not in PRESETS:
            raise UserError(f"cider: unknown preset {self.preset!r}; choose auto, paper or toy")
        if self.warmup not in ("auto", "on", "off"):
            raise UserError(f"cider: warmup must be auto, on or off, got {self.warmup!r}")
        cfg = {k: PRESETS[preset][k] if getattr(self, k) is None else getattr(self, k)
               for k in OVERRIDABLE}
        if cfg["backbone"] == "auto":
            cfg["backbone"] = default_backbone(in_shape)
        if cfg["augment"] not in ("paper", "shift-noise", "none"):
            raise UserError(f"cider: unknown augment {cfg['augment']!r}; choose paper, "
                            "shift-noise or none")
        if cfg["augment"] == "paper" and len(in_shape) != 3:
            raise UserError("cider: augment='paper' needs images [C, H, W]; use shift-noise")
        if not 0 <= float(cfg["alpha"]) <= 1:
            raise UserError(f"cider: alpha must lie in [0, 1], got {cfg['alpha']}")
        warm = cfg["batch_size"] > 256 if self.warmup == "auto" else self.warmup == "on"
        return {**cfg, "preset": preset, "warmup": warm, "num_classes": num_classes,
                "in_shape": list(in_shape)}

    def _build(self, cfg: dict[str, Any]) -> None:
        torch.manual_seed(self.seed)
        kw = {"hidden": 128, "out_dim": 64} if cfg["backbone"] == "mlp" else {}
        self.encoder = build_backbone(cfg["backbone"], tuple(cfg["in_shape"]), **kw)
        self.head = projection_head(self.encoder.out_dim, cfg["projection_dim"])
        self.config_ = cfg

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return normalise_inputs(x, self.input_mean, self.input_std)

    def _view(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        aug = self.config_["augment"]
        if aug == "paper":
            return self._normalise(paper_view(x, gen))
        if aug == "shift-noise":
            return shift_noise_view(self._normalise(x), gen, shift=1, noise_std=0.1)
        return self._normalise(x)

    @torch.no_grad()
    def _initial_prototypes(self, train: LabeledData, device: torch.device) -> torch.Tensor:
        """Normalised class means of ``z`` under the current network, eval mode, no views."""
        assert self.encoder is not None and self.head is not None
        self.encoder.eval()
        self.head.eval()
        c, d = self.config_["num_classes"], self.config_["projection_dim"]
        sums, counts = torch.zeros(c, d, device=device), torch.zeros(c, device=device)
        for lo in range(0, len(train), 512):
            idx = torch.arange(lo, min(len(train), lo + 512))
            x = self._normalise(train.get(idx).to(device))
            z = F.normalize(self.head(self.encoder(x)), dim=1)
            y = train.labels[idx].to(device)
            sums.index_add_(0, y, z)
            counts.index_add_(0, y, torch.ones_like(y, dtype=z.dtype))
        return F.normalize(sums / counts.clamp_min(1)[:, None], dim=1)

    def fit(self, train: LabeledData, device: torch.device, epochs: int | None = None,
            progress: bool = True) -> dict[str, Any]:
        in_shape = tuple(train.get(torch.tensor([0])).shape[1:])
        cfg = self.config(in_shape, train.num_classes)
        if epochs is not None:
            cfg["epochs"] = int(epochs)
        self._build(cfg)
        assert self.encoder is not None and self.head is not None
        self.input_mean, self.input_std = input_statistics(train)
        encoder, head = self.encoder.to(device), self.head.to(device)
        protos = self._initial_prototypes(train, device)
        opt = torch.optim.SGD([*encoder.parameters(), *head.parameters()], lr=cfg["lr"],
                              momentum=self.momentum, nesterov=True,
                              weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        n, bs = len(train), cfg["batch_size"]
        batches = -(-n // bs)
        curve, lrs = [], []
        start = time.perf_counter()
        encoder.train()
        head.train()
        with training_bar(cfg["epochs"] * batches, "cider", progress) as advance:
            for epoch in range(cfg["epochs"]):
                sums = torch.zeros(3, device=device)
                order = torch.randperm(n, generator=gen)
                for b, lo in enumerate(range(0, n, bs)):
                    idx = order[lo:lo + bs]
                    x = train.get(idx).to(device)
                    y = train.labels[idx].to(device).repeat(2)
                    lr = cider_lr(epoch, b, batches, cfg, cfg["warmup"], self.warmup_from_one)
                    for group in opt.param_groups:
                        group["lr"] = lr
                    if b == 0:
                        lrs.append(lr)
                    views = torch.cat([self._view(x, gen), self._view(x, gen)])
                    z = F.normalize(head(encoder(views)), dim=1)
                    updated = ema_update(protos, z, y, float(cfg["alpha"]))
                    dis = dispersion_loss(updated, self.temperature, self.temperature)
                    comp = compactness_loss(z, updated, y, self.temperature,
                                            self.compactness_base_temperature)
                    loss = float(cfg["compactness_weight"]) * comp + dis
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    protos = updated.detach()
                    sums += torch.stack([loss.detach(), comp.detach(), dis.detach()]) * len(idx)
                    advance(loss=loss.item())
                curve.append((sums / n).tolist())
        self.protos = protos.cpu()
        return {"config": cfg, "epochs": cfg["epochs"], "train_seconds":
                round(time.perf_counter() - start, 3),
                "loss_curve": [round(c[0], 6) for c in curve],
                "comp_curve": [round(c[1], 6) for c in curve],
                "dis_curve": [round(c[2], 6) for c in curve],
                "epoch_start_lr": [round(v, 7) for v in lrs]}

    @torch.no_grad()
    def features(self, x: torch.Tensor, device: torch.device,
                 batch_size: int = 512) -> torch.Tensor:
        """Penultimate features ``h = f(x)`` ``[B, D]`` (before the head), CPU float32."""
        return encoder_features("cider", self.encoder, self.config_, self._normalise, x,
                                device, batch_size)

    def state_dict(self) -> dict[str, Any]:
        if self.encoder is None or self.head is None:
            return {}
        return {"config": dict(self.config_), "input_mean": self.input_mean.clone(),
                "input_std": self.input_std.clone(), "protos": self.protos.clone(),
                "encoder": self.encoder.state_dict(), "head": self.head.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self._build(dict(state["config"]))
        assert self.encoder is not None and self.head is not None
        self.encoder.load_state_dict(state["encoder"])
        self.head.load_state_dict(state["head"])
        self.protos = state["protos"].clone()
        self.input_mean, self.input_std = state["input_mean"].clone(), state["input_std"].clone()
