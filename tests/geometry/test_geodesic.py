"""GeoProto-style geodesic modes: the synthetic cases T1-T4 of shared/methods/geoproto.md
section 7 with the card's margins (fixed seeds), and the training path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protobench.datasets.synthetic import as_data, swiss_roll, two_spirals
from protobench.episodic import EpisodeSpec, make_episodes
from protobench.evaluation import evaluate_episodes, evaluate_geodesic
from protobench.geometry.diffusion import distance_scale, fit_diffusion_map, sq_dists
from protobench.geometry.geodesic import (
    GeodesicHead,
    class_scores,
    pool_logits,
    refresh_pool,
)
from protobench.geometry.metrics import get_metric
from protobench.methods.protonet import episode_loss
from tests.geometry.test_diffusion import local_scaling_reference


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def accuracies(gen, pool_n: int, ways: int, queries: int, shots: int, options: dict,
               episodes: int = 100, seed: int = 0) -> tuple[float, float]:
    """(euclidean, geo_pool) accuracy on the same episodes; pool = unlabelled draws."""
    g = torch.Generator().manual_seed(seed)
    pool, _ = gen(pool_n, g)
    x, y = gen(3000, g)
    data = as_data(x, y, "synthetic")
    eps = make_episodes(data, EpisodeSpec(ways, shots, queries, episodes, seed))
    head = GeodesicHead(options)
    head.set_pool(pool.float())
    return evaluate_episodes(data.x, eps).mean, evaluate_geodesic(head, data.x, eps).mean


@pytest.mark.parametrize("m", [1, 2])
def test_t1_spirals_geo_pool_beats_euclid(m):
    euclid, geo = accuracies(two_spirals, 400, 2, 50, 5, {"m": m, "k": 7, "t": 8})
    assert euclid <= 0.70 and geo >= 0.90 and geo - euclid >= 0.2


def test_t1_negative_control_median_bandwidth_gives_no_gain():
    for shots in (1, 5):
        euclid, geo = accuracies(two_spirals, 400, 2, 50, shots,
                                 {"m": 1, "bandwidth": "median"})
        assert geo - euclid < 0.05


def test_t2_spirals_geo_trans():
    g = torch.Generator().manual_seed(0)
    x, y = two_spirals(2000, g)
    data = as_data(x, y, "spirals")
    eps = make_episodes(data, EpisodeSpec(2, 1, 200, 12, 0))
    head = GeodesicHead({"mode": "geo_trans", "k": 5, "m": 1})
    assert head.task == "fewshot-transductive"
    euclid, geo = evaluate_episodes(data.x, eps).mean, evaluate_geodesic(head, data.x, eps).mean
    assert geo >= 0.9 and geo - euclid >= 0.2


def test_t3_per_class_maps_need_the_membership_term():
    g = torch.Generator().manual_seed(0)
    x, y = two_spirals(2000, g)
    L = torch.stack([x[y == c][:100] for c in range(2)])  # [2 classes, 100 landmarks, 2]
    protos = L[:, :5]  # 5 prototypes per class drawn from the landmarks
    q = torch.cat([x[y == c][100:200] for c in range(2)])
    yq = torch.arange(2).repeat_interleave(100)
    dm = fit_diffusion_map(L, alpha=1.0, bandwidth_rule="knn", k=7, t=8)
    pure = (class_scores(dm, 5, protos, q, beta=0.0).argmax(1) == yq).double().mean()
    both = (class_scores(dm, 5, protos, q, beta=1.0).argmax(1) == yq).double().mean()
    euclid = (sq_dists(q, protos.flatten(0, 1)).argmin(1) // 5 == yq).double().mean()
    assert pure < 0.70 and both > 0.95 and both - euclid >= 0.2


def test_t4_swiss_roll_geo_pool_beats_euclid():
    # the card measures +0.168 (1-shot) and +0.177 (5-shot): its generic ">= 0.2" margin
    # cannot hold here, so T4 asserts +0.15 and the card's accuracy levels
    for shots in (1, 5):
        euclid, geo = accuracies(swiss_roll, 800, 4, 30, shots, {"m": 4}, episodes=60)
        assert geo - euclid >= 0.15 and euclid <= 0.80
        assert geo >= (0.80 if shots == 1 else 0.90)


def test_embedding_once_equals_per_episode_logits_and_is_inductive():
    g = torch.Generator().manual_seed(1)
    pool, _ = two_spirals(200, g)
    x, y = two_spirals(40, g)
    head = GeodesicHead({"m": 3, "landmarks": 200})
    head.set_pool(pool.float())
    coords = head.embed(x.float(), ways=2)
    support, query = x[:6].view(2, 3, 2), x[6:]
    dm = fit_diffusion_map(head.pool)
    tau = distance_scale(dm.coords(3))
    direct = pool_logits(dm, 3, tau, support, query)
    via = -get_metric("geodesic")(coords[6:].double(), coords[:6].view(2, 3, 3).mean(1).double())
    assert torch.allclose(direct, via, atol=1e-5)
    # a query's coordinates do not depend on the other queries
    assert torch.allclose(head.embed(x[6:7].float(), ways=2), coords[6:7])


def test_geo_pool_training_sends_gradients_through_nystrom_into_the_encoder():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.BatchNorm1d(8),
                                  torch.nn.Tanh(), torch.nn.Linear(8, 4))
    g = torch.Generator().manual_seed(0)
    x, y = two_spirals(400, g)
    train = as_data(x, y, "spirals")
    head = GeodesicHead({"landmarks": 120, "refresh": 2, "m": 2})
    stats = encoder[1].running_mean.clone()
    refresh_pool(head, encoder, train, 0, 2, torch.device("cpu"))
    assert torch.equal(encoder[1].running_mean, stats)  # BN statistics restored
    dm = head._train[0]
    assert not dm.landmarks.requires_grad and not dm.psi.requires_grad
    xe = torch.stack([x[y == c][:6] for c in range(2)]).float()  # [2, 1+5, 2]
    loss, acc = episode_loss(encoder, xe, 2, 1, metric="geodesic", head=head)
    loss.backward()
    grads = [p.grad for p in encoder.parameters()]
    assert torch.isfinite(loss) and all(gr is not None and torch.isfinite(gr).all()
                                        for gr in grads)
    assert sum(gr.abs().sum() for gr in grads) > 0
    before = head._train
    refresh_pool(head, encoder, train, 1, 2, torch.device("cpu"))  # not a refresh step
    assert head._train is before


def test_per_episode_modes_score_each_episode_as_the_heads_do():
    g = torch.Generator().manual_seed(2)
    x, y = two_spirals(600, g)
    data = as_data(x, y, "spirals")
    eps = make_episodes(data, EpisodeSpec(2, 12, 10, 7, 0))
    for mode in ("geo_class", "geo_trans"):
        head = GeodesicHead({"mode": mode})
        res = evaluate_geodesic(head, data.x, eps, chunk=3)
        want = []
        for idx in eps.indices:  # one episode at a time, through the head's own functions
            s, q = data.x[idx[:, :12]], data.x[idx[:, 12:].reshape(-1)]
            pred = head.logits(s, q).argmax(1)
            want.append((pred == torch.arange(2).repeat_interleave(10)).double().mean())
        assert torch.allclose(res.accuracies, torch.stack(want))


def test_episode_scores_stay_finite_with_local_scaling_at_non_integer_t():
    # 60 landmarks per geo_trans episode under local scaling have negative eigenvalues;
    # lam^1.5 was NaN there and the argmax over NaN scores returned accuracy 0.5 silently
    g = torch.Generator().manual_seed(0)
    x, y = two_spirals(600, g)
    data = as_data(x, y, "spirals")
    eps = make_episodes(data, EpisodeSpec(2, 10, 20, 4, 0))
    support = data.x[eps.indices[:, :, :10]].double()  # [4, 2, 10, 2]
    query = data.x[eps.indices[:, :, 10:].reshape(4, -1)].double()  # [4, 40, 2]
    head = GeodesicHead({"mode": "geo_trans", "bandwidth": "local", "k": 7, "t": 1.5, "m": 59})
    scores = head.episode_scores(support, query)
    assert torch.isfinite(scores).all()
    negative = 0
    for e in range(4):  # reference: the points are the landmarks, so Nyström = coordinates
        pts = torch.cat([support[e].reshape(20, 2), query[e]]).numpy()
        w, c = local_scaling_reference(pts, k=7, alpha=1.0, t=1.5)
        negative += int((w < 0).sum())
        d2 = ((c[:, None] - c[None]) ** 2).sum(-1)
        off = np.sort(d2[~np.eye(60, dtype=bool)])
        tau = off[(len(off) - 1) // 2]  # torch.median: the lower middle value
        protos = c[:20].reshape(2, 10, -1).mean(1)
        want = -((c[20:, None] - protos[None]) ** 2).sum(-1) / tau
        assert np.abs(scores[e].numpy() - want).max() <= 1e-8
    assert negative > 0
    res = evaluate_geodesic(head, data.x, eps)
    labels = torch.arange(2).repeat_interleave(20)
    assert torch.allclose(res.accuracies, (scores.argmax(-1) == labels).double().mean(-1))
    geo_class = GeodesicHead({"mode": "geo_class", "bandwidth": "local", "k": 7, "t": 1.5,
                              "m": 9})
    assert torch.isfinite(geo_class.episode_scores(support, query)).all()
