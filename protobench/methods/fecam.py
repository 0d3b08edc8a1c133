"""FeCAM (Goswami et al., NeurIPS 2023): exemplar-free class-incremental learning with
per-class feature covariances and a Mahalanobis classifier (card ``fecam.md``).

* **Experience 1**: the encoder and a cosine classifier (``logits = sigma cos(f(x), w_c)``,
  sigma learnable, initialised at 1) are trained with cross-entropy, SGD (lr 0.1, momentum
  0.9, weight decay 5e-4), cosine-annealed over ``epochs`` (reference: 200, batch 128).
  The encoder is then frozen for good; later experiences train nothing.
* **Statistics** of every class when its experience arrives (training samples, eval
  mode): the prototype mu_c = mean raw feature; Sigma_c = sample covariance (divisor
  n - 1) of the Tukey-transformed features phi^beta (log phi for beta = 0); shrinkage
  Sigma + gamma1 V1 I + gamma2 V2 (11^T - I) (V1: mean diagonal, V2: mean of the non-zero
  off-diagonal entries), applied ``shrink_times`` times (the reference applies it twice);
  correlation normalisation (unit diagonal). Stored per class: mu_c and Sigma^_c only (no
  sample, no per-sample feature); old classes' statistics never change.
* **Prediction**: after the first experience only, the cosine classifier's argmax (the
  reference's task-0 rule); afterwards D_c(x) = u^T pinv(Sigma^_c) u with
  u = T(x/||x||)/||T(x/||x||)|| - T(mu_c)/||T(mu_c)||, T the Tukey transform;
  the scores are -D_c (argmin D). pinv is cached per class.

Departures (said here, as the card asks): the reference's V2 is 0/0 = NaN when every
off-diagonal entry is exactly 0; here V2 = 0 then. The reference's backbones end in a ReLU
(non-negative features, where the power transform is defined); a backbone whose output can
be negative (``mlp``) gets a ReLU appended to its output for FeCAM. The common-covariance
variant (Sigma^{1:t}) is not implemented; the per-class variant is the paper's main method.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from protobench.errors import UserError
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


def tukey(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Tukey's ladder of powers: ``x ** beta`` (``log x`` for beta = 0), for x >= 0."""
    return torch.log(x) if beta == 0 else x.clamp_min(0) ** beta


def shrink(cov: torch.Tensor, gamma1: float = 1.0, gamma2: float = 1.0) -> torch.Tensor:
    """``cov + gamma1 V1 I + gamma2 V2 (11^T - I)``; V1 = mean diagonal, V2 = mean of the
    non-zero off-diagonal entries (0 when there is none; the reference gives NaN)."""
    d = cov.shape[-1]
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    v1 = torch.diagonal(cov).mean()
    off = cov[~eye.bool()]
    nonzero = off[off != 0]
    v2 = nonzero.mean() if nonzero.numel() else cov.new_zeros(())
    return cov + gamma1 * v1 * eye + gamma2 * v2 * (1 - eye)


def correlation(cov: torch.Tensor) -> torch.Tensor:
    """``cov[i, j] / (sigma_i sigma_j)``: unit diagonal."""
    s = torch.sqrt(torch.diagonal(cov))
    return cov / (s[:, None] * s[None, :])


def class_statistics(features: torch.Tensor, beta: float, gamma1: float, gamma2: float,
                     times: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mu_c, Sigma^_c)`` of one class's raw features ``[n, D]`` (float64)."""
    f = features.double()
    cov = torch.cov(tukey(f, beta).T, correction=1)
    for _ in range(times):
        cov = shrink(cov, gamma1, gamma2)
    return f.mean(0), correlation(cov)


def mahalanobis(x: torch.Tensor, means: torch.Tensor, pinvs: torch.Tensor, beta: float
                ) -> torch.Tensor:
    """``D [n, C]``: FeCAM's squared distance of each row of ``x`` to each class."""
    x1 = x.double() / (x.double().norm(dim=1, keepdim=True) + 1e-8)
    q = F.normalize(tukey(x1, beta), dim=1)
    m = F.normalize(tukey(means.double(), beta), dim=1)
    out = []
    for lo in range(0, len(q), 256):  # [chunk, C, D] at a time, not [n, C, D]
        u = q[lo:lo + 256, None, :] - m[None, :, :]
        out.append(torch.einsum("ncd,cde,nce->nc", u, pinvs, u))
    return torch.cat(out) if out else q.new_empty(0, len(m))


class CosineLinear(nn.Module):
    """``sigma * cos(x, w_c)`` with a learnable scale (init 1), PyCIL's cosine head."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_dim))
        nn.init.uniform_(self.weight, -1 / math.sqrt(in_dim), 1 / math.sqrt(in_dim))
        self.sigma = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sigma * F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).T


class NonNegative(nn.Module):
    """A backbone with a ReLU on its output (features where Tukey's transform is defined)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.out_dim = encoder.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.encoder(x))


@register_method("fecam")
class FeCAM(ContinualMethod):
    """Frozen encoder after experience 1; Tukey + shrunk, normalised class covariances."""

    summary = ("FeCAM (Goswami et al. 2023): encoder frozen after experience 1, per-class "
               "Mahalanobis on Tukey features, exemplar-free")

    job_options = ("epochs", "seed", "backbone")

    def __init__(self, backbone: str = "auto", epochs: int = 200, batch_size: int = 128,
                 lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4,
                 beta: float = 0.5, gamma1: float = 1.0, gamma2: float = 1.0,
                 shrink_times: int = 2, seed: int = 0,
                 amp: bool | None = None, compile: bool | None = None,
                 channels_last: bool | None = None) -> None:
        self.backbone = backbone
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.beta = beta
        self.gamma1 = gamma1
        self.gamma2 = gamma2
        self.shrink_times = shrink_times
        self.seed = seed
        self.amp, self.compile, self.channels_last = speed_options(amp, compile, channels_last)
        if int(shrink_times) < 0 or float(beta) < 0:
            raise UserError(f"fecam needs beta >= 0 and shrink_times >= 0, got beta={beta}, "
                            f"shrink_times={shrink_times}")
        self.encoder: nn.Module | None = None
        self.head: CosineLinear | None = None
        self.in_shape: tuple[int, ...] | None = None
        self.backbone_name = ""
        self.means = torch.empty(0)
        self.covs = torch.empty(0)
        self._pinv: torch.Tensor | None = None

    def _build(self, in_shape: tuple[int, ...]) -> nn.Module:
        if self._new_encoder(in_shape):
            if self.backbone_name == "mlp":  # its output can be negative: see the docstring
                self.encoder = NonNegative(self.encoder)
            self.head = None
        return self.encoder

    def _train_first(self, x: Inputs, y: torch.Tensor, info: ExperienceInfo,
                     device: torch.device, progress: bool) -> dict[str, Any]:
        encoder = self._build(input_shape(x))
        self.head = CosineLinear(encoder.out_dim, info.num_seen)
        encoder.to(device).train()
        head = self.head.to(device).train()
        params = [*encoder.parameters(), *head.parameters()]
        opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                              weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.epochs))
        gen = torch.Generator().manual_seed(info.seed)
        steps = self.epochs * num_batches(len(y), self.batch_size)
        stats: dict[str, float] = {}
        with speed_up(encoder, TrainSpeed.of(self)) as fast, \
                training_bar(steps, f"{self.name} experience 1/{info.num_experiences}",
                             progress) as advance:
            for _ in range(self.epochs):
                loss_sum = torch.zeros((), device=device)
                for xb, yb in iterate_batches(x, y, self.batch_size, gen):
                    xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                    if len(yb) > 1:  # BatchNorm needs two samples
                        loss = F.cross_entropy(head(fast(xb)), yb)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        loss_sum += loss.detach() * len(yb)
                    advance(**stats)
                sched.step()
                stats = {"loss": loss_sum.item() / len(y)}
        for p in [*encoder.parameters(), *head.parameters()]:
            p.requires_grad_(False)
        return {"epochs": self.epochs, "steps": steps,
                **{f"{k}_last_epoch": v for k, v in stats.items()}}

    @torch.no_grad()
    def _features(self, x: Inputs, n: int, device: torch.device) -> torch.Tensor:
        assert self.encoder is not None
        self.encoder.to(device).eval()
        out = [self.encoder(x[torch.arange(i, min(i + 512, n))].to(device)).cpu()
               for i in range(0, n, 512)]
        return torch.cat(out)

    def train_experience(self, x: Inputs, y: torch.Tensor, info: ExperienceInfo,
                         device: torch.device, progress: bool = True) -> dict[str, Any]:
        start = time.perf_counter()
        fit: dict[str, Any] = {}
        if info.index == 0 or self.encoder is None:
            if info.index != 0:
                raise UserError("fecam trains its encoder on the first experience; resume "
                                "from a checkpoint of that experience")
            xt, yt = (x.to(device), y.to(device)) if isinstance(x, torch.Tensor) else (x, y)
            fit = self._train_first(xt, yt, info, device, progress)
        else:
            self._build(input_shape(x))  # checks the input shape; never a fresh encoder
        feats = self._features(x, len(y), device)
        if self.beta != 1 and bool((feats < 0).any()):
            raise UserError("fecam's Tukey transform needs non-negative features; use a "
                            "backbone that ends in a ReLU or beta=1")
        means, covs = [], []
        for c in info.classes:
            mu, cov = class_statistics(feats[y.cpu() == c], float(self.beta),
                                       float(self.gamma1), float(self.gamma2),
                                       int(self.shrink_times))
            means.append(mu)
            covs.append(cov)
        new_m, new_c = torch.stack(means), torch.stack(covs)
        self.means = new_m if not len(self.means) else torch.cat([self.means, new_m])
        self.covs = new_c if not len(self.covs) else torch.cat([self.covs, new_c])
        self._pinv = None
        return {**fit, "classes": len(self.means), "frozen": info.index > 0,
                "seconds": round(time.perf_counter() - start, 2)}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        if self.encoder is None or self.head is None or not len(self.means):
            raise RuntimeError(f"{self.name} predicts only after train_experience")
        feats = self._features(x, len(x), device)
        if len(self.means) <= self.head.weight.shape[0]:  # only the first experience seen
            return self.head.to(device)(feats.to(device)).float().cpu()
        if self._pinv is None or len(self._pinv) != len(self.covs):
            self._pinv = torch.linalg.pinv(self.covs, hermitian=True)
        return (-mahalanobis(feats, self.means, self._pinv, float(self.beta))).float()

    def state_dict(self) -> dict[str, Any]:
        if self.encoder is None or self.head is None:
            return {}
        return {"in_shape": self.in_shape, "backbone": self.backbone_name,
                "encoder": self.encoder.state_dict(), "head": self.head.state_dict(),
                "means": self.means, "covs": self.covs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        encoder = self._build(tuple(state["in_shape"]))
        encoder.load_state_dict(state["encoder"])
        self.head = CosineLinear(encoder.out_dim, state["head"]["weight"].shape[0])
        self.head.load_state_dict(state["head"])
        for p in [*encoder.parameters(), *self.head.parameters()]:
            p.requires_grad_(False)
        self.means, self.covs, self._pinv = state["means"], state["covs"], None
