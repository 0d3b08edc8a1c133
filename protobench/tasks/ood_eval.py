"""One OOD evaluation on cached features: extract once per set, fit each score once, score
every set, compute the metrics per OOD set and their near / far / overall means.

Averages are plain means over OOD sets (each set weighs the same, never pooled samples;
card section 4); ``near`` / ``far`` are absent when no set falls in that group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from protobench.datasets import LabeledData
from protobench.geometry.prototypes import Prototypes
from protobench.methods.protocols import OODMethod
from protobench.ood.metrics import METRIC_NAMES, ood_metrics, roc_points
from protobench.ood.scores import build_score, get_score_class
from protobench.ood.scores.base import l2_normalise


@dataclass
class SetFeatures:
    """Cached outputs of one set: features ``[n, D]``, logits ``[n, C]`` or None, labels."""

    features: torch.Tensor
    logits: torch.Tensor | None
    labels: torch.Tensor


@dataclass
class Evaluation:
    """Metrics of one trained model: ``metrics[score][set][metric]`` and the averages
    ``summary[score]["near_auroc" | "far_auroc" | "auroc" | ...]``."""

    metrics: dict[str, dict[str, dict[str, float]]]
    summary: dict[str, dict[str, float]]
    id_accuracy: float
    id_accuracy_source: str
    roc_scores: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    # score -> set -> (fpr, tpr): the ROC points a row keeps (ood.metrics.roc_points)
    curves: dict[str, dict[str, tuple[list[float], list[float]]]] = field(
        default_factory=dict)


@torch.no_grad()
def extract(method: OODMethod, data: LabeledData, device: torch.device, with_logits: bool,
            chunk: int = 4096) -> SetFeatures:
    """Features (and logits) of every sample of ``data``, read ``chunk`` samples at a time."""
    feats, logits = [], []
    for lo in range(0, len(data), chunk):
        x = data.get(torch.arange(lo, min(len(data), lo + chunk)))
        h = method.features(x, device).float().cpu()
        feats.append(h)
        if with_logits:
            z = method.logits_from_features(h)
            logits.append(z if z is not None else method.logits(x, device))
    return SetFeatures(torch.cat(feats), torch.cat(logits).float() if with_logits else None,
                       data.labels)


def id_accuracy(method: OODMethod, train: SetFeatures, test: SetFeatures) -> tuple[float, str]:
    """Classifier accuracy when the method has a head; else nearest class mean (cosine on
    L2-normalised features, means from the ID training features)."""
    if test.logits is not None:
        acc = (test.logits.argmax(1) == test.labels).double().mean().item()
        return acc, "classifier head"
    means = l2_normalise(Prototypes.from_features(l2_normalise(train.features),
                                                  train.labels).centres)
    pred = (l2_normalise(test.features) @ means.T).argmax(1)
    return (pred == test.labels).double().mean().item(), \
        "nearest class mean (cosine, penultimate features)"


def evaluate(method: OODMethod, train: LabeledData, test: LabeledData,
             ood: dict[str, LabeledData], groups: dict[str, str], scores: list[str],
             score_params: dict[str, dict[str, Any]], device: torch.device,
             keep_scores: bool = False) -> Evaluation:
    """Score ``test`` (ID) against each set of ``ood`` with every score of ``scores``."""
    need_logits = method.has_classifier and any(get_score_class(s).needs_logits
                                                for s in scores)
    tr = extract(method, train, device, need_logits)
    # the ID accuracy always comes from the head when there is one, whatever the scores
    te = extract(method, test, device, method.has_classifier)
    od = {name: extract(method, data, device, need_logits) for name, data in ood.items()}
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    summary: dict[str, dict[str, float]] = {}
    roc: dict[str, dict[str, torch.Tensor]] = {}
    curves: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for s in scores:
        score = build_score(s, **score_params.get(s, {}))
        score.fit(tr.features, tr.labels, tr.logits)
        id_s = score.score(te.features, te.logits)
        per_set = {}
        roc[s] = {"__id__": id_s} if keep_scores else {}
        curves[s] = {}
        for name, f in od.items():
            o_s = score.score(f.features, f.logits)
            per_set[name] = ood_metrics(id_s, o_s)
            fpr, tpr = roc_points(id_s, o_s)
            curves[s][name] = (fpr.tolist(), tpr.tolist())
            if keep_scores:
                roc[s][name] = o_s
        metrics[s] = per_set
        summary[s] = averages(per_set, groups)
    acc, source = id_accuracy(method, tr, te)
    return Evaluation(metrics, summary, acc, source, roc, curves)


def averages(per_set: dict[str, dict[str, float]], groups: dict[str, str]
             ) -> dict[str, float]:
    """Plain means over all sets (``auroc``...) and within near / far (``near_auroc``...)."""
    out: dict[str, float] = {}
    for prefix, members in (("", list(per_set)),
                            ("near_", [n for n in per_set if groups.get(n) == "near"]),
                            ("far_", [n for n in per_set if groups.get(n) == "far"])):
        if not members:
            continue
        for m in METRIC_NAMES:
            out[prefix + m] = math.fsum(per_set[n][m] for n in members) / len(members)
    return out
