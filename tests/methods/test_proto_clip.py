"""Proto-CLIP: the card's eight exact properties (section 9), adapters, losses, sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from protobench.errors import UserError
from protobench.methods.proto_clip import (
    ALPHAS,
    BETAS,
    ProtoCLIP,
    ProtoCLIPF,
    first_best,
    grid_search,
    image_prototypes,
    mixture_probs,
)
from protobench.methods.proto_clip_train import (
    ConvAdapter,
    FcAdapter,
    TaskMemories,
    alignment_losses,
    class_chunks,
    finetune,
    log_mixture,
    query_rows,
)


def unit(*shape: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


# 1. rows of p sum to 1; alpha = 1 / 0 give the image-only / text-only softmax
def test_mixture_is_a_distribution_with_the_right_extremes():
    q, ci, ct = unit(7, 16, seed=1), unit(5, 16, seed=2), unit(5, 16, seed=3)
    p = mixture_probs(q, ci, ct, 0.3, 4.0)
    assert torch.allclose(p.sum(-1), torch.ones(7), atol=1e-6) and (p >= 0).all()
    img = torch.softmax(-4.0 * ((q[:, None] - ci[None]) ** 2).sum(-1), -1)
    txt = torch.softmax(-4.0 * ((q[:, None] - ct[None]) ** 2).sum(-1), -1)
    assert torch.allclose(mixture_probs(q, ci, ct, 1.0, 4.0), img, atol=1e-6)
    assert torch.allclose(mixture_probs(q, ci, ct, 0.0, 4.0), txt, atol=1e-6)
    assert torch.allclose(p, 0.3 * img + 0.7 * txt, atol=1e-6)


# 2. for unit vectors softmax(-b ||q - c||^2) == softmax(2 b q.c)
@pytest.mark.parametrize("beta", [0.1, 1.0, 17.0])
def test_distance_softmax_is_a_cosine_softmax_with_scale_two_beta(beta):
    q, c = unit(9, 32, seed=4), unit(6, 32, seed=5)
    lhs = mixture_probs(q, c, c, 1.0, beta)
    assert torch.allclose(lhs, torch.softmax(2 * beta * q @ c.T, -1), atol=1e-6)


# 3. prototypes: normalise each row, mean over K, renormalise; invariant to shot order
def test_image_prototypes_and_shot_order_invariance():
    s = torch.randn(3, 4, 5, 8, generator=torch.Generator().manual_seed(6)) * 3  # [E,N,K,d]
    ref = torch.stack([torch.stack([F.normalize(sum(F.normalize(s[e, n, k], dim=0)
                                                    for k in range(5)) / 5, dim=0)
                                    for n in range(4)]) for e in range(3)])
    protos = image_prototypes(s)
    assert torch.allclose(protos, ref, atol=1e-6)
    assert torch.allclose(protos.norm(dim=-1), torch.ones(3, 4), atol=1e-6)
    assert torch.allclose(image_prototypes(s[:, :, torch.randperm(5)]), protos, atol=1e-6)


# 4. K = 1, alpha = 1: the prediction is the nearest support by cosine
def test_one_shot_image_only_is_nearest_support_by_cosine():
    m = ProtoCLIP(alpha=1.0, beta=3.0)
    m._text, m._ab = unit(10, 16, seed=7), (1.0, 3.0)
    g = torch.Generator().manual_seed(8)
    support = torch.randn(4, 5, 1, 16, generator=g) * torch.rand(4, 5, 1, 1, generator=g) * 5
    query = torch.randn(4, 30, 16, generator=g) * 2
    classes = torch.stack([torch.randperm(10, generator=g)[:5] for _ in range(4)])
    pred = m.score_episodes(support, query, classes, torch.arange(4)).argmax(-1)
    cos = F.normalize(query, dim=-1) @ F.normalize(support[:, :, 0], dim=-1).transpose(1, 2)
    assert torch.equal(pred, cos.argmax(-1))


# 5. L2 = L3 = log(1 + (N - 1) e^-10) when Ci = Ct = I_N
@pytest.mark.parametrize("n", [2, 5, 40])
def test_alignment_losses_on_identity_prototypes(n):
    eye = torch.eye(n, dtype=torch.float64)
    l2, l3 = alignment_losses(eye, eye)
    expected = math.log(1 + (n - 1) * math.exp(-10))
    assert l2.item() == pytest.approx(expected, rel=1e-12)
    assert l3.item() == pytest.approx(expected, rel=1e-12)


# 6. train_vis_mem_only: T unchanged after a step, V and adapter changed
@pytest.mark.parametrize("adapter", ["conv-2x", "conv-3x", "fc"])
def test_train_vis_mem_only_freezes_the_text_memory(adapter):
    keys, text = unit(5, 2, 16, seed=9), unit(5, 16, seed=10)
    for train_text in (False, True):
        torch.manual_seed(0)
        mem = TaskMemories(keys, text, adapter, train_text=train_text)
        before = {k: v.detach().clone() for k, v in mem.named_parameters()}
        opt = mem.optimizer(1e-2, 1e-4, 0.05)
        mem.loss([0, 3, 5, 8], 0.5, 5.0).backward()
        opt.step()
        after = dict(mem.named_parameters())
        assert not torch.equal(after["V"], before["V"])
        assert any(not torch.equal(after[k], before[k]) for k in before if "adapter" in k)
        assert torch.equal(after["T"], before["T"]) is not train_text


# 7. grid order: alpha outer (11), beta inner (0.1..0.9 then 1..20) = 319 pairs, first max wins
def test_grid_values_and_order():
    assert ALPHAS == tuple(i / 10 for i in range(11))
    assert BETAS == tuple(i / 10 for i in range(1, 10)) + tuple(float(b) for b in range(1, 21))
    assert len(ALPHAS) * len(BETAS) == 319
    counts = torch.zeros(11, 29, dtype=torch.int64)
    assert first_best(counts) == (0, 0)
    counts[3, 20] = counts[3, 25] = counts[7, 1] = 4
    assert first_best(counts) == (3, 20)


def test_grid_search_matches_a_naive_loop_and_breaks_ties_first():
    E, N, Q, d = 6, 5, 4, 8
    q, ci, ct = unit(E, N * Q, d, seed=11), unit(E, N, d, seed=12), unit(E, N, d, seed=13)
    labels = torch.arange(N).repeat_interleave(Q)
    best, best_ab = -1, None
    for a in ALPHAS:  # reference: plain loops in the card's order, strict > keeps the first
        for b in BETAS:
            hits = sum(int((mixture_probs(q[e], ci[e], ct[e], a, b).argmax(-1) == labels).sum())
                       for e in range(E))
            if hits > best:
                best, best_ab = hits, (a, b)
    a, b, acc = grid_search(q, ci, ct, labels)
    assert (a, b) == best_ab and acc == pytest.approx(best / (E * N * Q))
    # identical image and text prototypes: every pair ties -> the first pair
    assert grid_search(q, ci, ci, labels)[:2] == (0.0, 0.1)


# 8. sampler: every class but the last of the permutation is a query once per epoch; N < 5 fails
@pytest.mark.parametrize("n", [5, 6, 9, 20, 64])
def test_class_chunks_cover_all_but_the_last_class_once(n):
    for seed in range(5):
        perm = np.random.default_rng(seed).permutation(n)  # the sampler's first draw
        chunks = class_chunks(n, np.random.default_rng(seed))
        flat = [c for chunk in chunks for c in chunk]
        assert sorted(flat) == sorted(perm[:-1].tolist()) and len(flat) == n - 1
        upper = int(0.4 * n) - 1
        assert all(1 <= len(c) <= upper and c == sorted(c) for c in chunks)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_class_chunks_need_five_classes(n):
    with pytest.raises(UserError, match="at least 5 classes"):
        class_chunks(n, np.random.default_rng(0))
    with pytest.raises(ValueError):  # what the reference's randint(lower, upper) does
        np.random.default_rng(0).integers(max(int(0.2 * n), 1), int(0.4 * n))


def test_query_rows():
    rng = np.random.default_rng(0)
    assert query_rows([0, 3], 1, rng) == [0, 3]  # K = 1: the single shot
    sizes = set()
    for seed in range(50):
        rows = query_rows([2, 5], 4, np.random.default_rng(seed))
        # the card's rule from the same draws: per class n = randint(1, K), shots[n:]
        ref_rng, expected = np.random.default_rng(seed), []
        for c in (2, 5):
            n = int(ref_rng.integers(1, 4))
            expected += [c * 4 + int(s) for s in ref_rng.permutation(4)[n:]]
        assert rows == expected
        assert all(8 <= r < 12 or 20 <= r < 24 for r in rows) and len(set(rows)) == len(rows)
        sizes.add(sum(8 <= r < 12 for r in rows))
    assert sizes == {1, 2, 3}  # every non-empty proper subset size of K = 4 shots occurs


def test_log_mixture_is_the_log_of_the_mixture():
    q, ci, ct = (unit(6, 12, seed=s, dtype=torch.float64) for s in (14, 15, 16))
    for a in (0.0, 0.3, 1.0):
        ref = torch.log(mixture_probs(q, ci, ct, a, 2.0))
        assert torch.allclose(log_mixture(q, ci, ct, a, 2.0), ref, atol=1e-12)
    assert torch.isfinite(log_mixture(q, ci, ct, 1.0, 1e4)).all()  # no log(0)


def test_conv_adapter_pads_to_a_square_and_fc_adapter_formula():
    torch.manual_seed(1)
    x = torch.randn(3, 10, dtype=torch.float64)
    conv = ConvAdapter(10, three=False).double()
    assert conv.size == 4 and conv(x).shape == (3, 10)
    # conv-2x at init: linear per pixel, then LayerNorm -> +-(standardised padded input)
    grid = F.pad(x, (0, 6))
    z = (grid - grid.mean(1, keepdim=True)) / (grid.var(1, unbiased=False, keepdim=True)
                                                + 1e-5).sqrt()
    cos = F.cosine_similarity(conv(x) - x, z[:, :10], dim=1)
    assert torch.allclose(cos.abs(), torch.ones(3, dtype=torch.float64), atol=1e-9)
    assert ConvAdapter(10, three=True).conv2 is not None
    fc = FcAdapter(16).double()
    y = torch.randn(2, 16, dtype=torch.float64)
    w1, w2 = fc.fc[0].weight, fc.fc[2].weight
    h = F.layer_norm(y @ w1.T, (4,))
    ref = 0.2 * F.layer_norm(h @ w2.T, (16,)) + 0.8 * y
    assert torch.allclose(fc(y), ref, atol=1e-12) and fc.fc[0].bias is None


def test_finetuning_lowers_the_loss_and_is_reproducible():
    keys, text = unit(5, 3, 16, seed=17), unit(5, 16, seed=18)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        mem = TaskMemories(keys, text, "fc", train_text=True)
        runs.append(finetune(mem, 0.5, 5.0, 40, np.random.default_rng(0), lr=1e-2))
    assert runs[0] == runs[1] and runs[0][-1] < runs[0][0]


def test_proto_clip_f_scores_each_episode_independently_of_chunking():
    m = ProtoCLIPF(train_epochs=3, adapter="conv-3x")
    m._text, m._ab = unit(8, 16, seed=19), (0.5, 5.0)
    support, query = unit(3, 5, 2, 16, seed=20), unit(3, 10, 16, seed=21)
    classes = torch.stack([torch.arange(5), torch.arange(1, 6), torch.arange(3, 8)])
    whole = m.score_episodes(support, query, classes, torch.arange(3))
    one = m.score_episodes(support[2:], query[2:], classes[2:], torch.tensor([2]))
    assert torch.allclose(whole[2:], one) and torch.allclose(whole.sum(-1), torch.ones(3, 10))
    with pytest.raises(UserError, match="adapter"):
        ProtoCLIPF(adapter="conv-5x")
