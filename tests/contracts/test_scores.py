"""Every registered OOD score ranks in-distribution data above far-away OOD data.

Parametrised over the score registry. The fixture (:func:`blobs`) is three ID classes, unit
Gaussians centred on a triangle of radius 8 in the first two of 8 dimensions, and one OOD
blob 8 units out along the third axis, orthogonal to every class direction: far from the
class means, from the ID mean, in cosine (normalised features) and along a direction a
linear classifier of the ID classes ignores, so feature, class-conditional and logit scores
must all separate it (AUROC > 0.99). Logit scores get the logits of a multinomial logistic
regression fitted on the ID training blobs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from protobench.errors import UserError
from protobench.ood.scores import build_score
from protobench.registry import registry

SCORES = registry("scores")
DIM, RADIUS, PER_CLASS = 8, 8.0, 120


def sample(centre: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    return centre + torch.randn(n, DIM, generator=g, dtype=torch.float64)


def make_blobs() -> dict[str, torch.Tensor]:
    """ID train / ID test features ``[360, 8]`` with labels, OOD features ``[200, 8]`` and
    the classifier's logits ``[n, 3]`` of each."""
    g = torch.Generator().manual_seed(0)
    angles = [2 * math.pi * c / 3 for c in range(3)]
    centres = torch.zeros(3, DIM, dtype=torch.float64)
    centres[:, 0] = RADIUS * torch.tensor([math.cos(a) for a in angles], dtype=torch.float64)
    centres[:, 1] = RADIUS * torch.tensor([math.sin(a) for a in angles], dtype=torch.float64)
    ood_centre = torch.zeros(DIM, dtype=torch.float64)
    ood_centre[2] = RADIUS
    labels = torch.arange(3).repeat_interleave(PER_CLASS)
    train = torch.cat([sample(c, PER_CLASS, g) for c in centres])
    test = torch.cat([sample(c, PER_CLASS, g) for c in centres])
    ood = sample(ood_centre, 200, g)
    clf = LogisticRegression(max_iter=1000).fit(train.numpy(), labels.numpy())

    def logits(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(clf.decision_function(x.numpy())).float()

    return {"train": train.float(), "labels": labels, "test": test.float(), "ood": ood.float(),
            "train_logits": logits(train), "test_logits": logits(test),
            "ood_logits": logits(ood)}


@pytest.fixture(scope="module")
def blobs() -> dict[str, torch.Tensor]:
    return make_blobs()


@pytest.mark.parametrize("name", SCORES.names())
def test_ranks_in_distribution_above_ood(name: str, blobs: dict[str, torch.Tensor]) -> None:
    score = build_score(name).fit(blobs["train"], blobs["labels"], blobs["train_logits"])
    s_id = score.score(blobs["test"], blobs["test_logits"])
    s_ood = score.score(blobs["ood"], blobs["ood_logits"])
    assert s_id.shape == (len(blobs["test"]),) and s_ood.shape == (len(blobs["ood"]),)
    assert torch.isfinite(s_id).all() and torch.isfinite(s_ood).all()
    truth = np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))]
    auroc = roc_auc_score(truth, torch.cat([s_id, s_ood]).double().numpy())
    assert auroc > 0.99, f"{name}: AUROC {auroc:.4f}"


@pytest.mark.parametrize("name", SCORES.names())
def test_params_round_trip_and_describe(name: str) -> None:
    score = build_score(name)
    params = score.get_params()
    assert build_score(name, **params).get_params() == params
    assert score.name == name and type(score).summary, "a registered score has a summary"
    d = SCORES.describe(name)
    assert {p["name"]: p.get("default") for p in d["parameters"]} == params
    assert (d["needs_logits"], d["needs_labels"]) == (score.needs_logits, score.needs_labels)


@pytest.mark.parametrize("name", [n for n in SCORES.names() if SCORES.get(n).needs_logits])
def test_logit_scores_refuse_missing_logits(name: str, blobs: dict[str, torch.Tensor]) -> None:
    score = build_score(name).fit(blobs["train"], blobs["labels"], blobs["train_logits"])
    with pytest.raises(UserError, match="needs logits"):
        score.score(blobs["test"], None)
