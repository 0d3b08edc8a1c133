"""Shared fixtures: tiny deterministic data built in the test."""

from __future__ import annotations

import pytest
import torch

from protobench.datasets.base import LabeledData


def make_features(n_classes: int = 12, per_class: int = 25, dim: int = 16, seed: int = 0,
                  spread: float = 1.0) -> LabeledData:
    """Gaussian blobs: class c centred at a random mean, ``per_class`` samples each."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n_classes, dim, generator=g) * 3
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    x = means[labels] + spread * torch.randn(len(labels), dim, generator=g)
    return LabeledData(x=x, labels=labels, class_names=tuple(f"c{i}" for i in range(n_classes)),
                       name="blobs", split="test")


@pytest.fixture(scope="session", autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory):
    """Every test caches (features, decoded images) and downloads into temporary folders,
    never ~/.cache; subprocesses inherit the variables."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROTOBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("PROTOBENCH_DATA", str(tmp_path_factory.mktemp("data")))
        mp.setenv("PROTOBENCH_RUNS", str(tmp_path_factory.mktemp("runs")))
        yield


@pytest.fixture
def one_thread():
    """Tiny models train fastest on one thread (and do not stall when the cores are busy)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits_stream():
    """digits at 8x8, 5 experiences of 2 classes, seeded order, 20% held out per class."""
    from protobench.continual.stream import StreamSpec, stream_from_dataset

    return stream_from_dataset("digits", StreamSpec(5, seed=0), image_size=8)


@pytest.fixture
def blobs() -> LabeledData:
    return make_features()
