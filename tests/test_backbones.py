"""Backbones: output shapes, parameter counts and input-shape errors."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from protobench.backbones import build_backbone, count_parameters, default_backbone
from protobench.cli import app
from protobench.errors import RegistryError, SpecError


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


@pytest.mark.parametrize("name, in_shape, message", [
    ("conv4", (1, 8, 8), "conv4 needs inputs of at least 16x16, got 8"),
    ("conv4", (64,), "conv4 needs image inputs"),
    ("resnet18", (64,), "resnet18 needs image inputs"),
    ("resnet32", (64,), "resnet32 needs image inputs"),
])
def test_impossible_input_shapes_are_spec_errors_naming_the_fix(name, in_shape, message):
    with pytest.raises(SpecError, match=message) as err:
        build_backbone(name, in_shape)
    assert "--backbone mlp" in str(err.value)  # the fix


def test_protonet_conv4_on_8x8_images_exits_2_with_the_fix(tmp_path):
    """The default ProtoNet encoder (conv4) cannot take -o image_size=8: one error line and
    exit code 2, no traceback and no row."""
    store = tmp_path / "r.sqlite"
    res = CliRunner().invoke(app, ["fewshot", "-d", "digits", "-m", "protonet", "-o",
                                   "image_size=8", "--train-steps", "1", "--episodes", "5",
                                   "--no-progress", "--store", str(store)])
    assert res.exit_code == 2, res.output
    assert "conv4 needs inputs of at least 16x16, got 8" in res.output
    assert "-o image_size=16" in res.output and "--backbone mlp" in res.output
    assert "Traceback" not in res.output and not store.exists()
