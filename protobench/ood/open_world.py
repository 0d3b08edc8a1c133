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
from protobench.ood.metrics import ood_metrics
from protobench.ood.scores import build_score, get_score_class


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
