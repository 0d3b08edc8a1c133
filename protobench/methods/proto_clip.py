"""Proto-CLIP (P, Palanisamy, Chao, Du, Xiang, IROS 2024): vision-language prototypes.

Card: ``shared/methods/proto_clip.md`` (reference code ``IRVLUTD/Proto-CLIP`` @ ``ae15ad9``).
Image prototypes ``Ci`` = class means of the L2-normalised support features (renormalised:
``Prototypes.from_support(s, normalise=True)``);
text prototypes ``Ct`` = normalised mean of the normalised prompt features of each class
name; for a unit query ``q``::

    p(y=k | q) = alpha softmax_k(-beta ||q - Ci||^2) + (1 - alpha) softmax_k(-beta ||q - Ct||^2)

* ``proto-clip`` (training-free): no adapter; alpha, beta by the card's grid search
  (alpha 0.0..1.0 outer, beta 0.1..0.9 then 1..20 inner, first maximum wins) on episodes of a
  validation split, never the evaluated split; or given (``-p alpha=.. -p beta=..``).
* ``proto-clip-f``: per task, learnable image memory V (init: the support features), text
  memory T (init: Ct; frozen when ``train_vis_mem_only``) and a query adapter
  (conv-2x | conv-3x | fc), trained with L1 + L2 + L3 (see ``proto_clip_train.py``), AdamW
  (lr 1e-4, eps 1e-4, weight decay 0.05), cosine schedule; queries then go through the
  adapter. Defaults are the card's ImageNet setting (conv-2x, train_vis_mem_only).

Departures from the card, forced by the episodic harness (frozen per-split feature cache,
N-way K-shot episodes on class-disjoint splits) and said here:
* Support features are the cached features of the centre-crop transform: no 10-pass
  augmented keys (Tip-Adapter cache), and each feature is normalised before averaging.
* The few-shot "task" is one episode: Proto-CLIP-F fine-tunes per episode on its support
  set (queries of the loss come from the support keys, as in the reference code) and keeps
  the last epoch: the reference picks the best epoch on a validation set of the *same*
  classes, which an episode does not have.
* alpha/beta are searched on episodes (same ways/shots, ``search_episodes``, seeded) of the
  validation split handed to ``fit`` (the dataset's train split by default, class-disjoint
  from test; ``--train-dataset NAME:val`` for a true validation split), with the
  training-free model; Proto-CLIP-F trains and predicts with them (the reference trains with
  per-dataset config values and also re-searches after training).
* float32 everywhere (the reference keeps fp16 weights on GPU).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from protobench.datasets.base import LabeledData
from protobench.episodic import EpisodeSpec, make_episodes
from protobench.episodic.sampler import episode_labels
from protobench.errors import UserError
from protobench.geometry.prototypes import Prototypes
from protobench.methods.base import FewShotMethod, register_method
from protobench.methods.clip_encoders import (
    OpenClipEncoder,
    image_features,
    templates_for,
    text_prototypes,
)
from protobench.methods.proto_clip_train import TaskMemories, build_adapter, check_sampler, finetune
from protobench.utils import counter_seed, sha256_json

ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
BETAS = tuple(round(0.1 * i, 1) for i in range(1, 10)) + tuple(float(b) for b in range(1, 21))


def image_prototypes(support: torch.Tensor) -> torch.Tensor:
    """``[..., N, K, d]`` -> ``[..., N, d]``: normalise rows, mean over K, renormalise."""
    return Prototypes.from_support(support, normalise=True).centres


def mixture_probs(q: torch.Tensor, c_img: torch.Tensor, c_txt: torch.Tensor, alpha: float,
                  beta: float) -> torch.Tensor:
    """``[..., M, d]`` x ``[..., N, d]`` x ``[..., N, d]`` -> ``p`` ``[..., M, N]`` (rows sum to 1)."""
    p_img = torch.softmax(-beta * torch.cdist(q, c_img) ** 2, dim=-1)
    p_txt = torch.softmax(-beta * torch.cdist(q, c_txt) ** 2, dim=-1)
    return alpha * p_img + (1 - alpha) * p_txt


def first_best(correct: torch.Tensor) -> tuple[int, int]:
    """Index (alpha, beta) of the first maximum of ``correct`` ``[A, B]`` in row-major order."""
    flat = int(torch.argmax(correct.flatten()))  # torch returns the first maximal index
    return flat // correct.shape[1], flat % correct.shape[1]


def grid_search(q: torch.Tensor, c_img: torch.Tensor, c_txt: torch.Tensor, labels: torch.Tensor,
                alphas: tuple[float, ...] = ALPHAS, betas: tuple[float, ...] = BETAS
                ) -> tuple[float, float, float]:
    """Best (alpha, beta, accuracy) on ``q [E, M, d]``, prototypes ``[E, N, d]``, labels ``[M]``."""
    d_img, d_txt = torch.cdist(q, c_img) ** 2, torch.cdist(q, c_txt) ** 2
    a = torch.tensor(alphas, dtype=q.dtype, device=q.device).view(-1, 1, 1, 1)
    correct = torch.zeros(len(alphas), len(betas), dtype=torch.int64)
    for j, b in enumerate(betas):
        p = a * torch.softmax(-b * d_img, -1) + (1 - a) * torch.softmax(-b * d_txt, -1)
        correct[:, j] = (p.argmax(-1) == labels).sum((1, 2)).cpu()
    i, j = first_best(correct)
    return alphas[i], betas[j], correct[i, j].item() / (q.shape[0] * q.shape[1])


class _ProtoCLIPBase(FewShotMethod):
    distances = ()
    scores_episodes = True
    episode_chunk = 256

    clip_model: str
    pretrained: str
    alpha: float | None
    beta: float | None
    prompts: str
    search_episodes: int
    seed: int

    def _setup(self) -> None:
        self._encoder: OpenClipEncoder | None = None
        self._val: LabeledData | None = None
        self._text: torch.Tensor | None = None
        self._ab: tuple[float, float] = (1.0, 1.0)

    def encoder(self, device: torch.device | None = None) -> OpenClipEncoder:
        if self._encoder is None:
            self._encoder = OpenClipEncoder(self.clip_model, self.pretrained, self.seed,
                                            device or "cpu")
        elif device is not None and self._encoder.device != device:
            self._encoder.model.to(device)
            self._encoder.device = device
        return self._encoder

    def features(self, data: LabeledData, device: torch.device) -> torch.Tensor:
        return image_features(self.encoder(device), data.get, len(data))

    def feature_key(self, data: LabeledData) -> str | None:
        in_shape = tuple(data.get(torch.tensor([0])).shape[1:])
        return sha256_json({**self.encoder().key(), "in_shape": in_shape})

    def fit(self, train: LabeledData | None, device: torch.device, steps: int | None = None,
            progress: bool = True) -> dict[str, Any]:
        """Keeps the validation split for the alpha/beta search (no training here)."""
        self._val = train
        return {"validation": f"{train.name}/{train.split}" if train is not None else "none"}

    def prepare_episodes(self, data: LabeledData, ways: int, shots: int, queries: int,
                         device: torch.device) -> dict[str, Any]:
        """Text prototypes of ``data``'s classes and (alpha, beta) for this setting."""
        enc = self.encoder(device)
        self._text = text_prototypes(enc, data.readable_names,
                                     templates_for(data.name, self.prompts)).to(device)
        if self.alpha is not None and self.beta is not None:
            self._ab = (float(self.alpha), float(self.beta))
            return {"alpha": self._ab[0], "beta": self._ab[1], "selected_by": "given"}
        val = self._val
        if val is None:
            raise UserError(f"{self.name} needs -p alpha=A -p beta=B, or a validation split to "
                            f"search them on (none was given: {data.name} has no train split, "
                            "or a checkpoint skipped fit); pass --train-dataset NAME:SPLIT")
        if (val.name, val.split) == (data.name, data.split):
            raise UserError(f"alpha/beta are never searched on the evaluated split "
                            f"{data.name}/{data.split}; pass another --train-dataset")
        spec = self._val_spec(val, ways, shots, queries)
        episodes = make_episodes(val, spec)
        vf = self.cached_features(val, device).to(device)
        vt = text_prototypes(enc, val.readable_names, templates_for(val.name, self.prompts))
        idx = episodes.indices.to(device)
        c_img = image_prototypes(vf[idx[:, :, :shots]])
        q = F.normalize(vf[idx[:, :, shots:]].flatten(1, 2), dim=-1)
        labels = episode_labels(spec.ways, spec.queries, device)
        alphas = ALPHAS if self.alpha is None else (float(self.alpha),)
        betas = BETAS if self.beta is None else (float(self.beta),)
        a, b, acc = grid_search(q, c_img, vt.to(device)[episodes.classes.to(device)], labels,
                                alphas, betas)
        self._ab = (a, b)
        return {"alpha": a, "beta": b, "selected_by": f"grid search on {val.name}/{val.split}",
                "val_accuracy": acc, "val_setting": [spec.ways, spec.shots, spec.queries,
                                                     spec.episodes], "val_manifest": episodes.hash}

    def _val_spec(self, val: LabeledData, ways: int, shots: int, queries: int) -> EpisodeSpec:
        smallest = int(val.class_counts.min())
        q = min(queries, smallest - shots)
        if q < 1 or val.num_classes < 2:
            raise UserError(f"validation split {val.name}/{val.split} cannot hold {shots}-shot "
                            f"episodes (smallest class: {smallest} samples); pass -p alpha= "
                            "-p beta= or another --train-dataset")
        return EpisodeSpec(min(ways, val.num_classes), shots, q, self.search_episodes,
                           self.seed)

    def _text_of(self, classes: torch.Tensor) -> torch.Tensor:
        if self._text is None:
            raise UserError("call prepare_episodes(data, ...) before scoring episodes")
        return self._text[classes]


@register_method("proto-clip")
class ProtoCLIP(_ProtoCLIPBase):
    """Training-free Proto-CLIP on frozen CLIP features."""

    summary = "Proto-CLIP (P et al. 2024), training-free: CLIP image + text prototypes"

    job_options = ("clip_model", "pretrained", "seed")

    def __init__(self, clip_model: str = "RN50", pretrained: str = "openai",
                 alpha: float | None = None, beta: float | None = None, prompts: str = "auto",
                 search_episodes: int = 200, seed: int = 0) -> None:
        self.clip_model = clip_model
        self.pretrained = pretrained
        self.alpha = alpha
        self.beta = beta
        self.prompts = prompts
        self.search_episodes = search_episodes
        self.seed = seed
        self._setup()

    def score_episodes(self, support: torch.Tensor, query: torch.Tensor, classes: torch.Tensor,
                       episode_ids: torch.Tensor) -> torch.Tensor:
        """``p`` ``[e, M, N]`` for ``support [e, N, K, d]``, ``query [e, M, d]``."""
        return mixture_probs(F.normalize(query, dim=-1), image_prototypes(support),
                             self._text_of(classes), *self._ab)


@register_method("proto-clip-f")
class ProtoCLIPF(_ProtoCLIPBase):
    """Proto-CLIP-F: memories and query adapter fine-tuned on each episode's support set."""

    summary = "Proto-CLIP-F (P et al. 2024): memories + query adapter fine-tuned per episode"
    episode_chunk = 1

    job_options = ("clip_model", "pretrained", "seed")

    def __init__(self, clip_model: str = "RN50", pretrained: str = "openai",
                 alpha: float | None = None, beta: float | None = None, prompts: str = "auto",
                 adapter: str = "conv-2x", train_vis_mem_only: bool = True,
                 train_epochs: int = 2000, lr: float = 1e-4, eps: float = 1e-4,
                 weight_decay: float = 0.05, search_episodes: int = 200, seed: int = 0) -> None:
        self.clip_model = clip_model
        self.pretrained = pretrained
        self.alpha = alpha
        self.beta = beta
        self.prompts = prompts
        self.adapter = adapter
        self.train_vis_mem_only = train_vis_mem_only
        self.train_epochs = train_epochs
        self.lr = lr
        self.eps = eps
        self.weight_decay = weight_decay
        self.search_episodes = search_episodes
        self.seed = seed
        build_adapter(adapter, 4)  # unknown names fail before any work
        self._setup()

    def prepare_episodes(self, data: LabeledData, ways: int, shots: int, queries: int,
                         device: torch.device) -> dict[str, Any]:
        check_sampler(ways)
        return super().prepare_episodes(data, ways, shots, queries, device)

    def memories(self, support: torch.Tensor, text: torch.Tensor,
                 episode_id: int) -> TaskMemories:
        """Fresh memories for one task, adapter initialised from (seed, episode_id)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(counter_seed(self.seed, episode_id))
            return TaskMemories(support, text, self.adapter, not self.train_vis_mem_only)

    def score_episodes(self, support: torch.Tensor, query: torch.Tensor, classes: torch.Tensor,
                       episode_ids: torch.Tensor) -> torch.Tensor:
        text = self._text_of(classes)
        alpha, beta = self._ab
        out = []
        for i, ep in enumerate(episode_ids.tolist()):
            mem = self.memories(support[i], text[i], ep)
            with torch.enable_grad():
                finetune(mem, alpha, beta, self.train_epochs,
                         np.random.default_rng([self.seed, ep]), self.lr, self.eps,
                         self.weight_decay)
            with torch.no_grad():
                c_img, c_txt = mem.prototypes()
                out.append(mixture_probs(mem.adapt(query[i]), c_img, c_txt, alpha, beta))
        return torch.stack(out)
