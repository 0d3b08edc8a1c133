import subprocess
import sys

import pytest
import torch

from protobench.datasets.base import LabeledData
from protobench.episodic import EpisodeSpec, make_episodes, sample_episodes
from protobench.episodic import sampler as sampler_mod
from protobench.errors import SpecError
from tests.conftest import make_features


def test_episode_structure(blobs):
    spec = EpisodeSpec(ways=5, shots=3, queries=4, episodes=300, seed=7)
    idx, classes = sample_episodes(blobs, spec)
    assert idx.shape == (300, 5, 7) and idx.dtype == torch.int64
    assert classes.shape == (300, 5)
    # N distinct classes per episode
    assert (classes.sort(1).values.diff(dim=1) > 0).all()
    # every sample belongs to its episode's class; support and query disjoint
    assert torch.equal(blobs.labels[idx], classes.unsqueeze(-1).expand_as(idx))
    flat = idx.flatten(1)
    assert (flat.sort(1).values.diff(dim=1) > 0).all()


def test_unequal_class_sizes_never_pick_padding():
    labels = torch.tensor([0] * 5 + [1] * 9 + [2] * 6 + [3] * 20)
    data = LabeledData(torch.randn(len(labels), 3), labels, ("a", "b", "c", "d"), "t", "test")
    idx, classes = sample_episodes(data, EpisodeSpec(3, 2, 3, 500, seed=1))
    assert (idx >= 0).all()
    assert torch.equal(data.labels[idx], classes.unsqueeze(-1).expand_as(idx))


def test_seed_determinism_and_difference(blobs):
    a = make_episodes(blobs, EpisodeSpec(5, 1, 15, 200, seed=3))
    b = make_episodes(blobs, EpisodeSpec(5, 1, 15, 200, seed=3))
    c = make_episodes(blobs, EpisodeSpec(5, 1, 15, 200, seed=4))
    assert torch.equal(a.indices, b.indices) and a.hash == b.hash
    assert not torch.equal(a.indices, c.indices) and a.hash != c.hash


def test_chunks_regenerate_alone(blobs, monkeypatch):
    monkeypatch.setattr(sampler_mod, "CHUNK", 64)
    full, _ = sample_episodes(blobs, EpisodeSpec(5, 1, 5, 200, seed=9))
    tail, _ = sample_episodes(blobs, EpisodeSpec(5, 1, 5, 64, seed=9))
    assert torch.equal(full[:64], tail)


def test_identical_across_processes(blobs):
    code = (
        "from tests.conftest import make_features;"
        "from protobench.episodic import EpisodeSpec, make_episodes;"
        "print(make_episodes(make_features(), EpisodeSpec(5, 5, 15, 500, seed=11)).hash)"
    )
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip() for _ in range(2)}
    here = make_episodes(make_features(), EpisodeSpec(5, 5, 15, 500, seed=11)).hash
    assert outs == {here}


def test_classes_are_roughly_uniform():
    data = make_features(n_classes=10, per_class=20)
    _, classes = sample_episodes(data, EpisodeSpec(2, 1, 1, 20000, seed=0))
    freq = torch.bincount(classes.flatten(), minlength=10).double() / classes.numel()
    assert torch.allclose(freq, torch.full((10,), 0.1, dtype=torch.float64), atol=0.01)


def test_errors_name_the_problem(blobs):
    with pytest.raises(SpecError, match="13-way.*has 12.*--ways"):
        sample_episodes(blobs, EpisodeSpec(13, 1, 1, 1))
    labels = torch.tensor([0] * 3 + [1] * 30 + [2] * 30)
    data = LabeledData(torch.randn(63, 2), labels, ("rare", "b", "c"), "t", "test")
    with pytest.raises(SpecError, match="rare.*smallest has 3"):
        sample_episodes(data, EpisodeSpec(2, 2, 2, 1))
    with pytest.raises(SpecError, match="shots must be a positive integer"):
        EpisodeSpec(5, 0)


@pytest.mark.parametrize("per_class", [6, 30])  # 6: Floyd's draws; 30 of 30: the top-k path
def test_draws_are_uniform_subsets_in_uniform_order(per_class, monkeypatch):
    calls = []
    floyd = sampler_mod._floyd
    monkeypatch.setattr(sampler_mod, "_floyd", lambda *a: calls.append(1) or floyd(*a))
    # 3 classes of `per_class` samples; 1 shot + 2 queries per class
    labels = torch.arange(3).repeat_interleave(per_class)
    data = LabeledData(torch.zeros(len(labels), 1), labels, ("a", "b", "c"), "t", "test")
    spec = EpisodeSpec(2, 1, 2, 20000, seed=5) if per_class == 6 else \
        EpisodeSpec(2, 1, 29, 20000, seed=5)
    idx, classes = sample_episodes(data, spec)
    assert bool(calls) == (per_class == 6)  # Floyd's draws, else the top-k path
    pos = (idx - classes.unsqueeze(-1) * per_class).reshape(-1, spec.per_class)  # 0..n-1
    # the support sample is uniform over the class, whatever the algorithm's draw order
    freq = torch.bincount(pos[:, 0], minlength=per_class).double() / len(pos)
    assert torch.allclose(freq, torch.full((per_class,), 1 / per_class, dtype=torch.float64),
                          atol=0.006)
    if per_class == 6:
        # every 3-subset of 6 (20 of them) equally likely
        subsets = pos.sort(1).values
        code = (subsets * torch.tensor([36, 6, 1])).sum(1)
        counts = torch.bincount(code, minlength=216)
        seen = counts[counts > 0].double() / len(pos)
        assert len(seen) == 20
        assert torch.allclose(seen, torch.full((20,), 0.05, dtype=torch.float64), atol=0.006)



def _floyd_torch(n, m, g):
    """The vectorised torch form of Floyd's slots (the sampler's before it was compiled)."""
    rows = len(n)
    u = torch.rand(rows, m, generator=g, dtype=torch.float64)
    out = torch.empty(rows, m, dtype=torch.int64)
    for i in range(m):
        j = n - m + i
        t = torch.minimum((u[:, i] * (j + 1)).long(), j)
        if i:
            t = torch.where((out[:, :i] == t.unsqueeze(1)).any(1), j, t)
        out[:, i] = t
    order = torch.rand(rows, m, generator=g).argsort(dim=1)
    return out.gather(1, order)


@pytest.mark.parametrize("m", [1, 2, 6, 20, 40])
def test_compiled_floyd_equals_the_torch_loop(m):
    n = torch.randint(m, 3 * m + 5, (5000,), generator=torch.Generator().manual_seed(m))
    n[:50] = m  # every position taken: the "j instead" branch on every slot
    got = sampler_mod._floyd(n, m, torch.Generator().manual_seed(7))
    ref = _floyd_torch(n, m, torch.Generator().manual_seed(7))
    assert torch.equal(got, ref)
    assert (got < n.unsqueeze(1)).all() and (got >= 0).all()
    assert (got.sort(1).values.diff(dim=1) > 0).all()  # distinct within each row


def test_slot_order_equals_torch_argsort_with_and_without_ties():
    from protobench.episodic.floyd import shuffle_slots

    g = torch.Generator().manual_seed(3)
    slots = torch.randint(0, 1000, (6000, 20), generator=g)
    for keys in (torch.rand(6000, 20, generator=g),  # distinct keys: one sorted order
                 torch.randint(0, 6, (6000, 20), generator=g).float()):  # ties everywhere
        assert torch.equal(shuffle_slots(slots, keys), slots.gather(1, keys.argsort(dim=1)))
    keys = torch.rand(6000, 20, generator=g)
    keys[::97, 3] = keys[::97, 11]  # a few tied rows among distinct ones
    assert torch.equal(shuffle_slots(slots, keys), slots.gather(1, keys.argsort(dim=1)))
