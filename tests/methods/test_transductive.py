"""BD-CSPN and soft k-means (card fewshot_transductive.md): the card's worked cases by
hand, naive loops, easyfsl's BDCSPN on the same features and episodes, and the
transductive board."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from protobench.cli import app
from protobench.datasets import LabeledData
from protobench.episodic import EpisodeSpec, episode_labels, make_episodes
from protobench.evaluation.episodes import evaluate_episodes
from protobench.evaluation.scored import evaluate_scored
from protobench.methods import build_method
from protobench.methods.transductive import bd_cspn, soft_kmeans
from protobench.tasks import ResultStore

runner = CliRunner()
T = torch.float64
S1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=T).view(1, 2, 1, 2)
Q1 = torch.tensor([[0.8, 0.6], [0.28, 0.96], [0.96, 0.28]], dtype=T).view(1, 3, 2)


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=T), torch.as_tensor(b, dtype=T), atol=tol)


def naive_bd_cspn(S, ys, Q, eps=1.0):
    """Card section 3, one loop per query and class (numpy)."""
    S, Q, ys = np.asarray(S, float), np.asarray(Q, float), np.asarray(ys)
    n = ys.max() + 1
    cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    P = np.stack([S[ys == c].mean(0) for c in range(n)])
    delta = S.mean(0) - Q.mean(0)
    Qs = Q + delta
    yq = [int(np.argmax([math.exp(eps * cos(q, P[c])) for c in range(n)])) for q in Qs]
    out, weights = [], []
    for c in range(n):
        rows = [(math.exp(eps * cos(s, P[c])), s) for s, y in zip(S, ys) if y == c]
        rows += [(math.exp(eps * cos(q, P[c])), q) for q, y in zip(Qs, yq) if y == c]
        z = sum(w for w, _ in rows)
        weights.append([w / z for w, _ in rows])
        out.append(sum(w * x for w, x in rows) / z)
    P2 = np.stack(out)
    logits = np.array([[cos(q, p) for p in P2] for q in Q])
    return delta, Qs, yq, weights, P2, logits


def test_easyfsl_worked_example_by_hand():
    """Card section 6, example 1 (2-way 1-shot, unit features)."""
    delta, qs, yq, weights, P, logits = naive_bd_cspn(S1.view(2, 2), [0, 1], Q1.view(3, 2))
    assert close(delta, [-0.18, -0.113333]) and yq == [0, 1, 0]
    assert close(qs, [[0.62, 0.486667], [0.10, 0.846667], [0.78, 0.166667]])
    assert close(weights[0], [0.358936, 0.289964, 0.351100])
    assert close(weights[1], [0.501726, 0.498274])
    ours, protos = bd_cspn(S1, Q1)
    for got in (P, protos[0]):
        assert close(got, [[0.812572, 0.199632], [0.049827, 0.923598]])
    for got in (logits, ours[0]):
        assert close(got, [[0.920048, 0.642225], [0.500956, 0.973690], [0.999081, 0.331310]])
    assert ours[0].argmax(-1).tolist() == [0, 1, 0]


def test_paper_form_knobs():
    """Example 2: eps = 10 (Z = all) moves the prototypes; eps = 1 is easyfsl's form."""
    _, p10 = bd_cspn(S1, Q1, eps=10.0)
    assert close(p10[0], [[0.884703, 0.099601], [0.048275, 0.925978]])
    assert torch.equal(bd_cspn(S1, Q1, eps=1.0)[1], bd_cspn(S1, Q1)[1])
    # top_z = 1: class 0 keeps only its most confident query (the third, 0.96/0.28)
    _, p1 = bd_cspn(S1, Q1, top_z=1)
    _, q2, _, _, _, _ = naive_bd_cspn(S1.view(2, 2), [0, 1], Q1.view(3, 2))
    w = [math.exp(1.0), math.exp(q2[2] @ [1, 0] / np.linalg.norm(q2[2]))]
    expected = (w[0] * np.array([1.0, 0]) + w[1] * q2[2]) / sum(w)
    assert close(p1[0, 0], expected)
    shifted, _ = bd_cspn(S1, Q1, classify_shifted=True)
    assert not torch.allclose(shifted, bd_cspn(S1, Q1)[0])


def test_shift_weights_and_invariances():
    g = torch.Generator().manual_seed(0)
    S = torch.randn(3, 4, 2, 6, generator=g, dtype=T)
    Q = torch.randn(3, 20, 6, generator=g, dtype=T) + 1.5  # a global offset
    delta = S.flatten(1, 2).mean(1, keepdim=True) - Q.mean(1, keepdim=True)
    assert close((Q + delta).mean(1), S.flatten(1, 2).mean(1), 1e-12)  # mean(Q') = mean(S)
    logits, protos = bd_cspn(S, Q)
    for e in range(3):  # each prototype: its naive loop's convex combination
        ys = np.repeat(np.arange(4), 2)
        _, _, _, weights, P, lg = naive_bd_cspn(S[e].reshape(8, 6), ys, Q[e])
        assert all(abs(sum(w) - 1) < 1e-12 and min(w) > 0 for w in weights)
        assert close(P, protos[e], 1e-10) and close(lg, logits[e], 1e-10)
    perm = torch.randperm(20, generator=g)
    assert torch.allclose(bd_cspn(S, Q[:, perm])[0], logits[:, perm], atol=1e-12)
    within = S[:, :, [1, 0]]  # supports permuted within their class
    assert torch.equal(bd_cspn(within, Q)[0].argmax(-1), logits.argmax(-1))
    relabel = [2, 0, 3, 1]  # classes relabelled consistently
    assert torch.allclose(bd_cspn(S[:, relabel], Q)[0], logits[:, :, relabel], atol=1e-12)


def test_a_class_without_pseudo_labelled_queries_keeps_its_support():
    S = torch.eye(3, dtype=T).view(1, 3, 1, 3)  # 3-way 1-shot; no query near class 2
    Q = torch.tensor([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.1, 0.9, 0]], dtype=T).view(1, 4, 3)
    logits, protos = bd_cspn(S, Q)
    assert logits.argmax(-1).tolist() == [[0, 0, 1, 1]]
    assert torch.equal(protos[0, 2], torch.tensor([0.0, 0.0, 1.0], dtype=T))
    assert not torch.equal(protos[0, 0], S[0, 0, 0])


def test_transductive_dependence_on_the_other_queries():
    """Example 6: duplicating the queries doubles their weights; appending one moves delta."""
    _, dup = bd_cspn(S1, torch.cat([Q1, Q1], 1))
    assert close(dup[0], [[0.771577, 0.243296], [0.066513, 0.898013]])
    extra = torch.cat([Q1, torch.tensor([[[-1.0, 0.0]]], dtype=T)], 1)
    d = S1.flatten(1, 2).mean(1) - extra.mean(1)
    assert close(d[0], [0.24, 0.04])
    logits, app_ = bd_cspn(S1, extra)
    assert close(app_[0], [[1.080541, 0.304405], [0.074466, 0.836821]])
    assert not torch.allclose(logits[:, :3], bd_cspn(S1, Q1)[0])  # not inductive


def naive_soft_kmeans(S, ys, Q, steps=1):
    S, Q, ys = np.asarray(S, float), np.asarray(Q, float), np.asarray(ys)
    n = ys.max() + 1
    P = np.stack([S[ys == c].mean(0) for c in range(n)])
    for _ in range(steps):
        d = np.array([[((q - p) ** 2).sum() for p in P] for q in Q])
        z = np.exp(-d - (-d).max(1, keepdims=True))
        z /= z.sum(1, keepdims=True)
        P = np.stack([(S[ys == c].sum(0) + (z[:, c:c + 1] * Q).sum(0))
                      / ((ys == c).sum() + z[:, c].sum()) for c in range(n)])
    return P, z if steps else None


def test_soft_kmeans_by_hand_and_properties():
    S = torch.tensor([[0.0, 0.0], [4.0, 0.0]], dtype=T).view(1, 2, 1, 2)
    Q = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 0.0]], dtype=T).view(1, 3, 2)
    P, z = naive_soft_kmeans(S.view(2, 2), [0, 1], Q.view(3, 2))
    assert close(z[0], [0.999665, 0.000335])  # softmax(-1, -9), the card's value
    scores, protos = soft_kmeans(S, Q, 1)
    assert close(protos[0], P, 1e-9)
    d = ((Q.view(3, 1, 2) - torch.as_tensor(P).view(1, 2, 2)) ** 2).sum(-1)
    assert close(scores[0], -d, 1e-9) and scores[0].argmax(-1).tolist() == [0, 1, 1]
    g = torch.Generator().manual_seed(1)
    S = torch.randn(2, 5, 3, 4, generator=g, dtype=T)
    Q = torch.randn(2, 25, 4, generator=g, dtype=T)
    zero, p0 = soft_kmeans(S, Q, 0)  # (a) zero steps: ProtoNet's prototypes and scores
    assert torch.allclose(p0, S.mean(2)) and torch.allclose(zero, -torch.cdist(Q, S.mean(2)) ** 2)
    for steps in (1, 3):  # (b) convex combinations, matched by a naive loop
        _, p = soft_kmeans(S, Q, steps)
        for e in range(2):
            ref, _ = naive_soft_kmeans(S[e].reshape(15, 4), np.repeat(np.arange(5), 3), Q[e],
                                       steps)
            assert close(p[e], ref, 1e-9)
        lo = torch.minimum(S.amin(2), Q.amin(1, keepdim=True))
        hi = torch.maximum(S.amax(2), Q.amax(1, keepdim=True))
        assert bool((p >= lo - 1e-12).all() and (p <= hi + 1e-12).all())
    perm = torch.randperm(25, generator=g)  # (d) permuting queries permutes predictions
    assert torch.allclose(soft_kmeans(S, Q[:, perm])[0], soft_kmeans(S, Q)[0][:, perm])


def _features(seed: int = 0, classes: int = 10, per: int = 30, dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 2
    x = centres.repeat_interleave(per, 0) + torch.randn(classes * per, dim, generator=g)
    y = torch.arange(classes).repeat_interleave(per)
    return LabeledData(x=x, labels=y, class_names=tuple(map(str, range(classes))),
                       name="blobs", split="test")


def test_bd_cspn_equals_easyfsl_per_episode():
    """Same features, same episodes: our per-episode accuracies are easyfsl's BDCSPN's."""
    easyfsl = pytest.importorskip("easyfsl.methods")
    data = _features()
    episodes = make_episodes(data, EpisodeSpec(5, 1, 15, 60, seed=3))
    method = build_method("bd-cspn", task="fewshot")
    feats = method.transform(data.x.double())
    ours = evaluate_scored(feats, episodes, method)
    ref = easyfsl.BDCSPN(torch.nn.Identity(), feature_normalization=2).double()
    labels = episode_labels(5, 15)
    accs = []
    for idx in episodes.indices:
        support = data.x.double()[idx[:, :1].reshape(-1)]
        query = data.x.double()[idx[:, 1:].reshape(-1)]
        ref.process_support_set(support, torch.arange(5).repeat_interleave(1))
        accs.append((ref(query).argmax(-1) == labels).double().mean().item())
    assert ours.accuracies.tolist() == accs
    protonet = evaluate_episodes(feats.float(), episodes, metric="cosine")
    assert ours.mean != protonet.mean  # the queries moved the prototypes


def test_soft_kmeans_zero_steps_is_protonet_and_refinement_helps_shifted_blobs():
    data = _features(seed=2)
    episodes = make_episodes(data, EpisodeSpec(5, 1, 15, 200, seed=0))
    feats = data.x.double()
    zero = evaluate_scored(feats, episodes, build_method("soft-kmeans", steps=0))
    proto = evaluate_episodes(feats, episodes, metric="sqeuclidean")
    assert zero.accuracies.tolist() == proto.accuracies.tolist()
    one = evaluate_scored(feats, episodes, build_method("soft-kmeans"))
    assert one.mean > proto.mean  # well-separated blobs: the queries sharpen the means


def test_cli_rows_go_to_the_transductive_board_and_bad_input_exits_2(tmp_path):
    store = tmp_path / "r.sqlite"
    for m in ("bd-cspn", "soft-kmeans"):
        res = runner.invoke(app, ["fewshot", "-d", "digits", "-m", m, "--shots", "1",
                                  "--episodes", "30", "-o", "image_size=8", "--store",
                                  str(store), "--no-progress", "--device", "cpu"])
        assert res.exit_code == 0, res.output
    rows = ResultStore(store).records()
    assert {(r.board, r.method) for r in rows} == {("fewshot-transductive/digits", "bd-cspn"),
                                                  ("fewshot-transductive/digits", "soft-kmeans")}
    for args, why in ((["-m", "bd-cspn", "--metric", "sqeuclidean"], "choose one of: cosine"),
                      (["-m", "soft-kmeans", "--metric", "cosine"], "does not support metric"),
                      (["-m", "soft-kmeans", "-p", "steps=-1"], "steps"),
                      (["-m", "bd-cspn", "-p", "top_z=0"], "top_z"),
                      (["-m", "bd-cspn", "--ways", "8"], "8")):
        res = runner.invoke(app, ["fewshot", "-d", "digits", *args, "--episodes", "5",
                                  "--store", str(tmp_path / "bad.sqlite"), "--no-progress"])
        assert res.exit_code == 2 and why in res.output, (args, res.output)
    assert not (tmp_path / "bad.sqlite").exists()
    res = runner.invoke(app, ["methods", "bd-cspn"])
    assert res.exit_code == 0 and "transductive" in res.output
    res = runner.invoke(app, ["continual", "-d", "digits", "-m", "soft-kmeans",
                              "--store", str(tmp_path / "bad.sqlite")])
    assert res.exit_code == 2 and "does not support" in res.output
