"""Joint training, the reference upper bound of class-incremental learning.

At experience ``t`` the encoder and the growing linear head of :class:`Finetune` train
with cross-entropy on the data of every experience so far (``D_0 u ... u D_t``), i.e. as if
the whole past were still available. This is the only method allowed to keep training
samples of finished experiences (``keeps_data = True``): it is not a continual learner but
the ceiling the others are measured against. The kept samples are part of its state, so a
checkpointed run resumes exactly.

By default training continues from the previous experience's weights (cumulative
training, as avalanche's ``Cumulative``); ``reinit=True`` retrains the encoder and head
from their initialisation at every experience (each row of the accuracy matrix is then an
independent joint model on the classes seen so far).
"""

from __future__ import annotations

from typing import Any

import torch

from protobench.methods.base import register_method
from protobench.methods.continual_base import ExperienceInfo, Inputs
from protobench.methods.finetune import Finetune


class _ConcatSource:
    """Several sample collections seen as one, indexed by an index tensor."""

    def __init__(self, parts: list[Inputs]) -> None:
        self.parts = parts
        self.offsets = torch.cumsum(torch.tensor([0] + [len(p) for p in parts]), 0)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(idx, dtype=torch.int64)
        part = torch.bucketize(idx, self.offsets[1:], right=True)
        out: torch.Tensor | None = None
        for p in part.unique().tolist():
            mask = part == p
            x = self.parts[p][idx[mask] - self.offsets[p]]
            if out is None:
                out = x.new_empty((len(idx), *x.shape[1:]))
            out[mask] = x
        assert out is not None
        return out


@register_method("joint")
class Joint(Finetune):
    """Cross-entropy on every class seen so far (keeps all training data: upper bound)."""

    summary = "joint training on all data seen so far (upper bound; keeps the data)"
    keeps_data = True

    job_options = ("epochs", "seed", "backbone")

    def __init__(self, backbone: str = "auto", epochs: int = 100, batch_size: int = 64,
                 lr: float = 1e-3, weight_decay: float = 2e-4, lr_step: int = 45,
                 lr_gamma: float = 0.1, temperature: float = 0.1, reinit: bool = False,
                 seed: int = 0, amp: bool | None = None, compile: bool | None = None,
                 channels_last: bool | None = None) -> None:
        super().__init__(backbone, epochs, batch_size, lr, weight_decay, lr_step, lr_gamma,
                         temperature, seed, amp=amp, compile=compile,
                         channels_last=channels_last)
        self.reinit = reinit
        self.kept: list[tuple[Inputs, torch.Tensor]] = []

    def _training_data(self, x: Inputs, y: torch.Tensor,
                       info: ExperienceInfo) -> tuple[Inputs, torch.Tensor]:
        self.kept.append((x, y))
        if self.reinit:  # rebuilt from the initial weights by Finetune.train_experience
            self.encoder, self.head = None, None
        xs = [k[0] for k in self.kept]
        ys = torch.cat([k[1] for k in self.kept])
        if all(isinstance(p, torch.Tensor) for p in xs):
            return torch.cat(xs), ys  # type: ignore[arg-type]
        return _ConcatSource(xs), ys

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        return {**state, "kept": list(self.kept)} if state else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.kept = list(state.get("kept", []))
