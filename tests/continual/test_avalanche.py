"""Avalanche interop both ways (avalanche-lib >= 0.6, the `avalanche` extra)."""

from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("avalanche")

from protobench.continual.avalanche import stream_from_avalanche, to_avalanche  # noqa: E402
from protobench.continual.stream import StreamSpec, stream_from_dataset  # noqa: E402


def test_core_does_not_import_avalanche():
    import subprocess

    code = ("import sys, protobench.continual, protobench.cli, protobench.methods; "
            "print('avalanche' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def _rows(x: torch.Tensor, y: torch.Tensor) -> list[tuple]:
    return sorted((int(label), *row) for row, label in zip(x.flatten(1).tolist(), y.tolist()))


@pytest.fixture(scope="module")
def small_stream():
    return stream_from_dataset("digits", StreamSpec(3, base_classes=4, seed=1), image_size=8)


def test_export_then_import_round_trips(small_stream):
    s = small_stream
    bm = to_avalanche(s)
    assert len(bm.train_stream) == 3 and len(bm.test_stream) == 3
    for t, exp in enumerate(bm.train_stream):
        assert sorted(exp.classes_in_this_experience) == list(s.classes(t))
        assert len(exp.dataset) == len(s.experience(t).train_indices)
    back = stream_from_avalanche(bm)
    assert back.sizes == s.sizes == (4, 3, 3)
    assert back.class_order == tuple(range(10))
    for t in range(3):
        x0, y0 = s.inputs(s.train, s.experience(t).train_indices)
        x1, y1 = back.inputs(back.train, back.experience(t).train_indices)
        assert _rows(x0, y0) == _rows(x1, y1)  # the same samples, in any order
    assert len(back.test) == len(s.test)


def test_task_labels_on_export(small_stream):
    bm = to_avalanche(small_stream, task_labels=True)
    assert [exp.task_label for exp in bm.train_stream] == [0, 1, 2]


def test_import_class_incremental_benchmark_and_nc_benchmark():
    from avalanche.benchmarks import nc_benchmark
    from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 4, generator=g)
    y = torch.arange(6).repeat(20)

    class WithTargets(TensorDataset):
        targets = y.tolist()

    order = [5, 1, 3, 0, 2, 4]
    bm = class_incremental_benchmark({"train": WithTargets(x, y), "test": WithTargets(x, y)},
                                     class_order=order, num_classes_per_exp=[2, 2, 2])
    s = stream_from_avalanche(bm)
    assert s.sizes == (2, 2, 2)
    assert s.class_order == (1, 5, 0, 3, 2, 4)  # ascending ids within an experience
    assert s.class_names[:2] == ("1", "5")
    first, labels = s.inputs(s.train, s.experience(0).train_indices)
    pick = (y == 1) | (y == 5)
    assert _rows(first, labels) == _rows(x[pick], (y[pick] == 5).long())

    nc = nc_benchmark(TensorDataset(x, y), TensorDataset(x, y), n_experiences=3,
                      task_labels=False, fixed_class_order=order)
    s2 = stream_from_avalanche(nc)
    assert s2.class_order == s.class_order and s2.sizes == (2, 2, 2)


def test_avalanche_strategy_runs_on_our_stream(small_stream):
    from avalanche.training.supervised import Naive

    bm = to_avalanche(small_stream)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                     train_mb_size=64, train_epochs=1, eval_mb_size=256, device="cpu")
    for exp in bm.train_stream:
        strategy.train(exp)
    results = strategy.eval(bm.test_stream)
    key = [k for k in results if k.startswith("Top1_Acc_Stream/eval_phase/test_stream")]
    assert key and 0 <= results[key[0]] <= 1
