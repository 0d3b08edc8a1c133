"""Proto-CLIP-F pieces: query adapters, the three losses, the class-chunk sampler, and the
fine-tuning of one task's memories (card sections 2-4, ``model.py``, ``utils.py``,
``main.py`` L216-369 of ``IRVLUTD/Proto-CLIP`` @ ``ae15ad9``).

* Adapters (width 16, in the embedding dim d): ``conv-2x`` / ``conv-3x`` pad the d-vector with
  zeros to s*s (s = ceil(sqrt(d))), 1x1 conv 1->16 + LayerNorm([16,s,s]), [conv-3x: 3x3 conv
  16->16 + LayerNorm], 1x1 conv 16->1 + LayerNorm([1,s,s]), add the input, crop to d;
  bias-free, no nonlinearity. ``fc``: ``0.2 LN(W2 LN(W1 x)) + 0.8 x`` (d -> d/4 -> d).
* Losses (plain sum): L1 = NLL of the log of the alpha-mixture of the two softmaxes; L2 =
  InfoNCE(Ci, Ct) = CE(Ci Ct^T / 0.1, arange N); L3 = InfoNCE(Ct, Ci). The InfoNCE temperature
  is pinned to 0.1 (``info-nce-pytorch`` 0.1.4's default, which the reference code relies on).
  ``log p`` is computed as ``logsumexp(log a + log_softmax_I, log(1-a) + log_softmax_T)``:
  the same value, finite at alpha in {0, 1} where the plain log of a softmax can underflow.
* Sampler (per epoch): a permutation of the N classes is cut into chunks of
  ``randint(max(int(0.2N), 1), int(0.4N))`` classes (upper bound exclusive) over its first
  N-1 entries; per class ``n = randint(1, K)`` (K > 1) and the query shots are
  ``permutation(K)[n:]`` (K = 1: the single shot). N < 5 makes the first randint empty
  (lower >= upper); this raises a UserError instead.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from protobench.errors import UserError

INFONCE_TEMPERATURE = 0.1
ADAPTERS = ("conv-2x", "conv-3x", "fc")


class ConvAdapter(nn.Module):
    """``conv-2x`` / ``conv-3x`` query adapter on ``[B, d]`` vectors."""

    def __init__(self, dim: int, three: bool, width: int = 16) -> None:
        super().__init__()
        self.dim, self.size = dim, int(math.ceil(math.sqrt(dim)))
        s = self.size
        self.conv1 = nn.Conv2d(1, width, 1, bias=False)
        self.ln1 = nn.LayerNorm([width, s, s])
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False) if three else None
        self.ln2 = nn.LayerNorm([width, s, s]) if three else None
        self.conv3 = nn.Conv2d(width, 1, 1, bias=False)
        self.ln3 = nn.LayerNorm([1, s, s])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.size
        grid = F.pad(x, (0, s * s - self.dim)).view(-1, 1, s, s)
        out = self.ln1(self.conv1(grid))
        if self.conv2 is not None and self.ln2 is not None:
            out = self.ln2(self.conv2(out))
        out = self.ln3(self.conv3(out)) + grid
        return out.view(-1, s * s)[:, : self.dim]


class FcAdapter(nn.Module):
    """``fc`` query adapter: ``0.2 * LN(W2 LN(W1 x)) + 0.8 * x``."""

    def __init__(self, dim: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(dim, dim // reduction, bias=False),
                                nn.LayerNorm(dim // reduction),
                                nn.Linear(dim // reduction, dim, bias=False), nn.LayerNorm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.2 * self.fc(x) + 0.8 * x


def build_adapter(kind: str, dim: int) -> nn.Module:
    if kind not in ADAPTERS:
        raise UserError(f"unknown Proto-CLIP adapter {kind!r}; choose one of: "
                        f"{', '.join(ADAPTERS)}")
    return FcAdapter(dim) if kind == "fc" else ConvAdapter(dim, three=kind == "conv-3x")


def log_mixture(q: torch.Tensor, c_img: torch.Tensor, c_txt: torch.Tensor, alpha: float,
                beta: float) -> torch.Tensor:
    """``log(a softmax(-b||q-Ci||^2) + (1-a) softmax(-b||q-Ct||^2))`` ``[M, N]``."""
    li = F.log_softmax(-beta * torch.cdist(q, c_img) ** 2, dim=-1)
    lt = F.log_softmax(-beta * torch.cdist(q, c_txt) ** 2, dim=-1)
    wa = math.log(alpha) if alpha > 0 else -math.inf
    wb = math.log(1 - alpha) if alpha < 1 else -math.inf
    return torch.logsumexp(torch.stack([li + wa, lt + wb]), dim=0)


def info_nce(query: torch.Tensor, keys: torch.Tensor,
             temperature: float = INFONCE_TEMPERATURE) -> torch.Tensor:
    """InfoNCE with paired keys: ``CE(norm(q) norm(k)^T / t, arange(N))`` (mean)."""
    logits = F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(query), device=query.device))


def alignment_losses(c_img: torch.Tensor, c_txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L2, L3) = (InfoNCE(Ci, Ct), InfoNCE(Ct, Ci))."""
    return info_nce(c_img, c_txt), info_nce(c_txt, c_img)


def check_sampler(n_classes: int) -> None:
    lower, upper = max(int(0.2 * n_classes), 1), int(0.4 * n_classes)
    if lower >= upper:
        raise UserError(f"proto-clip-f's class-chunk sampler needs at least 5 classes: with "
                        f"N={n_classes} it draws randint({lower}, {upper}), an empty range; "
                        "use --ways 5 or more")


def class_chunks(n_classes: int, rng: np.random.Generator) -> list[list[int]]:
    """One epoch of the card's sampler: sorted class chunks covering ``perm[:N-1]``."""
    check_sampler(n_classes)
    perm = rng.permutation(n_classes)
    lower, upper = max(int(0.2 * n_classes), 1), int(0.4 * n_classes)
    chunks, start = [], 0
    while start < n_classes - 1:
        n_cls = int(rng.integers(lower, upper))
        chunk = sorted(int(c) for c in perm[start:min(start + n_cls, n_classes - 1)])
        chunks.append(chunk)
        start += len(chunk)
    return chunks


def query_rows(classes: list[int], shots: int, rng: np.random.Generator) -> list[int]:
    """Rows ``c*K + s`` of the query shots of each class (a random non-empty subset)."""
    rows = []
    for c in classes:
        if shots == 1:
            rows.append(c * shots)
            continue
        n = int(rng.integers(1, shots))
        rows += [c * shots + int(s) for s in rng.permutation(shots)[n:]]
    return rows


class TaskMemories(nn.Module):
    """Image memory V ``[N*K, d]``, text memory T ``[N, d]`` and the query adapter."""

    def __init__(self, keys: torch.Tensor, text: torch.Tensor, adapter: str,
                 train_text: bool) -> None:
        super().__init__()
        self.n, self.k, d = keys.shape
        self.keys = F.normalize(keys.reshape(-1, d), dim=-1)  # frozen initial keys (queries)
        self.V = nn.Parameter(self.keys.clone())
        self.T = nn.Parameter(text.clone(), requires_grad=train_text)
        self.adapter = build_adapter(adapter, d).to(keys.device)

    def prototypes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Ci ``[N, d]``, Ct ``[N, d]``): rows normalised, mean over K, renormalised."""
        v = F.normalize(self.V, dim=-1).view(self.n, self.k, -1)
        return F.normalize(v.mean(1), dim=-1), F.normalize(self.T, dim=-1)

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.adapter(x), dim=-1)

    def loss(self, rows: list[int], alpha: float, beta: float) -> torch.Tensor:
        """L1 + L2 + L3 on the query rows (labels ``row // K``)."""
        idx = torch.as_tensor(rows, device=self.keys.device)
        c_img, c_txt = self.prototypes()
        logp = log_mixture(self.adapt(self.keys[idx]), c_img, c_txt, alpha, beta)
        l2, l3 = alignment_losses(c_img, c_txt)
        return F.nll_loss(logp, idx // self.k) + l2 + l3

    def optimizer(self, lr: float, eps: float, weight_decay: float) -> torch.optim.AdamW:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=lr, eps=eps, weight_decay=weight_decay)


def finetune(mem: TaskMemories, alpha: float, beta: float, epochs: int, rng: np.random.Generator,
             lr: float = 1e-4, eps: float = 1e-4, weight_decay: float = 0.05) -> list[float]:
    """The card's training loop on one task; returns the mean loss of each epoch."""
    opt = mem.optimizer(lr, eps, weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * mem.n * mem.k))
    history = []
    for _ in range(epochs):
        losses = []
        for chunk in class_chunks(mem.n, rng):
            loss = mem.loss(query_rows(chunk, mem.k, rng), alpha, beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        sched.step()
        history.append(sum(losses) / len(losses))
    return history
