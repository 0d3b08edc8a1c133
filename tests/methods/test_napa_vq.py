"""`napa-vq`: the exact properties of the method card (shared/methods/napa_vq.md, section 7)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from protobench.methods import ContinualMethod, ExperienceInfo, build_method
from protobench.methods import napa_vq as nv
from protobench.methods.continual_base import holds_rows

CPU = torch.device("cpu")
E_MIN = 0.9 ** 10


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def images(n_per_class: int, classes: range, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiny 1x6x6 images: a class-specific pattern plus noise (``[n, 1, 6, 6]``, ``[n]``)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(classes).repeat_interleave(n_per_class)
    base = torch.randn(max(classes) + 1, 1, 6, 6, generator=torch.Generator().manual_seed(99))
    return base[y] + 0.3 * torch.randn(len(y), 1, 6, 6, generator=g), y


def train(m: nv.NapaVQ, t: int, classes: range, num: int = 3) -> dict:
    x, y = images(8, classes, seed=t)
    torch.manual_seed(t)
    return m.train_experience(x, y, ExperienceInfo(t, tuple(classes), num, 100 + t), CPU,
                              progress=False)


def small(**kw) -> nv.NapaVQ:
    return build_method("napa-vq", backbone="mlp", epochs=2, batch_size=8, seed=0, **kw)


def test_registered_with_the_cards_defaults():
    m = build_method("napa-vq", task="class-incremental")
    assert isinstance(m, ContinualMethod) and not m.keeps_data
    p = m.get_params()
    assert (p["lr"], p["lr_incremental"], p["weight_decay"], p["lr_step"]) == (1e-3, 1e-4, 2e-4, 45)
    assert (p["codebook_lr"], p["codebook_lr_incremental"], p["codebook_lr_step"]) == (5.0, 0.5, 20)
    assert (p["batch_size"], p["temperature"], p["protoaug_weight"], p["kd_weight"]) == \
        (64, 0.1, 10.0, 10.0)
    assert (p["neighbours"], p["edge_decay"], p["beta"], p["rotations"]) == (15, 0.9, 1e-3, 4)
    assert p["edge_min"] == pytest.approx(E_MIN)
    assert build_method("napa-vq", **p).get_params() == p


def test_rotation_labels_are_interleaved():
    x = torch.arange(8.0).view(2, 1, 2, 2)
    xr, yr = nv.rotate(x, torch.tensor([0, 3]), 4)
    assert yr.tolist() == [0, 1, 2, 3, 12, 13, 14, 15]
    for i in range(2):
        for k in range(4):
            assert torch.equal(xr[4 * i + k], torch.rot90(x[i], k, (-2, -1)))


# --- property 5: DCE -------------------------------------------------------------------

def test_dce_logits_are_minus_euclidean_distance_over_t():
    z, w = torch.randn(5, 3), torch.randn(7, 3)
    expected = torch.stack([-(z[i] - w).norm(dim=1) / 0.1 for i in range(5)])
    assert torch.allclose(nv.dce_logits(z, w, 0.1), expected, atol=1e-5)
    logits = nv.dce_logits(w[2:3], w, 0.1)  # z = w_y: the target has the highest logit
    assert logits.argmax().item() == 2 and logits[0, 2].item() == 0.0


# --- property 4: L_NA ------------------------------------------------------------------

def test_na_loss_is_zero_on_own_cvs_and_mean_d_plus_without_neighbours():
    w = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    full = torch.ones(3, 3)
    y = torch.tensor([0, 1, 2])
    assert nv.na_loss(w.clone(), y, w, full).item() == 0.0
    x = torch.tensor([[1.0, 1.0], [3.0, 2.0], [0.5, 4.0]])
    alone = torch.eye(3)
    d_plus = ((x - w[y]) ** 2).sum(1)
    assert torch.allclose(nv.na_loss(x, y, w, alone), d_plus.mean())


def test_na_loss_hand_computed_and_no_gradient_through_omega():
    w = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    x = torch.tensor([[0.9, 0.1]], requires_grad=True)  # label 0, neighbours 1 and 2
    beta = 0.5
    loss = nv.na_loss(x, torch.tensor([0]), w, torch.ones(3, 3), beta)
    d = ((x.detach() - w.detach()) ** 2).sum(1)
    omega = torch.softmax(-beta * d[1:], 0)
    value = d[0] - (omega * d[1:]).sum()
    assert loss.item() == pytest.approx(value.item(), abs=1e-6)
    loss.backward()
    # omega constant: dL/dx = 2(x - w_0) - sum_j omega_j 2(x - w_j)
    xd, wd = x.detach()[0], w.detach()
    grad = 2 * (xd - wd[0]) - (omega[:, None] * 2 * (xd - wd[1:])).sum(0)
    assert torch.allclose(x.grad[0], grad, atol=1e-5)
    assert torch.allclose(w.grad[1], omega[0] * 2 * (xd - wd[1]), atol=1e-5)


def test_na_loss_reads_the_label_row_not_the_bmu_row():
    w = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    edges = torch.eye(3)
    edges[0, 2] = 1.0  # label 0 linked to CV 2 only; CV 1 (the BMU) is not its neighbour
    x = torch.tensor([[1.0, 0.0]])
    beta = 1e-3
    expected = max(0.0, 1.0 - 16.0)  # d_+ = 1, only neighbour CV 2 at d = 16
    assert nv.na_loss(x, torch.tensor([0]), w, edges, beta).item() == expected


# --- property 3: graph update ----------------------------------------------------------

def loop_update(x, w, edges, k=15, decay=0.9, e_min=E_MIN):
    """The card's section 4.2 steps 1-4, written with loops (the reference's shape)."""
    m = len(w)
    e = edges.clone()
    d = torch.cdist(x, w, compute_mode=nv.EXACT)
    knn = d.topk(min(k, m), 1, largest=False).indices
    n = [0] * m
    r = [[0] * m for _ in range(m)]
    for i in range(len(x)):
        b = int(knn[i, 0])
        n[b] += 1
        for nb in knn[i].tolist():
            r[b][nb] += 1
    for j in range(m):
        for col in range(m):
            e[j, col] = max(float(e[j, col]), float(r[j][col] > 0)) * decay ** max(0, n[j] - r[j][col])
    e[e < e_min] = 0
    return e


def test_graph_update_matches_the_loop_version_and_keeps_its_invariants():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 4, generator=g)
    edges = torch.eye(24)
    for step in range(30):
        x = torch.randn(10, 4, generator=g) * (1 + step % 3)
        new = nv.update_graph(x, w, edges, k=5)
        assert torch.allclose(new, loop_update(x, w, edges, k=5), atol=1e-6)
        edges = nv.symmetrise(new)
        assert torch.equal(edges, edges.T)
        assert torch.equal(edges.diagonal(), torch.ones(24))
        nz = edges[edges > 0]
        assert nz.min() >= E_MIN / 2 - 1e-6 and nz.max() <= 1.0
    assert 0 < (edges > 0).sum() - 24 < 24 * 23  # sparse, not empty


# --- property 6: neighbourhood-aware prototype augmentation ----------------------------

def ring_graph(classes: int, rotations: int) -> torch.Tensor:
    """Anchor ``R*c`` linked to ``R*((c+1) % classes) + 1`` only (plus itself)."""
    m = classes * rotations
    edges = torch.eye(m)
    for c in range(classes):
        other = rotations * ((c + 1) % classes) + 1
        edges[rotations * c, other] = edges[other, rotations * c] = 1.0
    return edges


def test_augmentation_is_on_the_segment_towards_a_neighbour_of_the_anchor():
    means = torch.randn(24, 5)
    edges = ring_graph(6, 4)
    a, anchors, nbrs, gamma = nv.augment_prototypes(means, edges, 6, 500, 4,
                                                    torch.Generator().manual_seed(0))
    assert (anchors % 4 == 0).all() and anchors.max() < 24  # rotation-0 labels of old classes
    assert ((gamma >= 0.5) & (gamma <= 1)).all()
    g = gamma[:, None]
    assert torch.allclose(a, g * means[anchors] + (1 - g) * means[nbrs], atol=1e-6)
    assert (edges[anchors, nbrs] > 0).all()  # each neighbour from the anchor's own row
    same = nbrs == anchors
    assert same.any() and torch.allclose(a[same], means[anchors[same]], atol=1e-6)
    assert not a.requires_grad


def test_augmentation_avoids_the_list_wrapped_numpy_index_bug():
    """``edges.numpy()[[idx]]`` is ``(1, n, M)`` on numpy >= 1.23: iterating it yields one
    block, so the reference then draws neighbours from a single row for every anchor. Each
    of our draws must come from its own anchor's row, and every anchor's two neighbours
    (itself and one other class) must both appear."""
    edges = ring_graph(6, 4)
    idx = np.array([0, 4, 8])
    assert edges.numpy()[[idx]].shape == (1, 3, 24)  # the pitfall, on this numpy
    _, anchors, nbrs, _ = nv.augment_prototypes(torch.zeros(24, 2), edges, 6, 600, 4,
                                                torch.Generator().manual_seed(1))
    pairs = set(zip(anchors.tolist(), nbrs.tolist()))
    expected = {(4 * c, 4 * c) for c in range(6)} | {(4 * c, 4 * ((c + 1) % 6) + 1)
                                                      for c in range(6)}
    assert pairs == expected


def test_augmented_losses_train_only_the_codebook():
    enc = torch.nn.Linear(4, 3)
    w = torch.nn.Parameter(torch.randn(8, 3))
    means = enc(torch.randn(8, 4)).detach()
    a, ya, _, _ = nv.augment_prototypes(means, torch.ones(8, 8), 2, 16, 4,
                                        torch.Generator().manual_seed(0))
    loss = nv.na_loss(a, ya, w, torch.ones(8, 8)) + 10 * F.cross_entropy(
        nv.dce_logits(a, w, 0.1), ya)
    loss.backward()
    assert enc.weight.grad is None and w.grad is not None and w.grad.abs().sum() > 0


# --- properties 1, 2, 7, 8 on short training runs ---------------------------------------

def test_old_cvs_and_means_are_frozen_and_kd_starts_at_zero(monkeypatch):
    kd_values, copies = [], []
    real_norm, real_copy = torch.linalg.norm, nv.frozen_copy

    def spy_kd(z, z_old):
        assert z.requires_grad and not z_old.requires_grad  # KD reaches the student only
        kd_values.append(float(real_norm(z - z_old).detach()))
        return real_norm(z - z_old)

    def spy_copy(module):
        copies.append((real_copy(module), copy.deepcopy(module.state_dict())))
        return copies[-1][0]

    monkeypatch.setattr(nv, "feature_distillation", spy_kd)
    monkeypatch.setattr(nv, "frozen_copy", spy_copy)
    m = small()
    train(m, 0, range(0, 3))
    assert not kd_values  # phase 0: no distillation
    w0, mu0 = m.codebook.clone(), m.means.clone()
    train(m, 1, range(3, 5))
    assert kd_values[0] == 0.0 and max(kd_values) > 0  # BN-free encoder: 0 at the first step
    assert m.codebook.shape[0] == 20 and torch.equal(m.codebook[:12], w0)
    assert torch.equal(m.means[:12], mu0)  # old class means never updated
    w1, mu1 = m.codebook.clone(), m.means.clone()
    train(m, 2, range(5, 6))
    assert torch.equal(m.codebook[:20], w1) and torch.equal(m.means[:20], mu1)
    teacher, before = copies[-1]  # the frozen network is not trained
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert m.codebook.shape == (24, 128) and m.edges.shape == (24, 24)
    assert torch.equal(m.edges, m.edges.T) and torch.equal(m.edges.diagonal(), torch.ones(24))


def test_prediction_is_cosine_to_rotation_zero_cvs():
    m = small()
    train(m, 0, range(0, 3))
    x, _ = images(4, range(0, 3), seed=7)
    z = m.encoder.eval()(x)
    expected = F.normalize(z, dim=1) @ F.normalize(m.codebook[::4], dim=1).T - 1
    assert torch.allclose(m.predict(x, CPU), expected, atol=1e-5)
    before = m.predict(x, CPU)
    m.codebook[1::4] = torch.randn(3, 128)  # rotated CVs play no part
    m.codebook[::4] *= torch.tensor([[3.0], [0.5], [2.0]])  # nor do CV norms
    assert torch.allclose(m.predict(x, CPU), before, atol=1e-5)


def test_state_holds_no_samples_and_round_trips():
    m = small()
    train(m, 0, range(0, 3))
    train(m, 1, range(3, 5))
    state = m.state_dict()
    assert set(state) == {"in_shape", "backbone", "rotations", "encoder", "codebook", "edges",
                          "means"}
    for t, classes in ((0, range(0, 3)), (1, range(3, 5))):
        x, _ = images(8, classes, seed=t)
        xr, _ = nv.rotate(x, torch.zeros(len(x), dtype=torch.int64), 4)
        assert not holds_rows(state, xr)
        assert not holds_rows(state, m.encoder.eval()(xr).detach())
    again = build_method("napa-vq", **m.get_params())
    again.load_state_dict(state)
    x, _ = images(3, range(0, 5), seed=9)
    assert torch.equal(m.predict(x, CPU), again.predict(x, CPU))
    train(m, 2, range(5, 6))  # continuing after the round trip is exact
    train(again, 2, range(5, 6))
    assert torch.equal(m.codebook, again.codebook) and torch.equal(m.edges, again.edges)
    assert torch.equal(m.predict(x, CPU), again.predict(x, CPU))


def test_vectors_turn_the_rotation_trick_off():
    m = small()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 10, generator=g), torch.arange(3).repeat_interleave(4)
    stats = m.train_experience(x, y, ExperienceInfo(0, (0, 1, 2), 2, 0), CPU, progress=False)
    assert stats["rotations"] == 1 and m.codebook.shape[0] == 3
    assert m.predict(x, CPU).shape == (12, 3)


def test_the_index_is_built_once_per_experience_not_per_predict(index_builds):
    builds = index_builds
    m = small()
    train(m, 0, range(0, 2))
    x, _ = images(2, range(0, 4), seed=5)
    first = m.predict(x, CPU)
    for _ in range(3):
        assert torch.equal(m.predict(x, CPU), first)
    assert builds == [2]
    train(m, 1, range(2, 4))
    m.predict(x, CPU)
    m.predict(x, CPU)
    assert builds == [2, 4]
