"""Geodesic (geo_class) nearest-prototype inference of the continual methods."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from protobench.errors import UserError
from protobench.geometry.diffusion import sq_dists
from protobench.geometry.geodesic_continual import ContinualGeodesic, centroids
from protobench.methods import ExperienceInfo, build_method
from protobench.methods.continual_base import holds_rows

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def blobs(n: int, classes: range, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Well separated 2-d clusters: class c around (3c, 3c^2 mod 7) with std 0.3."""
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(classes).repeat_interleave(n)
    centre = torch.stack([3.0 * y, (3.0 * y ** 2) % 7], 1)
    return centre + 0.3 * torch.randn(len(y), 2, generator=g), y


def test_centroids_average_at_least_two_rows_and_never_equal_a_row():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    c = centroids(x, 20, seed=0)
    assert 2 <= len(c) <= 20
    assign = sq_dists(x.double(), c).argmin(1)
    assert torch.bincount(assign, minlength=len(c)).min() >= 2 or len(c) < 20
    assert not holds_rows({"c": c}, x)


def test_geo_class_scores_recover_separated_classes_and_reject_one_sample_classes():
    geo = ContinualGeodesic({"landmarks": 8, "normalise": False})
    x, y = blobs(30, range(3), seed=0)
    geo.update(torch.nn.Identity(), x, y, (0, 1, 2), CPU)
    vectors = torch.stack([x[y == c].mean(0) for c in range(3)])
    xt, yt = blobs(20, range(3), seed=1)
    scores = geo.scores(xt, vectors)
    assert scores.shape == (60, 3) and torch.isfinite(scores).all()
    assert (scores.argmax(1) == yt).float().mean() == 1.0
    with pytest.raises(UserError, match="K = 1"):
        geo.update(torch.nn.Identity(), x[:1], torch.tensor([3]), (3,), CPU)


@pytest.mark.parametrize("name", ["napa-vq", "prd"])
def test_continual_methods_predict_geodesically_keep_no_rows_and_round_trip(name):
    x0, y0 = blobs(12, range(0, 3), seed=0)
    x1, y1 = blobs(12, range(3, 5), seed=1)
    m = build_method(name, backbone="mlp", epochs=1, batch_size=12, seed=0,
                     metric="geodesic", metric_options={"landmarks": 4})
    for t, (x, y, cls) in enumerate(((x0, y0, (0, 1, 2)), (x1, y1, (3, 4)))):
        torch.manual_seed(t)
        m.train_experience(x, y, ExperienceInfo(t, cls, 2, t), CPU, progress=False)
    scores = m.predict(torch.cat([x0, x1]), CPU)
    assert scores.shape == (60, 5) and torch.isfinite(scores).all()
    state = m.state_dict()
    assert len(state["geodesic"]["landmarks"]) == 5
    feats = m.encoder.eval()(torch.cat([x0, x1])).detach()
    for rows in (torch.cat([x0, x1]), feats, F.normalize(feats, dim=1)):
        assert not holds_rows(state["geodesic"], rows)
    again = build_method(name, **m.get_params())
    again.load_state_dict(state)
    assert torch.equal(again.predict(x0, CPU), m.predict(x0, CPU))


def test_bad_continual_metric_is_an_error():
    with pytest.raises(UserError, match="choose cosine or geodesic|does not support"):
        build_method("prd", metric="euclidean")

