import random

import pytest
import torch

from protobench.datasets import load_dataset
from protobench.episodic import EpisodeSpec, make_episodes
from protobench.evaluation import evaluate_episodes
from protobench.interop.learn2learn import (
    episodes_from_taskset,
    labeled_data_from_taskset,
    taskset_from_episodes,
)

l2l = pytest.importorskip("learn2learn", reason="learn2learn extra not installed (make install)")


class _Digits(torch.utils.data.Dataset):
    """digits pixels plus fixed noise: continuous values, so no exact distance ties."""

    def __init__(self):
        self.data = load_dataset("digits", "test", image_size=8)
        g = torch.Generator().manual_seed(0)
        self.x = self.data.x.flatten(1) + 0.01 * torch.randn(len(self.data), 64, generator=g)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.x[i], int(self.data.labels[i])


def _taskset(ways=5, per_class=6, num_tasks=-1):
    meta = l2l.data.MetaDataset(_Digits())
    tf = [l2l.data.transforms.NWays(meta, ways), l2l.data.transforms.KShots(meta, per_class),
          l2l.data.transforms.LoadData(meta), l2l.data.transforms.RemapLabels(meta),
          l2l.data.transforms.ConsecutiveLabels(meta)]
    return l2l.data.Taskset(meta, task_transforms=tf, num_tasks=num_tasks)


def test_l2l_tasks_are_evaluated_by_our_evaluator_like_its_own_loop():
    taskset = _taskset(num_tasks=40)
    data = labeled_data_from_taskset(taskset, name="digits-l2l")
    eps = episodes_from_taskset(taskset, 40, shots=1, seed=0, data=data)
    assert eps.indices.shape == (40, 5, 6)
    # every episode sample belongs to its class, 5 distinct classes
    assert torch.equal(data.labels[eps.indices], eps.classes.unsqueeze(-1).expand_as(eps.indices))
    ours = evaluate_episodes(data.x, eps)
    # learn2learn's own ProtoNet loop (protonet_miniimagenet.py) on the same cached tasks
    accs = []
    for i in range(40):
        x, y = taskset[i]
        order = torch.sort(y, stable=True)
        x, y = x[order.indices], order.values
        support_mask = torch.zeros(len(y), dtype=torch.bool)
        support_mask[torch.arange(5) * 6] = True
        protos = x[support_mask].reshape(5, 1, -1).mean(1)
        q, ql = x[~support_mask], y[~support_mask]
        logits = -((q.unsqueeze(1) - protos.unsqueeze(0)) ** 2).sum(-1)
        accs.append((logits.argmax(1) == ql).float().mean().item())
    assert torch.allclose(ours.accuracies, torch.tensor(accs, dtype=torch.float64), atol=1e-6)


def test_seeded_draws_are_reproducible_and_restore_global_random():
    taskset = _taskset()
    random.seed(123)
    expected_next = random.random()
    random.seed(123)
    a = episodes_from_taskset(taskset, 10, shots=2, seed=7)
    assert random.random() == expected_next
    b = episodes_from_taskset(taskset, 10, shots=2, seed=7)
    assert torch.equal(a.indices, b.indices) and a.hash == b.hash


def test_our_episodes_replay_exactly_in_learn2learn():
    data = load_dataset("digits", "test", image_size=8)
    eps = make_episodes(data, EpisodeSpec(3, 2, 4, 12, seed=1))
    taskset = taskset_from_episodes(eps, _Digits())
    assert len(taskset) == 12
    for e in (0, 5, 11):
        x, y = taskset[e]
        flat = eps.indices[e].reshape(-1)
        assert torch.equal(x, _Digits().x[flat])
        assert y.tolist() == [w for w in range(3) for _ in range(6)]
    # and back: the l2l task set gives the same episodes
    back = episodes_from_taskset(taskset, 12, shots=2, data=data)
    assert torch.equal(back.indices, eps.indices)


def test_unequal_tasks_are_refused():
    from protobench.errors import UserError

    meta = l2l.data.MetaDataset(_Digits())
    taskset = l2l.data.Taskset(meta, task_transforms=[l2l.data.transforms.NWays(meta, 3)],
                               num_tasks=-1)  # whole classes: unequal sizes
    with pytest.raises(UserError, match="same number"):
        episodes_from_taskset(taskset, 3, shots=1, seed=0)
