"""EFC, Elastic Feature Consolidation (Magistri et al., ICLR 2024): exemplar-free
class-incremental learning with an empirical feature matrix regulariser and Gaussian
prototype replay (card ``efc.md``).

* **Model**: the encoder ``f`` and one bias-free linear head over every class seen so far
  (the reference's per-task heads, concatenated; prediction is the argmax over all of
  them, task-agnostic).
* **Experience 1** (t = 0): cross-entropy over ``4 C0`` outputs: the batch and its 90/180/270
  degree rotations, copy ``k`` of class ``y`` labelled ``3y + k + C0 - 1`` through an
  auxiliary ``3 C0``-row head dropped afterwards. Adam (lr 1e-3, weight decay 2e-4),
  MultiStepLR at epochs ``lr_milestones`` (45, 90) x 0.1, BatchNorm in train mode.
* **Later experiences** (t >= 1): BatchNorm frozen (eval mode, affine parameters fixed), the
  encoder's other parameters and ALL head rows trained with Adam (lr 1e-4 constant, weight
  decay 2e-4). Per step: ``L = CE_cur + L_EFM + L_PR`` where ``CE_cur`` is the within-
  experience cross-entropy (current head rows only, targets ``y - num_old``),
  ``L_EFM = mean_i d_i^T (lambda E + eta I) d_i`` with ``d = f_t(x) - f_{t-1}(x)``
  (the frozen previous encoder; :func:`efm_loss`), and ``L_PR`` the cross-entropy over all
  head rows of ``n`` Gaussian prototype samples of old classes (no gradient to the
  encoder) and the first ``m`` images of the previous mini-batch of the current
  experience, re-encoded; ``(n, m)`` from :func:`replay_indices` / :func:`count_split`.
* **After each experience**: for t >= 1 the old class means drift by
  :func:`drift_update` (``E = E_{t-1}``, global min-max of the EFM distances, Gaussian
  kernel of width ``proto_update_sigma``; <= 0 disables it; covariances unchanged); then
  ``E_t`` (:func:`empirical_feature_matrix`, over the experience's training data in
  full batches, eval mode, all heads) replaces ``E``; then the new classes' means and
  covariances (divisor n - 1) under ``f_t``.

State across experiences: encoder, head, ``E`` and per-class ``(mu_c, S_c)``: no sample,
no per-sample feature. The replay buffer holds the previous mini-batch of the current
experience only and is emptied at every experience start.

Departures (said here, as the card asks): the bundled datasets have no augmentation
pipeline, so ``E``, the drift and the class statistics use the un-augmented training
images (the reference uses its train-augmented loader); Gaussian samples come from a
Cholesky factor of ``S_c + 1e-5 I`` computed once per experience, with the jitter
multiplied by 10 until the factorisation succeeds (the reference's
``MultivariateNormal`` would raise); inputs that are not square images are not rotated
(the first experience then trains a plain ``C0``-way cross-entropy), as in NAPA-VQ here.
The feature size is the backbone's (the reference hard-codes 512 in its drift code).
"""

from __future__ import annotations

import copy
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


def efm_terms(logits: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``sum_i W^T (diag p_i - p_i p_i^T) W`` over the rows of ``logits`` ``[B, C]`` with
    ``p = softmax(logits)`` and the head ``weight`` ``[C, D]``: the batch's summed
    per-sample ``sum_c p_c g_c g_c^T``, ``g_c = W_c - sum_m p_m W_m`` (card 3.1)."""
    p = F.softmax(logits.double(), dim=1)
    w = weight.double()
    return w.T @ (torch.diag(p.sum(0)) - p.T @ p) @ w


def efm_loss(features: torch.Tensor, old_features: torch.Tensor, matrix: torch.Tensor,
             lamb: float = 10.0, eta: float = 0.1) -> torch.Tensor:
    """``mean_i d_i^T (lamb E + eta I) d_i``, ``d = features - old_features`` (the old
    features are detached: the gradient reaches the current encoder only)."""
    d = features - old_features.detach()
    m = lamb * matrix.to(d) + eta * torch.eye(d.shape[1], dtype=d.dtype, device=d.device)
    return ((d @ m) * d).sum(1).mean()


def drift_update(means: torch.Tensor, old_features: torch.Tensor, new_features: torch.Tensor,
                 matrix: torch.Tensor, sigma: float = 0.2) -> torch.Tensor:
    """The drifted means ``[S, D]`` (card 3.4): ``q_ij = (o_j - mu_i)^T E (o_j - mu_i)``,
    rescaled ``s_ij = (q_max - q_ij) / (q_max - q_min)`` with the min and max over all
    ``(i, j)`` together, ``w_ij = softmax_j(s_ij / (2 sigma^2))``,
    ``mu_i + sum_j w_ij (n_j - o_j)``."""
    mu, o = means.double(), old_features.double()
    e = matrix.to(mu)
    e = (e + e.T) / 2  # E is symmetric; the expansion below relies on it
    oe, me = o @ e, mu @ e
    q = (oe * o).sum(1)[None, :] - 2 * me @ o.T + (me * mu).sum(1)[:, None]  # [S, N]
    span = q.max() - q.min()
    s = (q.max() - q) / span if span > 0 else torch.ones_like(q)
    w = F.softmax(s / (2 * sigma ** 2), dim=1)
    return (mu + w @ (new_features.double() - o)).to(means.dtype)


def replay_indices(num_old: int, num_new: int, batch: int, generator: torch.Generator
                   ) -> torch.Tensor:
    """The reference buffer's draw: ``batch`` distinct indices of ``0..S+C-1`` when
    ``S + C >= batch``, else a permutation followed by its first
    ``min(batch - S - C, S + C)`` entries."""
    total = num_old + num_new
    perm = torch.randperm(total, generator=generator)
    if total >= batch:
        return perm[:batch]
    return torch.cat([perm, perm[:min(batch - total, total)]])


def count_split(indices: torch.Tensor, num_old: int) -> tuple[int, int]:
    """``(n, m)``: prototype rows (indices below ``num_old``) and replay rows (the rest)."""
    n = int((indices < num_old).sum())
    return n, len(indices) - n


def rotation_labels(y: torch.Tensor, num_first: int) -> torch.Tensor:
    """``[3, B]``: rotated copy ``k = 1..3`` of class ``y`` is labelled
    ``3y + k + C0 - 1`` (card 1, first-task self-rotation)."""
    return torch.stack([3 * y + k + num_first - 1 for k in (1, 2, 3)])


def _batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _chol(cov: torch.Tensor, jitter: float = 1e-5) -> torch.Tensor:
    """A Cholesky factor of ``cov + jitter I`` (the jitter x 10 until it factorises)."""
    eye = torch.eye(cov.shape[0], dtype=torch.float64)
    for _ in range(8):
        factor, info = torch.linalg.cholesky_ex(cov.double() + jitter * eye)
        if not int(info):
            return factor
        jitter *= 10
    raise RuntimeError("efc: a class covariance is not positive semi-definite")


def gaussian_rows(labels: torch.Tensor, z: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``L[labels[i]] @ z[i]`` for every row, ``[n, D]``, without gathering ``n`` ``[D, D]``
    factors: the rows are packed per class into ``[C, k, D]`` and multiplied by each class's
    factor once (one batched matmul)."""
    if not len(labels):
        return z.new_empty(0, z.shape[1])
    counts = torch.bincount(labels, minlength=len(factors))
    order = torch.argsort(labels, stable=True)
    ranked = labels[order]
    slot = torch.arange(len(labels)) - (counts.cumsum(0) - counts)[ranked]
    packed = z.new_zeros(len(factors), int(counts.max()), z.shape[1])
    packed[ranked, slot] = z[order]
    out = torch.empty_like(z)
    out[order] = (packed @ factors.transpose(1, 2).to(z))[ranked, slot]
    return out


@register_method("efc")
class EFC(ContinualMethod):
    """Empirical feature matrix regulariser + asymmetric Gaussian prototype replay."""

    summary = ("EFC (Magistri et al. 2024): empirical feature matrix regulariser, Gaussian "
               "prototype replay and drift, exemplar-free")

    job_options = ("epochs", "seed", "backbone")

    def __init__(self, backbone: str = "auto", epochs: int = 100, batch_size: int = 64,
                 lr: float = 1e-3, lr_incremental: float = 1e-4, weight_decay: float = 2e-4,
                 lr_milestones: tuple[int, ...] | list[int] = (45, 90), lr_gamma: float = 0.1,
                 efm_lambda: float = 10.0, efm_eta: float = 0.1,
                 proto_update_sigma: float = 0.2, proto_batch: int = 64,
                 self_rotation: bool = True, seed: int = 0,
                 amp: bool | None = None, compile: bool | None = None,
                 channels_last: bool | None = None) -> None:
        self.backbone = backbone
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_incremental = lr_incremental
        self.weight_decay = weight_decay
        self.lr_milestones = [int(m) for m in lr_milestones]
        self.lr_gamma = lr_gamma
        self.efm_lambda = efm_lambda
        self.efm_eta = efm_eta
        self.proto_update_sigma = proto_update_sigma
        self.proto_batch = proto_batch
        self.self_rotation = self_rotation
        self.seed = seed
        self.amp, self.compile, self.channels_last = speed_options(amp, compile, channels_last)
        if int(proto_batch) < 1 or float(efm_lambda) < 0 or float(efm_eta) < 0:
            raise UserError(f"efc needs proto_batch >= 1, efm_lambda >= 0 and efm_eta >= 0, "
                            f"got {proto_batch}, {efm_lambda}, {efm_eta}")
        self.encoder: nn.Module | None = None
        self.head: nn.Linear | None = None
        self.in_shape: tuple[int, ...] | None = None
        self.backbone_name = ""
        self.matrix = torch.empty(0)  # E of the latest experience
        self.means = torch.empty(0)
        self.covs = torch.empty(0)
        self.buffer: tuple[torch.Tensor, torch.Tensor] | None = None  # previous batch only

    # -- building blocks -------------------------------------------------------------------

    def _build(self, in_shape: tuple[int, ...]) -> nn.Module:
        if self._new_encoder(in_shape):
            self.head = None
        return self.encoder

    def _grow_head(self, dim: int, num_classes: int) -> nn.Linear:
        new = nn.Linear(dim, num_classes, bias=False)
        if self.head is not None:
            with torch.no_grad():
                new.weight[:self.head.out_features] = self.head.weight.to(new.weight)
        return new

    def _rotates(self) -> bool:
        s = self.in_shape or ()
        return bool(self.self_rotation) and len(s) == 3 and s[1] == s[2]

    def sample_prototypes(self, n: int, generator: torch.Generator,
                          factors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` Gaussian samples ``[n, D]`` of the old classes and their labels: ``proto_batch``
        labels class-balanced (a shuffled list of the old classes, repeated), one sample each,
        shuffled, the first ``n`` kept."""
        s = len(self.means)
        reps = -(-int(self.proto_batch) // s)
        labels = torch.cat([torch.randperm(s, generator=generator)
                            for _ in range(reps)])[:int(self.proto_batch)]
        z = torch.randn(len(labels), self.means.shape[1], generator=generator,
                        dtype=torch.float64)
        keep = torch.randperm(len(labels), generator=generator)[:n]
        labels, z = labels[keep], z[keep]
        return (self.means[labels].double() + gaussian_rows(labels, z, factors)).float(), labels


    # -- training --------------------------------------------------------------------------

    def _train_first(self, encoder: nn.Module, x: Inputs, y: torch.Tensor,
                     info: ExperienceInfo, device: torch.device, progress: bool) -> dict:
        c0 = len(info.classes)
        rotate = self._rotates()
        aux = nn.Linear(encoder.out_dim, 3 * c0, bias=False).to(device) if rotate else None
        head = self.head.to(device)
        params = [*encoder.parameters(), *head.parameters(),
                  *(aux.parameters() if aux is not None else ())]
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, self.lr_milestones, self.lr_gamma)
        gen = torch.Generator().manual_seed(info.seed)
        steps = self.epochs * num_batches(len(y), self.batch_size)
        stats: dict[str, float] = {}
        encoder.train()
        with speed_up(encoder, TrainSpeed.of(self)) as fast, \
                training_bar(steps, f"{self.name} experience 1/{info.num_experiences}",
                             progress) as advance:
            for _ in range(self.epochs):
                loss_sum = torch.zeros((), device=device)
                for xb, yb in iterate_batches(x, y, self.batch_size, gen):
                    xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                    if len(yb) > 1:  # BatchNorm needs two samples
                        if aux is not None:
                            xb = torch.cat([xb] + [torch.rot90(xb, k, (-2, -1))
                                                   for k in (1, 2, 3)])
                            yb = torch.cat([yb, *rotation_labels(yb, c0)])
                        f = fast(xb)
                        logits = head(f) if aux is None else torch.cat([head(f), aux(f)], 1)
                        loss = F.cross_entropy(logits, yb)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        loss_sum += loss.detach() * len(yb)
                    advance(**stats)
                sched.step()
                stats = {"loss": loss_sum.item() / len(y) / (4 if aux is not None else 1)}
        return {"steps": steps, "rotation": rotate,
                **{f"{k}_last_epoch": v for k, v in stats.items()}}

    def step_losses(self, encoder: nn.Module, teacher: nn.Module, xb: torch.Tensor,
                    yb: torch.Tensor, info: ExperienceInfo, generator: torch.Generator,
                    factors: torch.Tensor) -> dict[str, Any]:
        """The three losses of one t >= 1 step and what they saw (for tests and logs)."""
        assert self.head is not None
        head = self.head
        f = encoder(xb)
        with torch.no_grad():
            f_old = teacher(xb)
        ce_logits = head(f)[:, info.num_old:info.num_seen]
        ce_targets = yb - info.num_old
        if self.buffer is None:  # first step of the experience: prototypes only
            n, m = int(self.proto_batch), 0
        else:
            n, m = count_split(replay_indices(info.num_old, len(info.classes),
                                              int(self.proto_batch), generator), info.num_old)
        with torch.no_grad():
            protos, proto_labels = self.sample_prototypes(n, generator, factors)
        protos, proto_labels = protos.to(f.device), proto_labels.to(f.device)
        rows, labels = [protos], [proto_labels]
        if m and self.buffer is not None:
            px, py = self.buffer
            rows.append(encoder(px[:m]))
            labels.append(py[:m])
        pr_logits = head(torch.cat(rows))
        pr_targets = torch.cat(labels)
        return {"ce": F.cross_entropy(ce_logits, ce_targets),
                "efm": efm_loss(f, f_old, self.matrix, float(self.efm_lambda),
                                float(self.efm_eta)),
                "pr": F.cross_entropy(pr_logits, pr_targets),
                "ce_logits": ce_logits, "ce_targets": ce_targets, "pr_logits": pr_logits,
                "pr_targets": pr_targets, "prototypes": protos, "n": n, "m": m}

    def _train_incremental(self, encoder: nn.Module, teacher: nn.Module, x: Inputs,
                           y: torch.Tensor, info: ExperienceInfo, device: torch.device,
                           progress: bool) -> dict:
        assert self.head is not None
        for bn in _batchnorms(encoder):
            bn.requires_grad_(False)
        params = [p for p in encoder.parameters() if p.requires_grad]
        opt = torch.optim.Adam([*params, *self.head.parameters()], lr=self.lr_incremental,
                               weight_decay=self.weight_decay)
        factors = torch.stack([_chol(c) for c in self.covs])  # sampled on the CPU
        gen = torch.Generator().manual_seed(info.seed)
        steps = self.epochs * num_batches(len(y), self.batch_size)
        stats: dict[str, float] = {}
        self.buffer = None
        encoder.train()
        for bn in _batchnorms(encoder):  # frozen: running statistics kept
            bn.eval()
        with speed_up(encoder, TrainSpeed.of(self)) as fast, \
                training_bar(steps, f"{self.name} experience {info.index + 1}/"
                             f"{info.num_experiences}", progress) as advance:
            for _ in range(self.epochs):
                sums = {k: torch.zeros((), device=device) for k in ("ce", "efm", "pr")}
                for xb, yb in iterate_batches(x, y, self.batch_size, gen):
                    xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                    out = self.step_losses(fast, teacher, xb, yb, info, gen, factors)
                    loss = out["ce"] + out["efm"] + out["pr"]
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    self.buffer = (xb, yb)
                    for k in sums:
                        sums[k] += out[k].detach() * len(yb)
                    advance(**stats)
                stats = {k: v.item() / len(y) for k, v in sums.items()}
        self.buffer = None  # never kept past the experience
        return {"steps": steps, **{f"{k}_last_epoch": v for k, v in stats.items()}}

    @torch.no_grad()
    def _encode(self, encoder: nn.Module, x: Inputs, n: int, device: torch.device,
                order: torch.Tensor | None = None) -> torch.Tensor:
        encoder.eval()
        idx = torch.arange(n) if order is None else order
        out = []
        for i in range(0, len(idx), 512):
            batch = idx[i:i + 512]
            xb = x[batch.to(x.device)] if isinstance(x, torch.Tensor) else x[batch]
            out.append(encoder(xb.to(device)).double().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def _consolidate(self, encoder: nn.Module, teacher: nn.Module | None, x: Inputs,
                     y: torch.Tensor, info: ExperienceInfo, device: torch.device) -> None:
        """Drift of the old means (E_{t-1}), then E_t, then the new classes' statistics."""
        assert self.head is not None
        feats = self._encode(encoder, x, len(y), device)
        if teacher is not None and len(self.means) and float(self.proto_update_sigma) > 0:
            old = self._encode(teacher, x, len(y), device)
            self.means = drift_update(self.means, old, feats, self.matrix,
                                      float(self.proto_update_sigma))
        # E over full batches of a shuffled pass (the reference's islice of floor(N/B))
        gen = torch.Generator().manual_seed(info.seed + 1)
        order = torch.randperm(len(y), generator=gen)
        full = (len(y) // self.batch_size) * self.batch_size or len(y)
        chosen = feats[order[:full]]
        weight = self.head.weight.detach().double().cpu()
        self.matrix = (efm_terms(chosen @ weight.T, weight) / len(chosen)).float()
        labels = y.cpu()
        means = [feats[labels == c].mean(0) for c in info.classes]
        covs = [torch.cov(feats[labels == c].T, correction=1) for c in info.classes]
        new_m, new_c = torch.stack(means).float(), torch.stack(covs).float()
        self.means = new_m if not len(self.means) else torch.cat([self.means, new_m])
        self.covs = new_c if not len(self.covs) else torch.cat([self.covs, new_c])

    def train_experience(self, x: Inputs, y: torch.Tensor, info: ExperienceInfo,
                         device: torch.device, progress: bool = True) -> dict[str, Any]:
        start = time.perf_counter()
        if isinstance(x, torch.Tensor):
            x, y = x.to(device), y.to(device)
        if info.index > 0 and self.encoder is None:
            raise UserError("efc continues from its first experience; resume from a "
                            "checkpoint of the earlier experiences")
        encoder = self._build(input_shape(x)).to(device)
        if info.index > 0 and (self.head is None or not len(self.means)):
            raise UserError("efc's state has no head or prototypes for the earlier "
                            "experiences; resume from a complete checkpoint")
        teacher = None
        if info.index > 0:
            teacher = copy.deepcopy(encoder).eval().requires_grad_(False)
        self.head = self._grow_head(encoder.out_dim, info.num_seen).to(device)
        if info.index == 0:
            fit = self._train_first(encoder, x, y, info, device, progress)
        else:
            fit = self._train_incremental(encoder, teacher, x, y, info, device, progress)
        for p in encoder.parameters():
            p.requires_grad_(True)
        self._consolidate(encoder, teacher, x, y, info, device)
        return {"epochs": self.epochs, **fit, "classes": len(self.means),
                "seconds": round(time.perf_counter() - start, 2)}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        if self.encoder is None or self.head is None:
            raise RuntimeError(f"{self.name} predicts only after train_experience")
        self.encoder.to(device).eval()
        return self.head.to(device)(self.encoder(x.to(device))).float().cpu()

    def state_dict(self) -> dict[str, Any]:
        if self.encoder is None or self.head is None:
            return {}
        return {"in_shape": self.in_shape, "backbone": self.backbone_name,
                "encoder": self.encoder.state_dict(), "head": self.head.state_dict(),
                "matrix": self.matrix, "means": self.means, "covs": self.covs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        encoder = self._build(tuple(state["in_shape"]))
        encoder.load_state_dict(state["encoder"])
        self.head = nn.Linear(encoder.out_dim, state["head"]["weight"].shape[0], bias=False)
        self.head.load_state_dict(state["head"])
        self.matrix, self.means, self.covs = state["matrix"], state["means"], state["covs"]
