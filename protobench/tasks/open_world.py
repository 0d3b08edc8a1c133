"""Open-world streams: OOD detection of not-yet-seen classes in a class-incremental run.

After experience ``t`` of a stream of ``T`` experiences, the test samples of the classes
seen so far (experiences ``0..t``) are ID and the test samples of the classes still to
come (experiences ``t+1..T-1``) are OOD; there is nothing to report after the last one.

Any registered score works. Logit scores use ``method.predict`` (scores ``[B, num_seen]``
over the seen classes) as logits; feature scores use ``method.features`` (the encoder
output). Scores that need fitting (KNN, Mahalanobis, ...) are fitted by the evaluator, not
the method, on the training samples of the seen classes, embedded by the current model:
the same protocol as post-hoc OOD scores on an ID training set. The method itself never
keeps those samples.
"""

from __future__ import annotations

from typing import Any

import torch

from protobench.continual.stream import ClassIncrementalStream
from protobench.methods.continual_base import ContinualMethod
from protobench.ood.metrics import METRIC_NAMES, ood_metrics
from protobench.ood.scores import build_score, get_score_class
from protobench.tasks.record import Metric


@torch.no_grad()
def _outputs(method: ContinualMethod, x: Any, n: int, device: torch.device, logits: bool,
             batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    feats, outs = [], []
    for lo in range(0, n, batch_size):
        xb = x[torch.arange(lo, min(n, lo + batch_size))]
        if logits:
            outs.append(method.predict(xb, device).float())
        feats.append(method.features(xb, device).float())
    return torch.cat(feats), (torch.cat(outs) if logits else None)


def _indices(stream: ClassIncrementalStream, experiences: range, which: str) -> torch.Tensor:
    parts = [getattr(stream.experience(j), f"{which}_indices") for j in experiences]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)


def open_world_metrics(method: ContinualMethod, stream: ClassIncrementalStream, t: int,
                       device: torch.device, score: str,
                       score_params: dict[str, Any] | None = None,
                       batch_size: int = 512) -> dict[str, Any] | None:
    """Metrics of seen (ID) vs unseen (OOD) test classes after experience ``t``; ``None``
    after the last experience. Adds ``n_id`` / ``n_ood`` (test samples on each side)."""
    if t + 1 >= len(stream):
        return None
    needs_logits = get_score_class(score).needs_logits
    seen, unseen = range(t + 1), range(t + 1, len(stream))
    scorer = build_score(score, **(score_params or {}))
    x, y = stream.inputs(stream.train, _indices(stream, seen, "train"))
    feats, logits = _outputs(method, x, len(y), device, needs_logits, batch_size)
    scorer.fit(feats, y, logits)
    values = []
    for side in (seen, unseen):
        x, y = stream.inputs(stream.test, _indices(stream, side, "test"))
        feats, logits = _outputs(method, x, len(y), device, needs_logits, batch_size)
        values.append(scorer.score(feats, logits))
    out: dict[str, Any] = dict(ood_metrics(values[0], values[1]))
    out.update(after=t + 1, n_id=len(values[0]), n_ood=len(values[1]))
    return out


class OpenWorld:
    """The open-world task on top of a continual run: after each experience, the unseen
    classes' test data are OOD for ``score`` (see the module docstring). It hooks into the
    continual task and adds ``open_world`` to the row and ``open_world_<metric>`` means."""

    def __init__(self, score: str, score_params: dict[str, Any] | None = None) -> None:
        build_score(score, **(score_params or {}))  # name and parameters, before any data
        self.score = score
        self.score_params = dict(score_params or {})

    def identity(self) -> list[Any]:
        """What a resumed run must share with the checkpointed one."""
        return [self.score, self.score_params]

    def hook(self, stream: ClassIncrementalStream, device: torch.device) -> Any:
        def after(method: ContinualMethod, t: int) -> dict[str, Any] | None:
            return open_world_metrics(method, stream, t, device, self.score, self.score_params)

        return after

    def describe(self, per_experience: list[dict[str, Any] | None]
                 ) -> tuple[dict[str, Any], dict[str, Metric]]:
        """The row's ``open_world`` entry and the metrics averaged over experiences."""
        rows = [r for r in per_experience if r is not None]
        config = {"score": self.score, "score_params": self.score_params,
                  "per_experience": rows}
        metrics = {f"open_world_{m}": Metric(sum(r[m] for r in rows) / len(rows), None,
                                             len(rows)) for m in METRIC_NAMES if rows}
        return config, metrics
