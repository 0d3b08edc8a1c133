"""PRD: prototype-sample relation distillation (replay-free continual learning).

Asadi et al., ICML 2023 (``shared/methods/prd.md``). An encoder ``f`` (features ``h``) and
a projector ``g`` learn by supervised contrast on two augmented views of every image;
one prototype ``p_c`` per class lives in ``h``-space and learns without contrasts; from
the second experience on, a frozen copy of the previous encoder and prototypes anchors
how the old prototypes relate to the samples::

    L = L_SC(normalize(g(h)), y) + alpha L_p(sg[h], P_t) + beta L_d(h, P_<t; h_old, P_old)
    L_p = mean_i (1 - cos(sg[h_i], p_{y_i}))                    (current prototypes only)

``L_d`` has two forms (card section 4.3). The default, ``relation_axis="classes"``,
``relation_sim="proj"``, ``distill_temp=1``, is the released code: scores
``<h_i, p_k> / |p_k|``, for each old experience a softmax over its classes per sample,
``sum_tasks KL(teacher || student)`` averaged over the ``2B`` rows. The paper's form is
``relation_axis="samples"``, ``relation_sim="cosine"`` (with a small ``distill_temp``,
e.g. 0.1): per old prototype a softmax over the mini-batch samples of ``cos(p_k, h_i)/tau``,
``sum_k KL(teacher || student)``. Gradients: L_SC -> f, g; L_p -> current prototypes;
L_d -> f and the old prototypes (they keep moving); the teacher gets none. Prediction:
nearest prototype in cosine geometry over the classes seen so far, through the learnt
tensor wrapped as :class:`~protobench.geometry.Prototypes` (its cached
:class:`~protobench.geometry.PrototypeIndex` is built once per experience, not per batch;
with ``metric="geodesic"``, per-class diffusion maps score it as a strategy:
:mod:`protobench.geometry.geodesic_continual`). State: f, g, the prototypes, the class
ranges of the experiences, and the encoder optimiser's momentum (one optimiser for the
whole run, as the reference); nothing per sample.

Departures from the reference code:

* prototypes grow by one row per new class (the reference creates every head up front and
  its class-incremental prediction then includes untrained heads; ours never can);
* views come from a tensor-level augmentation (random shift crop with zero padding of
  ``H/8`` pixels; for RGB also horizontal flip, colour jitter (0.4, p=0.8) and grayscale
  (p=0.2); Gaussian noise for one-channel images; noise and feature masking for vectors),
  in place of kornia's pipeline on [-1, 1] pixels;
* the warm-up and the lr milestones scale with ``epochs`` when not given (card: 100
  epochs, 120 warm-up epochs on the first experience, milestones 120/160), and each
  parameter group decays from its own base lr (the reference overwrites the prototypes'
  lr with the encoder's; both are 0.01 by default);
* the teacher is a copy of the encoder taken at the start of each experience (identical
  to the reference's copy at the end of the previous one) and, as in the reference, runs
  in train mode (its BatchNorm layers use the batch's statistics).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from protobench.errors import UserError
from protobench.geometry.geodesic_continual import continual_geodesic
from protobench.geometry.prototypes import Prototypes
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

AXES = ("classes", "samples")
SIMILARITIES = ("proj", "cosine")


def supcon_loss(z: torch.Tensor, y: torch.Tensor, temperature: float = 0.1,
                base_temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss of L2-normalised rows ``z [N, d]`` with labels ``y [N]``:
    ``-(tau/tau_b) mean_i mean_{p in Pos(i)} log softmax_{a != i}(z_i.z_a / tau)[p]``."""
    n = len(z)
    own = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = (z @ z.T / temperature).masked_fill(own, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, 1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~own
    mean_pos = log_prob.masked_fill(~pos, 0.0).sum(1) / pos.sum(1).clamp(min=1)
    return -(temperature / base_temperature) * mean_pos.mean()


def prototype_loss(h: torch.Tensor, y: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``mean_i (1 - cos(sg[h_i], p_{y_i}))``: trains only the prototypes of ``y``."""
    return (1 - F.cosine_similarity(h.detach(), prototypes[y], dim=1)).mean()


def relation_scores(h: torch.Tensor, prototypes: torch.Tensor, sim: str) -> torch.Tensor:
    """``[N, K]``: ``<h, p/|p|>`` (``proj``) or ``cos(h, p)`` (``cosine``)."""
    if sim not in SIMILARITIES:
        raise UserError(f"unknown relation_sim {sim!r}; choose one of: {', '.join(SIMILARITIES)}")
    p = F.normalize(prototypes, dim=1)
    return (F.normalize(h, dim=1) if sim == "cosine" else h) @ p.T


def relation_loss(h: torch.Tensor, prototypes: torch.Tensor, h_old: torch.Tensor,
                  prototypes_old: torch.Tensor, bounds: list[int], axis: str = "classes",
                  sim: str = "proj", temperature: float = 1.0) -> torch.Tensor:
    """Prototype-sample relation distillation ``L_d`` over the old prototypes ``[K, D]``.

    ``bounds``: class offsets of the old experiences (``[0, n_0, n_0 + n_1, ..., K]``).
    ``classes``: ``sum_s (1/N) sum_i KL(q_i^s || p_i^s)``, softmax over experience ``s``'s
    prototypes per row; ``samples``: ``sum_k KL(q_k || p_k)``, softmax over the ``N`` rows
    per prototype. ``q`` from the teacher (``h_old``, ``prototypes_old``, no gradient).
    """
    new = relation_scores(h, prototypes, sim) / temperature
    with torch.no_grad():
        old = relation_scores(h_old, prototypes_old, sim) / temperature
    if axis == "classes":
        loss = new.new_zeros(())
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            log_q, log_p = old[:, lo:hi].log_softmax(1), new[:, lo:hi].log_softmax(1)
            loss = loss + (log_q.exp() * (log_q - log_p)).sum() / len(h)
        return loss
    if axis == "samples":
        log_q, log_p = old.log_softmax(0), new.log_softmax(0)
        return (log_q.exp() * (log_q - log_p)).sum()
    raise UserError(f"unknown relation_axis {axis!r}; choose one of: {', '.join(AXES)}")


def augment_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view of a batch (see the module docstring); draws from ``generator``."""
    n, dev = len(x), x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator).to(dev)

    if x.dim() != 4:
        flat = x.flatten(1)
        noise = torch.randn(flat.shape, generator=generator).to(dev) * 0.1 * flat.std()
        keep = (rand(*flat.shape) >= 0.1).to(flat)
        return ((flat + noise) * keep).view_as(x)
    _, c, h, w = x.shape
    pad = max(1, h // 8)
    oy = torch.randint(2 * pad + 1, (n,), generator=generator).to(dev)
    ox = torch.randint(2 * pad + 1, (n,), generator=generator).to(dev)
    rows = oy[:, None] + torch.arange(h, device=dev)
    cols = ox[:, None] + torch.arange(w, device=dev)
    padded = F.pad(x, (pad, pad, pad, pad))
    out = padded[torch.arange(n, device=dev)[:, None, None], :, rows[:, :, None],
                 cols[:, None, :]].permute(0, 3, 1, 2)  # [n, H, W, C] -> [n, C, H, W]
    if c != 3:
        return out + torch.randn(out.shape, generator=generator).to(dev) * 0.1 * x.std()
    out = torch.where(rand(n, 1, 1, 1) < 0.5, out.flip(-1), out)
    jitter = rand(n, 1, 1, 1) < 0.8
    b, k, s = (0.6 + 0.8 * rand(n, 1, 1, 1) for _ in range(3))
    jit = out * b  # brightness, contrast, saturation
    mean = jit.mean((1, 2, 3), keepdim=True)
    jit = (jit - mean) * k + mean
    jit = _gray(jit) + s * (jit - _gray(jit))
    out = torch.where(jitter, jit, out)
    return torch.where(rand(n, 1, 1, 1) < 0.2, _gray(out).expand_as(out), out)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def teacher_copy(module: nn.Module) -> nn.Module:
    """The frozen teacher: a copy no optimiser or gradient reaches, in train mode as the
    reference's (BatchNorm layers then use the current batch's statistics)."""
    return copy.deepcopy(module).train().requires_grad_(False)


def projector(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """The 3-layer MLP head of the contrastive loss (ReLU between, no BatchNorm)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, out_dim))


@register_method("prd")
class PRD(ContinualMethod):
    """PRD (ICML 2023): SupCon + prototypes in feature space + relation distillation."""

    distances = ("cosine", "geodesic")
    summary = "supervised contrast + prototype-sample relation distillation (replay-free)"

    job_options = ("epochs", "seed", "backbone")

    def __init__(self, backbone: str = "auto", epochs: int = 100,
                 warmup_epochs: int | None = None, batch_size: int = 128, lr: float = 0.01,
                 momentum: float = 0.9, weight_decay: float = 1e-4, prototypes_lr: float = 0.01,
                 lr_milestones: tuple[int, ...] | None = None, lr_gamma: float = 0.1,
                 supcon_temperature: float = 0.1, base_temperature: float = 0.07,
                 prototypes_coef: float = 2.0, distill_coef: float = 4.0,
                 distill_temp: float = 1.0, relation_axis: str = "classes",
                 relation_sim: str = "proj", projection_hidden: int = 512,
                 projection_dim: int = 128, index_backend: str = "auto", seed: int = 0,
                 metric: str = "cosine", metric_options: dict[str, Any] | None = None,
                 amp: bool | None = None, compile: bool | None = None,
                 channels_last: bool | None = None) -> None:
        self.backbone = backbone
        self.epochs = epochs
        self.warmup_epochs = warmup_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.prototypes_lr = prototypes_lr
        self.lr_milestones = lr_milestones
        self.lr_gamma = lr_gamma
        self.supcon_temperature = supcon_temperature
        self.base_temperature = base_temperature
        self.prototypes_coef = prototypes_coef
        self.distill_coef = distill_coef
        self.distill_temp = distill_temp
        self.relation_axis = relation_axis
        self.relation_sim = relation_sim
        self.projection_hidden = projection_hidden
        self.projection_dim = projection_dim
        self.index_backend = index_backend
        self.seed = seed
        self.metric = metric
        self.metric_options = metric_options
        self.amp, self.compile, self.channels_last = speed_options(amp, compile, channels_last)
        self.geodesic = continual_geodesic(metric, metric_options)
        self.encoder: nn.Module | None = None
        self.projector: nn.Module | None = None
        self.protos = Prototypes.from_vectors(torch.empty(0, 0))  # P [C, D]: no class yet
        self.bounds: list[int] = [0]  # class offsets of the experiences seen
        self.optimizer: torch.optim.SGD | None = None
        self.in_shape: tuple[int, ...] | None = None
        self.backbone_name = ""

    def _build(self, in_shape: tuple[int, ...]) -> nn.Module:
        if self._new_encoder(in_shape):
            self.projector = projector(self.encoder.out_dim, self.projection_hidden,
                                       self.projection_dim)
            self.prototypes = torch.empty(0, self.encoder.out_dim)
            self.bounds = [0]
            self.optimizer = torch.optim.SGD(
                [*self.encoder.parameters(), *self.projector.parameters()], lr=self.lr,
                momentum=self.momentum, weight_decay=self.weight_decay)
        return self.encoder

    def _schedule(self, first: bool) -> tuple[int, tuple[int, ...]]:
        warmup = (round(1.2 * self.epochs) if self.warmup_epochs is None
                  else self.warmup_epochs)
        milestones = (tuple(self.lr_milestones) if self.lr_milestones is not None
                      else (round(1.2 * self.epochs), round(1.6 * self.epochs)))
        return self.epochs + (warmup if first else 0), milestones

    def train_experience(self, x: Inputs, y: torch.Tensor, info: ExperienceInfo,
                         device: torch.device, progress: bool = True) -> dict[str, Any]:
        if self.relation_axis not in AXES or self.relation_sim not in SIMILARITIES:
            raise UserError(f"prd: relation_axis must be one of {AXES} and relation_sim one "
                            f"of {SIMILARITIES}")
        if isinstance(x, torch.Tensor):
            x, y = x.to(device), y.to(device)
        encoder = self._build(input_shape(x)).to(device)
        assert self.projector is not None and self.optimizer is not None
        proj = self.projector.to(device)
        _optimizer_to(self.optimizer, device)
        gen = torch.Generator().manual_seed(info.seed)
        d = encoder.out_dim
        bound = 1 / d ** 0.5  # nn.Linear's initialisation of a bias-free head
        new = (torch.rand(len(info.classes), d, generator=gen) * 2 - 1) * bound
        prototypes = nn.Parameter(torch.cat([self.prototypes, new]).to(device))
        opt_p = torch.optim.SGD([prototypes], lr=self.prototypes_lr)
        teacher = teacher_p = None
        if info.num_old:
            teacher = teacher_copy(encoder)
            teacher_p = prototypes.detach()[:info.num_old].clone()
        bounds = list(self.bounds)
        epochs, milestones = self._schedule(info.num_old == 0)
        steps = epochs * num_batches(len(y), self.batch_size)
        stats: dict[str, float] = {}
        start = time.perf_counter()
        encoder.train()
        proj.train()
        desc = f"{self.name} experience {info.index + 1}/{info.num_experiences}"
        with speed_up(encoder, TrainSpeed.of(self)) as fast, \
                training_bar(steps, desc, progress) as advance:
            for epoch in range(epochs):
                decay = self.lr_gamma ** sum(epoch >= m for m in milestones)
                for group in self.optimizer.param_groups:
                    group["lr"] = self.lr * decay
                opt_p.param_groups[0]["lr"] = self.prototypes_lr * decay
                sums = torch.zeros(3, device=device)
                for xb, yb in iterate_batches(x, y, self.batch_size, gen):
                    xb, yb = xb.to(device), yb.to(device)
                    xv = torch.cat([augment_view(xb, gen), augment_view(xb, gen)])
                    yv = torch.cat([yb, yb])
                    h = fast(xv)
                    l_sc = supcon_loss(F.normalize(proj(h), dim=1), yv,
                                       self.supcon_temperature, self.base_temperature)
                    l_p = prototype_loss(h, yv, prototypes)
                    loss = l_sc + self.prototypes_coef * l_p
                    l_d = torch.zeros((), device=device)
                    if teacher is not None and teacher_p is not None:
                        with torch.no_grad():
                            h_old = teacher(xv)
                        l_d = relation_loss(h, prototypes[:info.num_old], h_old, teacher_p,
                                            bounds, self.relation_axis, self.relation_sim,
                                            self.distill_temp)
                        loss = loss + self.distill_coef * l_d
                    self.optimizer.zero_grad(set_to_none=True)
                    opt_p.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    opt_p.step()
                    sums += torch.stack([l_sc.detach(), l_p.detach(), l_d.detach()]) * len(yb)
                    advance(**stats)
                stats = dict(zip(("supcon", "proto", "distill"), (sums / len(y)).tolist()))
        self.prototypes = prototypes.detach().cpu()
        self.bounds = bounds + [info.num_seen]
        if self.geodesic is not None:  # inference state of metric="geodesic"
            self.geodesic.update(encoder, x, y, info.classes, device)
        return {"epochs": epochs, "steps": steps, "train_samples": len(y),
                "seconds": round(time.perf_counter() - start, 2),
                **{f"{k}_last_epoch": v for k, v in stats.items()}}

    @property
    def prototypes(self) -> torch.Tensor:
        """``P [C, D]``, one per seen class: a view of :attr:`protos`, whose index is built
        once per experience (assigning a tensor wraps it in new :class:`Prototypes`)."""
        return self.protos.centres

    @prototypes.setter
    def prototypes(self, value: torch.Tensor) -> None:
        self.protos = Prototypes.from_vectors(value)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Cosine similarity minus 1 to every seen class's prototype ``[B, C]`` (through the
        cached index), or the geodesic head's scores."""
        if self.encoder is None or not len(self.prototypes):
            raise RuntimeError(f"{self.name} predicts only after train_experience")
        self.encoder.to(device).eval()
        h = self.encoder(x.to(device)).float()
        return self.protos.scores(h, self.metric, head=self.geodesic,
                                  backend=self.index_backend).cpu()

    def state_dict(self) -> dict[str, Any]:
        if self.encoder is None or self.projector is None or self.optimizer is None:
            return {}
        return {"in_shape": self.in_shape, "backbone": self.backbone_name,
                "encoder": self.encoder.state_dict(), "projector": self.projector.state_dict(),
                "prototypes": self.prototypes.clone(), "bounds": list(self.bounds),
                "optimizer": self.optimizer.state_dict(),
                **({"geodesic": self.geodesic.state_dict()} if self.geodesic else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self._build(tuple(state["in_shape"]))
        assert self.encoder is not None and self.projector is not None
        assert self.optimizer is not None
        self.encoder.load_state_dict(state["encoder"])
        self.projector.load_state_dict(state["projector"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.prototypes = state["prototypes"].clone()
        self.bounds = list(state["bounds"])
        if self.geodesic is not None:
            self.geodesic.load_state_dict(state.get("geodesic", {}))


def _optimizer_to(opt: torch.optim.Optimizer, device: torch.device) -> None:
    """Move an optimiser's state (momentum buffers) next to its parameters."""
    for state in opt.state.values():
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                state[k] = v.to(device)
