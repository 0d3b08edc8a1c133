"""Backbones: output shapes and parameter counts."""

from __future__ import annotations

import pytest
import torch

from protobench.backbones import build_backbone, count_parameters, default_backbone
from protobench.errors import RegistryError


@pytest.mark.parametrize("name, in_shape, dim, params", [
    ("resnet18", (3, 32, 32), 512, 11_168_832),  # PASS / NAPA-VQ resnet18 without its fc
    ("resnet32", (3, 32, 32), 64, 463_504),  # He et al.'s 0.46M (option A shortcuts)
    ("resnet18", (1, 28, 28), 512, None),
    ("conv4", (1, 28, 28), 64, None),
    ("mlp", (1, 8, 8), 128, None),
])
def test_output_shape_and_parameters(name, in_shape, dim, params):
    net = build_backbone(name, in_shape).eval()
    with torch.no_grad():
        z = net(torch.rand(2, *in_shape))
    assert z.shape == (2, dim) and net.out_dim == dim
    if params is not None:
        assert count_parameters(net) == params


def test_resnet18_is_the_cifar_variant():
    net = build_backbone("resnet18", (3, 32, 32))
    stem = net.stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    with torch.no_grad():
        assert (net.eval()(torch.rand(2, 3, 32, 32)) >= 0).all()  # post-ReLU features


def test_resnet32_has_three_stages_of_five_blocks():
    net = build_backbone("resnet32", (3, 32, 32))
    widths = [b.conv2.out_channels for b in net.layers]
    assert widths == [16] * 5 + [32] * 5 + [64] * 5
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 31  # + the classifier = 32 layers


def test_default_backbone_and_errors():
    assert default_backbone((3, 32, 32)) == "resnet18"
    assert default_backbone((1, 28, 28)) == "conv4"
    assert default_backbone((1, 8, 8)) == "mlp" and default_backbone((64,)) == "mlp"
    with pytest.raises(RegistryError, match="resnet32"):
        build_backbone("resnet50", (3, 32, 32))
    with pytest.raises(ValueError, match="image inputs"):
        build_backbone("resnet32", (64,))
