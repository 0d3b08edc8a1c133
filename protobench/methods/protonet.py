"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017).

Prototype ``c_k = mean_{x in S_k} f(x)`` (Eq. 1); ``p(y=k|x) = softmax_k(-d(f(x), c_k))``
with ``d`` the squared euclidean distance, no temperature (Eq. 2); loss = mean
cross-entropy over the ``N*Q`` queries of an episode. Support and query go through the
encoder as one batch (episode-level BatchNorm statistics in training; eval mode at test).

Defaults follow the card (``shared/methods/protonet.md``): Conv-4 encoder, Adam lr 1e-3,
no weight decay, learning rate halved every 2000 episodes
(``lr(e) = 1e-3 * 0.5 ** floor(e / 2000)``, the learn2learn/orobix schedule; the official
code halves 100 episodes earlier), training episodes 60-way with the test shot and
5 queries per class.

Option ``amp=True`` trains the encoder under bfloat16 autocast (about 1.7x faster on
CPUs with AVX-512 BF16); distances and loss stay float32 and evaluation features are
always float32. Off by default, as the card trains in float32. ``compile=True``
(``torch.compile``) and ``channels_last=True`` apply to the training loop only, through
:func:`protobench.backbones.speed_up`; off by default (``None``, left out of a row's
identity). Measured (``benchmarks/results/training_speed.md``, 60-way 1-shot on a 2-core
CPU): amp 1.5x, channels_last 1.2x, both 2.1x, compile 1.07x; only compile is float32-exact,
so the card's float32 loop stays the default.

Prototypes and logits are :class:`~protobench.geometry.Prototypes` (``from_support``,
``scores``). ``metric="geodesic"`` (GeoProto-style, :mod:`protobench.geometry.geodesic`,
options in ``metric_options``): the head scores the support prototypes in diffusion
coordinates; in geo_pool mode the landmark map is refitted from the meta-train split every
``refresh`` episodes (detached) and the loss back-propagates through the Nyström extension
into the encoder.

Departures: no validation-based early stopping or trainval retraining (training length
is ``--train-steps``); when the meta-train split has fewer classes than ``train_ways``
the episodes use every class (e.g. 5 on ``digits``), recorded in the run statistics.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
import torch.nn.functional as F

from protobench.backbones import (
    TrainSpeed,
    build_backbone,
    extract_features,
    speed_option,
    speed_up,
)
from protobench.datasets.base import ClassSet, LabeledData
from protobench.episodic.sampler import EpisodeSpec, episode_labels, sample_episodes
from protobench.errors import check_input_shape
from protobench.feature_cache import weights_hash
from protobench.geometry.geodesic import GeodesicHead, check_metric_options, refresh_pool
from protobench.geometry.prototypes import Prototypes
from protobench.methods.base import FewShotMethod, register_method
from protobench.progress import training_bar
from protobench.utils import sha256_json


def lr_at(episode: int, lr: float = 1e-3, every: int = 2000, gamma: float = 0.5) -> float:
    """The card's step schedule: ``lr * gamma ** floor(episode / every)``."""
    return lr * gamma ** (episode // every)


def prototypes(z_support: torch.Tensor) -> torch.Tensor:
    """``[..., N, K, D]`` -> ``[..., N, D]`` class means (Eq. 1)."""
    return Prototypes.from_support(z_support).centres


def proto_logits(z_query: torch.Tensor, protos: torch.Tensor, metric: str = "sqeuclidean",
                 temperature: float = 1.0) -> torch.Tensor:
    """``[M, D]`` x ``[N, D]`` -> logits ``[M, N]`` = ``-d(z, c) / temperature``."""
    return Prototypes.from_vectors(protos).scores(z_query, metric) / temperature


def episode_loss(encoder: torch.nn.Module, x: torch.Tensor, ways: int, shots: int,
                 metric: str = "sqeuclidean", temperature: float = 1.0, amp: bool = False,
                 head: GeodesicHead | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [N, K+Q, ...]`` (class-major, supports first) -> (loss, accuracy).

    ``amp``: the encoder runs under bfloat16 autocast; prototypes, distances and the loss
    stay in float32. ``head``: geodesic logits (``metric="geodesic"``), differentiable
    through the Nyström extension into the encoder.
    """
    per_class = x.shape[1]
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        z = encoder(x.flatten(0, 1))
    z = (z.float() if amp else z).view(ways, per_class, -1)
    zq = z[:, shots:].flatten(0, 1)
    logits = Prototypes.from_support(z[:, :shots]).scores(zq, metric, head=head)
    if head is not None:
        logits = logits.float()  # the head's float64 diffusion-coordinate scores
    logits = logits / temperature
    y = episode_labels(ways, per_class - shots, x.device)
    return F.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()


@register_method("protonet")
class ProtoNet(FewShotMethod):
    """Episodically trained encoder + nearest class mean under ``metric``."""

    distances = ("sqeuclidean", "euclidean", "cosine", "geodesic")
    trains = True
    summary = "Prototypical Networks (Snell et al. 2017): Conv-4, episodic training"

    job_options = ("train_steps", "train_ways", "train_shots", "train_queries", "seed",
                   "backbone")

    def __init__(self, backbone: str = "conv4", metric: str = "sqeuclidean",
                 train_ways: int = 60, train_shots: int = 1, train_queries: int = 5,
                 train_steps: int = 1000, lr: float = 1e-3, weight_decay: float = 0.0,
                 lr_decay_every: int = 2000, temperature: float = 1.0, amp: bool = False,
                 seed: int = 0, metric_options: dict[str, Any] | None = None,
                 compile: bool | None = None, channels_last: bool | None = None) -> None:
        self.backbone = backbone
        self.metric = metric
        self.train_ways = train_ways
        self.train_shots = train_shots
        self.train_queries = train_queries
        self.train_steps = train_steps
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_decay_every = lr_decay_every
        self.temperature = temperature
        self.amp = amp
        self.seed = seed
        self.metric_options = metric_options
        self.compile = speed_option("compile", compile)
        self.channels_last = speed_option("channels_last", channels_last)
        self.geodesic = check_metric_options(metric, metric_options)
        self.encoder: torch.nn.Module | None = None
        self.in_shape: tuple[int, ...] | None = None
        self.trained_on: ClassSet | None = None  # meta-train classes, kept in checkpoints

    def _build(self, in_shape: tuple[int, ...]) -> torch.nn.Module:
        """The encoder for inputs ``in_shape``: built (seeded) on first use; an encoder that
        exists for another shape (trained, or loaded from a checkpoint) is never replaced."""
        if self.encoder is not None:
            check_input_shape("protonet", self.in_shape, in_shape)
        else:
            torch.manual_seed(self.seed)  # reproducible default init
            self.in_shape = tuple(in_shape)
            self.encoder = build_backbone(self.backbone, self.in_shape)
        return self.encoder

    def fit(self, train: LabeledData | None, device: torch.device, steps: int | None = None,
            progress: bool = True) -> dict[str, Any]:
        steps = self.train_steps if steps is None else steps
        if train is None or steps <= 0:
            return {"train_steps": 0}
        encoder = self._build(tuple(train.get(torch.tensor([0])).shape[1:])).to(device).train()
        self.trained_on = ClassSet.of(train)
        ways = min(self.train_ways, train.num_classes)
        spec = EpisodeSpec(ways, self.train_shots, self.train_queries, steps, seed=self.seed)
        episodes, _ = sample_episodes(train, spec)  # [T, N, K+Q]
        opt = torch.optim.Adam(encoder.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        losses, accs = [], []
        speed = TrainSpeed(bool(self.compile), bool(self.channels_last))  # amp: episode_loss
        start = time.perf_counter()
        with speed_up(encoder, speed) as fast, \
                training_bar(steps, f"protonet {ways}-way {self.train_shots}-shot",
                             progress) as advance:
            for t in range(steps):
                for group in opt.param_groups:
                    group["lr"] = lr_at(t, self.lr, self.lr_decay_every)
                idx = episodes[t]
                if self.geodesic is not None:
                    refresh_pool(self.geodesic, encoder, train, t, ways, device)
                x = train.get(idx.flatten()).to(device).view(*idx.shape, *self.in_shape)
                loss, acc = episode_loss(fast, x, ways, self.train_shots, self.metric,
                                         self.temperature, self.amp, self.geodesic)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
                accs.append(acc.item())
                advance(loss=losses[-1], acc=accs[-1])
        tail = max(1, min(100, steps // 10))
        return {"train_steps": steps, "train_ways_used": ways,
                "train_seconds": round(time.perf_counter() - start, 1),
                "train_loss_first": sum(losses[:tail]) / tail,
                "train_loss_last": sum(losses[-tail:]) / tail,
                "train_acc_last": sum(accs[-tail:]) / tail}

    def features(self, data: LabeledData, device: torch.device) -> torch.Tensor:
        encoder = self._build(tuple(data.get(torch.tensor([0])).shape[1:]))
        return extract_features(encoder, data.get, len(data), device)

    def feature_key(self, data: LabeledData) -> str | None:
        in_shape = tuple(data.get(torch.tensor([0])).shape[1:])
        return sha256_json({"backbone": self.backbone, "in_shape": in_shape,
                            "weights": weights_hash(self._build(in_shape))})

    def state_dict(self) -> dict[str, Any]:
        if self.encoder is None:
            return {}
        trained_on = dataclasses.asdict(self.trained_on) if self.trained_on else None
        return {"in_shape": self.in_shape, "encoder": self.encoder.state_dict(),
                "trained_on": trained_on}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self._build(tuple(state["in_shape"])).load_state_dict(state["encoder"])
            if state.get("trained_on"):
                info = state["trained_on"]
                self.trained_on = ClassSet(info["name"], info["split"],
                                           tuple(info["class_names"]),
                                           tuple(info["readable_names"]))
