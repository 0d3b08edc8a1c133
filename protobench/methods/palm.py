"""PALM: learning with a mixture of prototypes for OOD detection.

Lu et al., ICLR 2024 (card ``shared/methods/palm.md``; reference ``jeff024/PALM``).
Encoder ``f`` and projector ``g`` (Linear-ReLU-Linear), ``z = normalize(g(f(x)))`` of two
augmented views; ``M`` prototypes per class in a buffer updated by EMA from a Sinkhorn
soft assignment with class mask and top-k (:mod:`protobench.methods.palm_loss`;
``class_prototypes`` views the buffer as :class:`~protobench.geometry.Prototypes`);
``L = L_MLE + lambda L_pc`` in the code's form. No classifier head: at test time the
penultimate features ``h = f(x)`` (before the projector) go to a feature score; the paper
reports the SSD+ score (``default_score = "ssd"``).

Presets (``preset="auto"`` picks by input shape; every value can be overridden):

* ``paper`` (images of 32x32 and more): ResNet-34 (CIFAR stem), head 512-512-128, M 6,
  k 5, alpha 0.999, batch 512, 500 epochs, SGD lr 0.5 Nesterov momentum 0.9, weight
  decay 1e-6, the card's crop/flip/jitter/grayscale views;
* ``toy`` (vectors and smaller images, card section 8): MLP 64-128-64 (Conv-4 from 16x16
  up), head ``d-d-16``, M 3, k 2, alpha 0.99, batch 64, 20 epochs, lr 0.05, views = 1-pixel
  shifts + Gaussian noise (std 0.1 after normalisation).

Common: tau 0.1, tau_p 0.5, lambda 1, Sinkhorn epsilon 0.05 with 3 iterations, 2 views.
The learning rate warms up linearly from 0 over ``warmup_epochs`` (default
``min(10, epochs // 10)``: the card's 10 epochs of 500) and then follows a cosine down to
``lr / 1000`` at the last step, set every step. Inputs are normalised with per-channel
mean and std of the ID training set (the card's CIFAR constants are those statistics),
also at test time. Checkpoint selection (``select="best-loss"``, as the code's ``main.py``):
the weights of the epoch with the lowest mean training loss are kept, not the last
epoch's; ``select="last"`` keeps the last.

``labelled=False`` is **PALM-unlabelled (reconstruction)** (card section 7; in no released
code): no sample label is read, the class mask is all ones, top-k runs over all
``num_prototypes`` prototypes (default ``M x`` the class count), and ``L_pc`` treats every
prototype as its own class (``unlabelled_pc="self"``) or is off (``"off"``).

Departures: the reference sets the step's learning rate after the optimiser step (its
first step runs at the full rate, then each step uses the previous step's value) and
skips it on steps where the AMP loss scale fell; here step ``t`` uses ``lr(t)``.
``amp=True`` runs encoder and head under bfloat16 autocast (the reference: float16 with a
GradScaler); prototypes and losses stay float32. Off by default.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from protobench.backbones import build_backbone, default_backbone
from protobench.datasets.base import LabeledData
from protobench.errors import UserError, check_input_shape
from protobench.geometry.prototypes import Prototypes
from protobench.methods.base import register_method
from protobench.methods.palm_augment import paper_view, shift_noise_view
from protobench.methods.palm_loss import PALMCriterion
from protobench.methods.protocols import OODMethod
from protobench.progress import training_bar

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"backbone": "resnet34", "epochs": 500, "batch_size": 512, "lr": 0.5,
              "prototypes_per_class": 6, "top_k": 5, "alpha": 0.999, "projection_dim": 128,
              "augment": "paper"},
    "toy": {"backbone": "auto", "epochs": 20, "batch_size": 64, "lr": 0.05,
            "prototypes_per_class": 3, "top_k": 2, "alpha": 0.99, "projection_dim": 16,
            "augment": "shift-noise"},
}
OVERRIDABLE = tuple(PRESETS["paper"])
VARIANTS = {True: "PALM", False: "PALM-unlabelled (reconstruction)"}


def preset_for(in_shape: tuple[int, ...]) -> str:
    """``paper`` for images of at least 32x32, ``toy`` otherwise."""
    return "paper" if len(in_shape) == 3 and min(in_shape[1:]) >= 32 else "toy"


def palm_lr(step: int, total: int, warmup: int, base_lr: float) -> float:
    """Linear warm-up ``0 -> base_lr`` over ``warmup`` steps, then cosine to ``base_lr/1000``
    at step ``total`` (the reference's ``adjust_learning_rate``)."""
    if step < warmup:
        return base_lr * step / warmup
    q = 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    return base_lr * q + base_lr * 1e-3 * (1 - q)


def projection_head(dim: int, out_dim: int) -> nn.Sequential:
    """Linear(d, d) - ReLU - Linear(d, out_dim), as the reference's ``mlp`` head."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out_dim))


@register_method("palm")
class PALM(OODMethod):
    """PALM (ICLR 2024): mixture of prototypes per class, MLE + prototype contrast."""

    has_classifier = False
    default_score = "ssd"
    summary = "PALM (Lu et al. 2024): mixture of prototypes, Sinkhorn + EMA, SSD+ score"

    job_options = ("epochs", "seed", "backbone")

    def __init__(self, backbone: str | None = None, preset: str = "auto", labelled: bool = True,
                 epochs: int | None = None, batch_size: int | None = None,
                 lr: float | None = None, momentum: float = 0.9, weight_decay: float = 1e-6,
                 warmup_epochs: int | None = None, prototypes_per_class: int | None = None,
                 top_k: int | None = None, alpha: float | None = None,
                 temperature: float = 0.1, proto_temperature: float = 0.5,
                 proto_weight: float = 1.0, epsilon: float = 0.05, sinkhorn_iterations: int = 3,
                 views: int = 2, projection_dim: int | None = None, augment: str | None = None,
                 num_prototypes: int | None = None, unlabelled_pc: str = "self",
                 select: str = "best-loss", amp: bool = False, seed: int = 0) -> None:
        self.backbone = backbone
        self.preset = preset
        self.labelled = labelled
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.prototypes_per_class = prototypes_per_class
        self.top_k = top_k
        self.alpha = alpha
        self.temperature = temperature
        self.proto_temperature = proto_temperature
        self.proto_weight = proto_weight
        self.epsilon = epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.views = views
        self.projection_dim = projection_dim
        self.augment = augment
        self.num_prototypes = num_prototypes
        self.unlabelled_pc = unlabelled_pc
        self.select = select
        self.amp = amp
        self.seed = seed
        self.encoder: nn.Module | None = None
        self.head: nn.Module | None = None
        self.criterion: PALMCriterion | None = None
        self.config_: dict[str, Any] = {}
        self.input_mean = self.input_std = torch.empty(0)

    def config(self, in_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
        """The resolved configuration for inputs ``in_shape`` and ``num_classes`` classes."""
        preset = preset_for(in_shape) if self.preset == "auto" else self.preset
        if preset not in PRESETS:
            raise UserError(f"palm: unknown preset {self.preset!r}; choose auto, paper or toy")
        if self.select not in ("best-loss", "last") or self.unlabelled_pc not in ("self", "off"):
            raise UserError("palm: select must be best-loss or last, unlabelled_pc self or off")
        cfg = {k: PRESETS[preset][k] if getattr(self, k) is None else getattr(self, k)
               for k in OVERRIDABLE}
        if cfg["backbone"] == "auto":
            cfg["backbone"] = "resnet34" if preset_for(in_shape) == "paper" else default_backbone(
                in_shape)
        if cfg["augment"] not in ("paper", "shift-noise", "none"):
            raise UserError(f"palm: unknown augment {cfg['augment']!r}; choose paper, "
                            "shift-noise or none")
        if cfg["augment"] == "paper" and len(in_shape) != 3:
            raise UserError("palm: augment='paper' needs images [C, H, W]; use shift-noise")
        warmup = (min(10, cfg["epochs"] // 10) if self.warmup_epochs is None
                  else self.warmup_epochs)
        per_class = cfg["prototypes_per_class"]
        total = per_class * num_classes if self.num_prototypes is None else self.num_prototypes
        return {**cfg, "preset": preset, "variant": VARIANTS[bool(self.labelled)],
                "warmup_epochs": warmup, "num_classes": num_classes,
                "num_prototypes": per_class * num_classes if self.labelled else total,
                "unlabelled_pc": None if self.labelled else self.unlabelled_pc,
                "in_shape": list(in_shape)}

    def _build(self, cfg: dict[str, Any]) -> None:
        torch.manual_seed(self.seed)  # reproducible default init
        in_shape = tuple(cfg["in_shape"])
        kw = {"hidden": 128, "out_dim": 64} if cfg["backbone"] == "mlp" else {}
        self.encoder = build_backbone(cfg["backbone"], in_shape, **kw)
        dim = self.encoder.out_dim
        self.head = projection_head(dim, cfg["projection_dim"])
        gen = torch.Generator().manual_seed(self.seed)
        if self.labelled:
            classes, per_class = cfg["num_classes"], cfg["prototypes_per_class"]
        else:  # every prototype its own class; no class mask
            classes, per_class = cfg["num_prototypes"], 1
        self.criterion = PALMCriterion(
            classes, per_class, cfg["projection_dim"], cfg["top_k"], cfg["alpha"],
            self.temperature, self.proto_temperature,
            0.0 if (not self.labelled and self.unlabelled_pc == "off") else self.proto_weight,
            self.epsilon, self.sinkhorn_iterations, self.labelled, gen)
        self.config_ = cfg

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return normalise_inputs(x, self.input_mean, self.input_std)

    def _views(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        aug = self.config_["augment"]
        out = []
        for _ in range(self.views):
            if aug == "paper":
                out.append(self._normalise(paper_view(x, gen)))
            elif aug == "shift-noise":
                out.append(shift_noise_view(self._normalise(x), gen, shift=1, noise_std=0.1))
            else:
                out.append(self._normalise(x))
        return torch.cat(out)

    def fit(self, train: LabeledData, device: torch.device, epochs: int | None = None,
            progress: bool = True) -> dict[str, Any]:
        in_shape = tuple(train.get(torch.tensor([0])).shape[1:])
        cfg = self.config(in_shape, train.num_classes)
        if epochs is not None:
            cfg["epochs"] = int(epochs)
            if self.warmup_epochs is None:
                cfg["warmup_epochs"] = min(10, cfg["epochs"] // 10)
        self._build(cfg)
        assert self.encoder is not None and self.head is not None and self.criterion is not None
        self.input_mean, self.input_std = input_statistics(train)
        encoder, head, crit = self.encoder.to(device), self.head.to(device), self.criterion
        crit.to(device)
        opt = torch.optim.SGD([*encoder.parameters(), *head.parameters()], lr=cfg["lr"],
                              momentum=self.momentum, nesterov=True,
                              weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        n, bs = len(train), cfg["batch_size"]
        per_epoch = -(-n // bs)
        total, warmup = cfg["epochs"] * per_epoch, cfg["warmup_epochs"] * per_epoch
        curve: list[dict[str, float]] = []
        best, best_loss, best_epoch = None, math.inf, -1
        start, step = time.perf_counter(), 0
        encoder.train()
        head.train()
        with training_bar(total, f"palm {cfg['variant']}", progress) as advance:
            for epoch in range(cfg["epochs"]):
                sums = torch.zeros(3, device=device)
                order = torch.randperm(n, generator=gen)
                for lo in range(0, n, bs):
                    idx = order[lo:lo + bs]
                    x = train.get(idx).to(device)
                    y = train.labels[idx].to(device) if self.labelled else None
                    for group in opt.param_groups:
                        group["lr"] = palm_lr(step, total, warmup, cfg["lr"])
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp):
                        z = F.normalize(head(encoder(self._views(x, gen))).float(), dim=1)
                    loss, parts = crit(z, None if y is None else y.repeat(self.views))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step += 1
                    sums += torch.stack([loss.detach(), parts["mle"], parts["pc"]]) * len(idx)
                    advance(loss=loss.item())
                mean = (sums / n).tolist()
                curve.append(dict(zip(("loss", "mle", "pc"), mean)))
                if self.select == "best-loss" and mean[0] < best_loss:
                    best_loss, best_epoch, best = mean[0], epoch, copy.deepcopy(self._weights())
        if best is not None:
            self._load_weights(best)
        else:
            best_epoch = cfg["epochs"] - 1
        return {"variant": cfg["variant"], "config": cfg, "epochs": cfg["epochs"],
                "steps": step, "kept_epoch": best_epoch,
                "train_seconds": round(time.perf_counter() - start, 3),
                "loss_curve": [round(c["loss"], 6) for c in curve],
                "mle_curve": [round(c["mle"], 6) for c in curve],
                "pc_curve": [round(c["pc"], 6) for c in curve]}

    def _weights(self) -> dict[str, Any]:
        assert self.encoder is not None and self.head is not None and self.criterion is not None
        return {"encoder": self.encoder.state_dict(), "head": self.head.state_dict(),
                "criterion": self.criterion.state_dict()}

    def _load_weights(self, weights: dict[str, Any]) -> None:
        assert self.encoder is not None and self.head is not None and self.criterion is not None
        self.encoder.load_state_dict(weights["encoder"])
        self.head.load_state_dict(weights["head"])
        self.criterion.load_state_dict(weights["criterion"])

    @torch.no_grad()
    def features(self, x: torch.Tensor, device: torch.device,
                 batch_size: int = 512) -> torch.Tensor:
        """Penultimate features ``h = f(x)`` ``[B, D]`` (before the projector), CPU float32."""
        return encoder_features("palm", self.encoder, self.config_, self._normalise, x,
                                device, batch_size)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Projected unit embeddings ``z [B, d]`` (the space of the prototypes)."""
        h = self.features(x, device)
        assert self.head is not None
        return F.normalize(self.head.cpu().eval()(h), dim=1)

    @property
    def prototypes(self) -> torch.Tensor:
        """``[K, d]`` unit prototypes; row ``j`` belongs to class ``j mod C`` (labelled)."""
        if self.criterion is None:
            raise UserError("palm: no trained model; run fit or load a checkpoint first")
        return self.criterion.protos.detach().cpu()

    @property
    def class_prototypes(self) -> Prototypes:
        """The mixture as :class:`Prototypes` ``[C, M, d]`` (``vectors[c, m]`` = row ``m*C + c``
        of :attr:`prototypes`; unlabelled: ``[K, 1, d]``), scored in the projected space
        (:meth:`embed`) as the max over each class's ``M`` prototypes."""
        protos = self.prototypes  # a UserError when untrained
        assert self.criterion is not None
        c, m = self.criterion.num_classes, self.criterion.per_class
        return Prototypes.from_vectors(protos.view(m, c, -1).transpose(0, 1))

    def state_dict(self) -> dict[str, Any]:
        if self.encoder is None:
            return {}
        return {"config": dict(self.config_), "input_mean": self.input_mean.clone(),
                "input_std": self.input_std.clone(),
                **{k: {n: t.detach().cpu().clone() for n, t in v.items()}
                   for k, v in self._weights().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self._build(dict(state["config"]))
        self._load_weights(state)
        self.input_mean, self.input_std = state["input_mean"].clone(), state["input_std"].clone()


def normalise_inputs(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` per channel of images ``[B, C, H, W]`` (one scalar otherwise)."""
    shape = (1, -1) + (1,) * (x.dim() - 2) if x.dim() == 4 else (1,) * x.dim()
    return (x - mean.to(x.device).view(shape)) / std.to(x.device).view(shape)


@torch.no_grad()
def encoder_features(name: str, encoder: nn.Module | None, config: dict[str, Any],
                     normalise: Any, x: torch.Tensor, device: torch.device,
                     batch_size: int = 512) -> torch.Tensor:
    """``encoder(normalise(x))`` ``[B, D]`` in eval mode, batch by batch, CPU float32."""
    if encoder is None:
        raise UserError(f"{name}: no trained model; run fit or load a checkpoint first")
    check_input_shape(name, config["in_shape"], x.shape[1:])
    encoder = encoder.to(device).eval()
    out = [encoder(normalise(x[lo:lo + batch_size].to(device))).float().cpu()
           for lo in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, encoder.out_dim)


@torch.no_grad()
def input_statistics(data: LabeledData, batch_size: int = 1024
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (ddof 0) ``([C], [C])`` of images ``[n, C, H, W]``; one
    scalar each (``[1]``) for other shapes. A zero std becomes 1."""
    total = sq = None
    count = 0
    for lo in range(0, len(data), batch_size):
        x = data.get(torch.arange(lo, min(len(data), lo + batch_size))).double()
        dims = (0, 2, 3) if x.dim() == 4 else tuple(range(x.dim()))
        s, s2 = x.sum(dims), (x * x).sum(dims)
        total, sq = (s, s2) if total is None else (total + s, sq + s2)
        count += x.numel() // s.numel()
    assert total is not None and sq is not None
    mean = total / count
    std = (sq / count - mean * mean).clamp(min=0).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.float().reshape(-1), std.float().reshape(-1)
