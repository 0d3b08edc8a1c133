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


@pytest.fixture
def blobs() -> LabeledData:
    return make_features()
