"""NAPA-VQ: neighbourhood-aware prototype augmentation with vector quantisation.

Malepathirana, Senanayake & Halgamuge, ICCV 2023 (``shared/methods/napa_vq.md``).
Every image is replicated at ``R`` = 4 rotations and relabelled ``R*y + k``; a codebook
``W [R*C, D]`` holds one coding vector (CV) per (class, rotation), row index = label, and a
graph ``E [R*C, R*C]`` links neighbouring CVs. Per step (``Z = f(rot(x))``)::

    L = DCE(Z) + L_NA(Z)                                              (phase 0)
      + 10 ||Z - f_old(Z's inputs)||_F + L_NA(A) + 10 DCE(A)          (phases t >= 1)

DCE: cross-entropy on ``-||z - w_j|| / T`` over every CV; L_NA: ``max(0, d_+ - sum_j
omega_j d_j)`` over the label CV's graph neighbours (squared distances, stop-gradient
softmin weights ``omega``), each call refreshing the graph around the samples' best
matching units; ``A``: pseudo-features on the segment from an old class's rotation-0 mean
towards a uniformly drawn graph neighbour's mean. Old CVs get a zero gradient (plain SGD:
bit-exactly frozen). Prediction: nearest rotation-0 CV in cosine geometry, the CVs held as
:class:`~protobench.geometry.Prototypes` whose cached
:class:`~protobench.geometry.PrototypeIndex` is built once per experience (not per batch);
with ``metric="geodesic"``, per-class diffusion maps score them as a strategy
(:mod:`protobench.geometry.geodesic_continual`). Class means are running ``Prototypes``
with ``M = R`` (one slot per rotation). State: encoder, codebook, graph, the per-label class
means ``mu``; nothing per sample.

Departures from the reference code (all behaviour-neutral or bug fixes):

* the augmentation draws each neighbour from the anchor's own graph row ``E[a]``; the
  reference's ``edges.numpy()[[idx]]`` returns a ``(1, B, N)`` array on numpy >= 1.23 and
  degrades the augmentation (card section 8);
* L_NA and the graph update are vectorised (bincount / scatter) instead of loops;
* class means use every sample (the reference drops the last partial batch) of the
  experience's tensors as given (any input augmentation is the dataset's business);
* the frozen previous network is a copy of the encoder made at the start of each phase
  (identical to the reference's copy at the end of the previous one), so checkpoints
  hold the encoder once; the unused linear head is dropped;
* inputs that are not square images cannot be rotated by 90 degrees: the rotation label
  augmentation is then off (``R = 1``, the card's section-7 setting for vectors);
* torch is seeded per experience (the reference seeds only numpy), so runs reproduce.

Presets (``napa-vq.yaml``): the defaults are the card's CIFAR recipe. On ``digits`` (2
classes, ~230 images per experience: 4 steps of 64) that recipe leaves every new class at
0% right after its experience, so the ``digits`` preset, chosen on validation streams by
``benchmarks/select_presets.py``, trains at batch 16 with ``kd_weight=0.1`` (the card's
L_KD is an unnormalised Frobenius norm whose weight the card notes depends on the batch),
``protoaug_weight=1`` and ``temperature=0.5`` on 8x8 inputs.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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

EXACT = "donot_use_mm_for_euclid_dist"  # exact distances (also exactly 0 at z = w)


def rotate(x: torch.Tensor, y: torch.Tensor, rotations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, C, H, W]`` -> ``[R*B, ...]`` rotated by ``k*90`` degrees, labels ``R*y + k``
    (interleaved: the ``R`` rotations of image ``i`` are rows ``R*i .. R*i+R-1``)."""
    if rotations == 1:
        return x, y
    xs = torch.stack([torch.rot90(x, k, (-2, -1)) for k in range(rotations)], 1)
    ys = torch.stack([y * rotations + k for k in range(rotations)], 1)
    return xs.flatten(0, 1), ys.flatten()


def dce_logits(z: torch.Tensor, w: torch.Tensor, temperature: float) -> torch.Tensor:
    """Distance-based logits ``[B, M]`` = ``-||z_i - w_j||_2 / T`` (not squared)."""
    return -torch.cdist(z, w, compute_mode=EXACT) / temperature


def update_graph(x: torch.Tensor, w: torch.Tensor, edges: torch.Tensor, k: int = 15,
                 decay: float = 0.9, e_min: float = 0.9 ** 10) -> torch.Tensor:
    """Competitive-Hebbian refresh of ``edges [M, M]`` around the rows ``x [B, D]``.

    BMU ``b_i`` and the ``k`` nearest CVs ``K_i`` of each row; ``n_j`` rows with BMU ``j``,
    ``r_jl`` of them with ``l`` in ``K_i``: ``E_jl <- max(E_jl, [r_jl > 0]) *
    decay^max(0, n_j - r_jl)``, then entries below ``e_min`` are cut. Returns the new,
    not yet symmetric graph (the loss reads it before :func:`symmetrise`).
    """
    m = len(w)
    with torch.no_grad():
        knn = torch.cdist(x, w, compute_mode=EXACT).topk(min(k, m), 1, largest=False).indices
        bmu = knn[:, 0]
        hits = torch.bincount(bmu, minlength=m).to(edges)
        pairs = (bmu[:, None] * m + knn).flatten()
        r = torch.bincount(pairs, minlength=m * m).view(m, m).to(edges)
        new = torch.maximum(edges, (r > 0).to(edges))
        new = new * decay ** (hits[:, None] - r).clamp(min=0)
        return torch.where(new < e_min, torch.zeros_like(new), new)


def feature_distillation(z: torch.Tensor, z_old: torch.Tensor) -> torch.Tensor:
    """``||Z_t - Z_{t-1}||_F`` over the whole ``[R*B, D]`` batch (not squared, not averaged)."""
    return torch.linalg.norm(z - z_old)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` in eval mode that no optimiser or gradient reaches."""
    return copy.deepcopy(module).eval().requires_grad_(False)


def symmetrise(edges: torch.Tensor) -> torch.Tensor:
    return (edges + edges.T) / 2


def na_loss(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, edges: torch.Tensor,
            beta: float = 1e-3) -> torch.Tensor:
    """Neighbour-aware VQ loss: mean of ``max(0, d_+ - sum_{j in N(y)} omega_j d_j)``.

    ``d`` squared euclidean, ``N(y) = {j != y : E_yj > 0}`` (the label CV's row),
    ``omega = softmin(beta d)`` over ``N(y)`` without gradient; empty ``N(y)`` -> ``d_+``.
    """
    d_pos = (x - w[y]).pow(2).sum(1)
    d = torch.cdist(x, w, compute_mode=EXACT).pow(2)
    mask = edges[y] > 0
    mask[torch.arange(len(y), device=y.device), y] = False
    logits = (-beta * d.detach()).masked_fill(~mask, float("-inf"))
    omega = torch.softmax(logits, 1).nan_to_num(0.0)  # rows without neighbours -> 0
    return F.relu(d_pos - (omega * d).sum(1)).mean()


def augment_prototypes(means: torch.Tensor, edges: torch.Tensor, num_old: int, n: int,
                       rotations: int, generator: torch.Generator
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Neighbourhood-aware prototype augmentation: ``(A [n, D], anchors, neighbours, gamma)``.

    Old class ``c ~ U{0..num_old-1}``, anchor label ``a = R*c``, neighbour ``m`` uniform over
    ``{l : E_al > 0}`` (its own row, the anchor included), ``gamma ~ U(0.5, 1)``,
    ``A = gamma mu[a] + (1 - gamma) mu[m]``. Random draws come from ``generator`` (CPU).
    """
    c = torch.randint(num_old, (n,), generator=generator)
    anchors = c * rotations
    rows = (edges.detach().cpu()[anchors] > 0).float()  # [n, M]: one row per anchor
    neighbours = torch.multinomial(rows, 1, generator=generator).squeeze(1)
    gamma = 0.5 + 0.5 * torch.rand(n, generator=generator)
    dev = means.device
    anchors, neighbours, g = anchors.to(dev), neighbours.to(dev), gamma.to(means)[:, None]
    return g * means[anchors] + (1 - g) * means[neighbours], anchors, neighbours, gamma


@register_method("napa-vq")
class NapaVQ(ContinualMethod):
    """NAPA-VQ (ICCV 2023): rotation labels, CV codebook + graph, NA-PA, feature KD."""

    distances = ("cosine", "geodesic")
    summary = "neighbourhood-aware prototype augmentation + vector quantisation (exemplar-free)"

    job_options = ("epochs", "seed", "backbone")

    def __init__(self, backbone: str = "auto", epochs: int = 100, batch_size: int = 64,
                 lr: float = 1e-3, lr_incremental: float = 1e-4, weight_decay: float = 2e-4,
                 lr_step: int = 45, codebook_lr: float = 5.0,
                 codebook_lr_incremental: float = 0.5, codebook_lr_step: int = 20,
                 lr_gamma: float = 0.1, temperature: float = 0.1, protoaug_weight: float = 10.0,
                 kd_weight: float = 10.0, neighbours: int = 15, edge_decay: float = 0.9,
                 edge_min: float = 0.9 ** 10, beta: float = 1e-3, rotations: int = 4,
                 index_backend: str = "auto", seed: int = 0, metric: str = "cosine",
                 metric_options: dict[str, Any] | None = None,
                 amp: bool | None = None, compile: bool | None = None,
                 channels_last: bool | None = None) -> None:
        self.backbone = backbone
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_incremental = lr_incremental
        self.weight_decay = weight_decay
        self.lr_step = lr_step
        self.codebook_lr = codebook_lr
        self.codebook_lr_incremental = codebook_lr_incremental
        self.codebook_lr_step = codebook_lr_step
        self.lr_gamma = lr_gamma
        self.temperature = temperature
        self.protoaug_weight = protoaug_weight
        self.kd_weight = kd_weight
        self.neighbours = neighbours
        self.edge_decay = edge_decay
        self.edge_min = edge_min
        self.beta = beta
        self.rotations = rotations
        self.index_backend = index_backend
        self.seed = seed
        self.metric = metric
        self.metric_options = metric_options
        self.amp, self.compile, self.channels_last = speed_options(amp, compile, channels_last)
        self.geodesic = continual_geodesic(metric, metric_options)
        self.encoder: nn.Module | None = None
        self.codebook = torch.empty(0)  # W [R*C, D]
        self.edges = torch.empty(0, 0)  # E [R*C, R*C]
        self.means = torch.empty(0)  # mu [R*C, D]
        self.in_shape: tuple[int, ...] | None = None
        self.backbone_name = ""
        self.rot = rotations  # effective R (1 for inputs that cannot be rotated)
        self._held: tuple[torch.Tensor, int, Prototypes] | None = None  # class_prototypes()

    def _build(self, in_shape: tuple[int, ...]) -> nn.Module:
        if self._new_encoder(in_shape):
            square = len(in_shape) == 3 and in_shape[1] == in_shape[2]
            self.rot = self.rotations if square else 1
            d = self.encoder.out_dim
            self.codebook, self.means = torch.empty(0, d), torch.empty(0, d)
            self.edges = torch.empty(0, 0)
        return self.encoder

    def _grow(self, num_new: int, generator: torch.Generator) -> None:
        """Append ``R*num_new`` CVs ~ N(0, I) and grow the graph (new block 0, diagonal 1)."""
        add = self.rot * num_new
        m, d = self.codebook.shape
        self.codebook = torch.cat([self.codebook, torch.randn(add, d, generator=generator)])
        edges = torch.eye(m + add)
        edges[:m, :m] = self.edges
        self.edges = edges
        self.means = torch.cat([self.means, torch.zeros(add, d)])

    @torch.no_grad()
    def _class_means(self, x: Inputs, y: torch.Tensor, info: ExperienceInfo,
                     device: torch.device) -> None:
        """``mu[R*c + k]`` = mean eval-mode feature of class ``c`` rotated ``k`` times: running
        :class:`Prototypes` of the new classes with one slot per rotation (``[C_new, R, D]``)."""
        assert self.encoder is not None
        was = self.encoder.training
        self.encoder.eval()
        acc = Prototypes.empty(torch.tensor(info.classes), self.encoder.out_dim, self.rot,
                               device=device)
        for xb, yb in iterate_batches(x, y, 512, torch.Generator(), shuffle=False):
            xr, yr = rotate(xb.to(device), yb.to(device), self.rot)
            acc.update(self.encoder(xr), yr // self.rot, slots=yr % self.rot)
        self.means[self.rot * info.num_old:self.rot * info.num_seen] = \
            acc.vectors.flatten(0, 1).cpu()
        self.encoder.train(was)

    def train_experience(self, x: Inputs, y: torch.Tensor, info: ExperienceInfo,
                         device: torch.device, progress: bool = True) -> dict[str, Any]:
        if isinstance(x, torch.Tensor):
            x, y = x.to(device), y.to(device)
        encoder = self._build(input_shape(x)).to(device)
        gen = torch.Generator().manual_seed(info.seed)
        incremental = info.num_old > 0
        self._grow(len(info.classes), gen)
        old = None
        if incremental:
            old = frozen_copy(encoder)
            self._class_means(x, y, info, device)  # provisional new-class means
        codebook = nn.Parameter(self.codebook.to(device))
        edges, means = self.edges.to(device), self.means.to(device)
        frozen = self.rot * info.num_old  # CV rows 0..frozen-1 belong to old classes
        opt_f = torch.optim.Adam(encoder.parameters(), weight_decay=self.weight_decay,
                                 lr=self.lr_incremental if incremental else self.lr)
        opt_w = torch.optim.SGD([codebook], momentum=0.0, weight_decay=0.0,
                                lr=self.codebook_lr_incremental if incremental
                                else self.codebook_lr)
        sched_f = torch.optim.lr_scheduler.StepLR(opt_f, self.lr_step, self.lr_gamma)
        sched_w = torch.optim.lr_scheduler.StepLR(opt_w, self.codebook_lr_step, self.lr_gamma)
        graph = {"k": self.neighbours, "decay": self.edge_decay, "e_min": self.edge_min}
        steps = self.epochs * num_batches(len(y), self.batch_size)
        stats: dict[str, float] = {}
        start = time.perf_counter()
        encoder.train()
        desc = f"{self.name} experience {info.index + 1}/{info.num_experiences}"
        with speed_up(encoder, TrainSpeed.of(self)) as fast, \
                training_bar(steps, desc, progress) as advance:
            for _ in range(self.epochs):
                loss_sum = torch.zeros((), device=device)
                correct = torch.zeros((), device=device)
                rows = 0
                for xb, yb in iterate_batches(x, y, self.batch_size, gen):
                    xr, yr = rotate(xb.to(device), yb.to(device), self.rot)
                    if len(yr) < 2:  # BatchNorm needs two rows
                        advance(**stats)
                        continue
                    z = fast(xr)
                    logits = dce_logits(z, codebook, self.temperature)
                    loss = F.cross_entropy(logits, yr)
                    edges = update_graph(z.detach(), codebook.detach(), edges, **graph)
                    loss = loss + na_loss(z, yr, codebook, edges, self.beta)
                    edges = symmetrise(edges)
                    if old is not None:
                        with torch.no_grad():
                            z_old = old(xr)
                        loss = loss + self.kd_weight * feature_distillation(z, z_old)
                        a, ya, _, _ = augment_prototypes(means, edges, info.num_old,
                                                         self.batch_size, self.rot, gen)
                        edges = update_graph(a, codebook.detach(), edges, **graph)
                        loss = loss + na_loss(a, ya, codebook, edges, self.beta)
                        edges = symmetrise(edges)
                        loss = loss + self.protoaug_weight * F.cross_entropy(
                            dce_logits(a, codebook, self.temperature), ya)
                    opt_f.zero_grad(set_to_none=True)
                    opt_w.zero_grad(set_to_none=True)
                    loss.backward()
                    if frozen and codebook.grad is not None:
                        codebook.grad[:frozen] = 0  # old CVs stay bit-exactly constant
                    opt_f.step()
                    opt_w.step()
                    loss_sum += loss.detach() * len(yr)
                    correct += (logits.argmax(1) == yr).sum()
                    rows += len(yr)
                    advance(**stats)
                sched_f.step()
                sched_w.step()
                stats = {"loss": loss_sum.item() / max(rows, 1),
                         "acc": correct.item() / max(rows, 1)}
        self.codebook, self.edges = codebook.detach().cpu(), edges.cpu()
        self._class_means(x, y, info, device)  # final means of this phase's labels
        if self.geodesic is not None:  # inference state of metric="geodesic"
            self.geodesic.update(self.encoder, x, y, info.classes, device)
        return {"epochs": self.epochs, "steps": steps, "train_samples": len(y),
                "rotations": self.rot, "codebook_size": len(self.codebook),
                "graph_edges": int((self.edges > 0).sum()) - len(self.edges),
                "seconds": round(time.perf_counter() - start, 2),
                **{f"{k}_last_epoch": v for k, v in stats.items()}}

    def class_vectors(self) -> torch.Tensor:
        """The rotation-0 CV of every seen class ``[C, D]`` (what prediction compares)."""
        return self.codebook[::self.rot]

    def class_prototypes(self) -> Prototypes:
        """:meth:`class_vectors` as :class:`Prototypes`, held until the codebook is replaced,
        so its index is built once per experience (in-place edits of the codebook reach the
        index cache through the tensor's version counter)."""
        held = self._held
        if held is None or held[0] is not self.codebook or held[1] != self.rot:
            held = self._held = (self.codebook, self.rot,
                                 Prototypes.from_vectors(self.class_vectors()))
        return held[2]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Cosine similarity minus 1 to each class's rotation-0 CV ``[B, C]`` (argmax =
        nearest CV after L2 normalisation of features and CVs), or the geodesic head's."""
        if self.encoder is None or not len(self.codebook):
            raise RuntimeError(f"{self.name} predicts only after train_experience")
        self.encoder.to(device).eval()
        z = self.encoder(x.to(device)).float()
        return self.class_prototypes().scores(z, self.metric, head=self.geodesic,
                                              backend=self.index_backend).cpu()

    def state_dict(self) -> dict[str, Any]:
        if self.encoder is None:
            return {}
        return {"in_shape": self.in_shape, "backbone": self.backbone_name, "rotations": self.rot,
                "encoder": self.encoder.state_dict(), "codebook": self.codebook.clone(),
                "edges": self.edges.clone(), "means": self.means.clone(),
                **({"geodesic": self.geodesic.state_dict()} if self.geodesic else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        encoder = self._build(tuple(state["in_shape"]))
        encoder.load_state_dict(state["encoder"])
        self.rot = int(state["rotations"])
        self.codebook = state["codebook"].clone()
        self.edges = state["edges"].clone()
        self.means = state["means"].clone()
        if self.geodesic is not None:
            self.geodesic.load_state_dict(state.get("geodesic", {}))
