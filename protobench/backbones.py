"""Feature extractors, registered by name.

``build_backbone(name, in_shape)`` returns an ``nn.Module`` mapping ``[B, *in_shape]``
to ``[B, D]`` and exposing ``out_dim``.

- ``conv4``: the ProtoNet encoder (4 x [conv3x3(64) -> BN -> ReLU -> maxpool2]),
  flattened; 28x28 -> 64-d, 84x84 -> 1600-d, 32x32 -> 256-d.
- ``mlp``: a two-layer MLP for tiny inputs (flatten -> 256 -> ReLU -> 128).
- ``identity``: flattened raw inputs (features files, pixel baselines).
- ``resnet18``: ResNet-18 for small images (the CIFAR variant of PASS / NAPA-VQ / PRD:
  3x3 stride-1 stem, no max-pool, [2, 2, 2, 2] basic blocks of 64-512 channels, global
  average pool) -> 512-d, post-ReLU; ~11.17M parameters for RGB inputs.
- ``resnet34``: the same CIFAR variant with [3, 4, 6, 3] basic blocks (PALM's encoder)
  -> 512-d; ~21.28M parameters for RGB inputs.
- ``resnet32``: the CIFAR ResNet-32 of He et al. (2016) as used by iCaRL / PODNet:
  3x3 stem of 16 channels, 3 stages of 5 basic blocks (16/32/64 channels, stride 1/2/2),
  parameter-free shortcuts (option A: subsample + zero-pad channels), global average
  pool -> 64-d; ~0.46M parameters.

:func:`default_backbone` picks one for an input shape (``mlp`` for vectors, ``conv4``
for small images, ``resnet18`` from 32x32 up).

Training speed (:class:`TrainSpeed`, :func:`speed_up`): a training loop runs its backbone
through ``with speed_up(encoder, speed) as fast:``, which can compile it
(``torch.compile``), store its 4-d weights and inputs channels-last, and run it under
bfloat16 autocast (output cast back to float32). All off by default, and then ``fast`` *is*
the encoder (bit-identical to a plain loop). Measured in ``benchmarks/training_speed.py``
(``benchmarks/results/training_speed.md``; Conv-4, Omniglot, 2-core AVX-512/AMX CPU):
``compile`` matches float32 to rounding (1e-4 relative on a first-step gradient, as float32
with another thread count) and is 1.1-1.25x faster once compiled; ``channels_last`` is
1.2-1.25x faster but its convolution kernels move a first-step gradient by 1e-2 relative;
``amp`` is 1.5x faster (2.1-2.5x with channels-last) at bfloat16 precision (1e-2). The
default stays float32 with every option off: it keeps every recorded result bit-identical,
compile pays seconds to a minute up front, and the faster layouts are not float32-exact.
A compile that cannot build (on CPU inductor needs a C++ compiler) stops with a
:class:`UserError` naming the fix rather than falling back silently: the option was asked
for explicitly, and dropping it changes no number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from protobench.errors import SpecError, UserError
from protobench.registry import Registry, parameters

Builder = Callable[..., nn.Module]
BACKBONES: Registry[Builder] = Registry(
    "backbone", describer=lambda name, fn: {"parameters": parameters(fn, skip=("in_shape",))})
"""Every registered backbone builder by name (``protobench list backbones``); ``describe``
lists the builder's options besides ``in_shape``."""


def register_backbone(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(in_shape, **options) -> nn.Module`` as ``name``; a name
    registered twice is refused."""
    return BACKBONES.register(name)


def list_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return BACKBONES.names()


def build_backbone(name: str, in_shape: tuple[int, ...], **kwargs: object) -> nn.Module:
    """The backbone ``name`` for inputs ``[B, *in_shape]``; unknown names list the valid ones."""
    return BACKBONES.get(name)(tuple(in_shape), **kwargs)


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.MaxPool2d(2))


class Conv4(nn.Module):
    """Snell et al. (2017) encoder; PyTorch default init, as the official code."""

    def __init__(self, in_channels: int = 1, hidden: int = 64, out_channels: int = 64,
                 image_size: int = 28) -> None:
        super().__init__()
        self.encoder = nn.Sequential(conv_block(in_channels, hidden), conv_block(hidden, hidden),
                                     conv_block(hidden, hidden), conv_block(hidden, out_channels))
        side = image_size
        for _ in range(4):
            side //= 2
        if side < 1:
            raise SpecError(f"conv4 needs inputs of at least 16x16, got {image_size}; load "
                            "larger images (-o image_size=16 or more) or use --backbone mlp")
        self.out_dim = out_channels * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).flatten(1)


@register_backbone("conv4")
def _conv4(in_shape: tuple[int, ...], hidden: int = 64) -> nn.Module:
    """ProtoNet encoder (Snell et al. 2017): 4 x [conv3x3 -> BN -> ReLU -> maxpool2]."""
    if len(in_shape) != 3:
        raise SpecError(f"conv4 needs image inputs [C, H, W], got {in_shape}; use --backbone "
                        "mlp for feature vectors")
    return Conv4(in_shape[0], hidden, hidden, in_shape[1])


class MLP(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 256, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, out_dim))
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_backbone("mlp")
def _mlp(in_shape: tuple[int, ...], hidden: int = 256, out_dim: int = 128) -> nn.Module:
    """Two-layer MLP for tiny inputs: flatten -> hidden -> ReLU -> out_dim."""
    return MLP(math.prod(in_shape), hidden, out_dim)


class Identity(nn.Module):
    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


@register_backbone("identity")
def _identity(in_shape: tuple[int, ...]) -> nn.Module:
    """Flattened raw inputs (features files, pixel baselines)."""
    return Identity(math.prod(in_shape))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a residual connection (He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, shortcut: str = "conv") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            if shortcut == "conv":  # option B: 1x1 projection
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                              nn.BatchNorm2d(cout))
            else:  # option A: subsample and zero-pad the new channels
                self.shortcut = _PadShortcut(cout - cin, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class _PadShortcut(nn.Module):
    def __init__(self, extra: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = extra, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        lo = self.extra // 2
        return nn.functional.pad(x, (0, 0, 0, 0, lo, self.extra - lo))


class ResNet(nn.Module):
    """Stem conv3x3 -> BN -> ReLU, stages of basic blocks, global average pool: ``[B, D]``."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], blocks: tuple[int, ...],
                 stem: int, shortcut: str) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(stem), nn.ReLU())
        layers, cin = [], stem
        for i, (width, n) in enumerate(zip(widths, blocks)):
            for b in range(n):
                layers.append(BasicBlock(cin, width, 2 if (b == 0 and i > 0) else 1, shortcut))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.out_dim = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x)).mean(dim=(2, 3))


def _image_channels(name: str, in_shape: tuple[int, ...]) -> int:
    if len(in_shape) != 3:
        raise SpecError(f"{name} needs image inputs [C, H, W], got {in_shape}; use --backbone "
                        "mlp for feature vectors")
    return in_shape[0]


@register_backbone("resnet18")
def _resnet18(in_shape: tuple[int, ...], width: int = 64) -> nn.Module:
    """CIFAR ResNet-18 (3x3 stem, no max-pool, [2, 2, 2, 2] blocks) -> 8 * width (512)."""
    w = int(width)
    return ResNet(_image_channels("resnet18", in_shape), (w, 2 * w, 4 * w, 8 * w),
                  (2, 2, 2, 2), w, "conv")


@register_backbone("resnet34")
def _resnet34(in_shape: tuple[int, ...], width: int = 64) -> nn.Module:
    """CIFAR ResNet-34 ([3, 4, 6, 3] blocks; PALM's encoder) -> 8 * width (512)."""
    w = int(width)
    return ResNet(_image_channels("resnet34", in_shape), (w, 2 * w, 4 * w, 8 * w),
                  (3, 4, 6, 3), w, "conv")


@register_backbone("resnet32")
def _resnet32(in_shape: tuple[int, ...]) -> nn.Module:
    """CIFAR ResNet-32 of iCaRL / PODNet (16/32/64 channels, option-A shortcuts) -> 64."""
    return ResNet(_image_channels("resnet32", in_shape), (16, 32, 64), (5, 5, 5), 16, "pad")


def default_backbone(in_shape: tuple[int, ...]) -> str:
    """``mlp`` for vectors and images under 16x16, ``conv4`` under 32x32, else ``resnet18``."""
    if len(in_shape) != 3 or min(in_shape[1:]) < 16:
        return "mlp"
    return "conv4" if min(in_shape[1:]) < 32 else "resnet18"


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def extract_features(
    backbone: nn.Module, get: Callable[[torch.Tensor], torch.Tensor], n: int,
    device: torch.device, batch_size: int = 512,
) -> torch.Tensor:
    """Features ``[n, D]`` of samples ``0..n-1`` (``get(idx)`` loads a batch), eval mode, CPU out."""
    was_training = backbone.training
    backbone.eval().to(device)
    out = []
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        out.append(backbone(get(idx).to(device)).float().cpu())
    backbone.train(was_training)
    return torch.cat(out) if out else torch.empty(0, getattr(backbone, "out_dim", 0))


SPEED_OPTIONS = ("amp", "compile", "channels_last")
"""The training-speed parameters a method takes (``-p compile=true``)."""


def speed_option(name: str, value: object) -> bool | None:
    """A speed option as a method stores it: ``True`` when on, ``None`` when off.

    Off (``False`` or ``None``) is stored as ``None``, which a leaderboard row's identity
    leaves out (an unset value), so a run with the options off has the identity of a run
    from before they existed. Anything but a boolean is refused.
    """
    if value is None or value is False:
        return None
    if value is True:
        return True
    raise UserError(f"{name} must be true or false, got {value!r}; e.g. -p {name}=true")


def speed_options(amp: object, compile: object, channels_last: object
                  ) -> tuple[bool | None, bool | None, bool | None]:
    """``(amp, compile, channels_last)`` checked and stored as :func:`speed_option` does."""
    return (speed_option("amp", amp), speed_option("compile", compile),
            speed_option("channels_last", channels_last))


@dataclass(frozen=True)
class TrainSpeed:
    """How a training loop runs its backbone (see the module docstring)."""

    compile: bool = False
    """``torch.compile`` the backbone (inductor; the first steps pay the compile)."""
    channels_last: bool = False
    """4-d weights and inputs in ``torch.channels_last`` memory format during training."""
    amp: bool = False
    """bfloat16 autocast of the backbone's forward; its output is cast to float32."""

    @classmethod
    def of(cls, method: object) -> TrainSpeed:
        """The options stored on ``method`` (attributes ``compile``, ``channels_last``,
        ``amp``; missing or ``None`` = off)."""
        return cls(bool(getattr(method, "compile", None)),
                   bool(getattr(method, "channels_last", None)),
                   bool(getattr(method, "amp", None)))

    @property
    def plain(self) -> bool:
        """Every option off: the loop runs the backbone itself."""
        return not (self.compile or self.channels_last or self.amp)


class _Fast(nn.Module):
    """``module``'s forward under ``speed``: inputs ``[B, C, H, W]`` made channels-last,
    bfloat16 autocast with a float32 output, the compiled module."""

    def __init__(self, module: nn.Module, speed: TrainSpeed) -> None:
        super().__init__()
        self.speed = speed
        self.out_dim = getattr(module, "out_dim", None)
        self.module = torch.compile(module) if speed.compile else module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.speed.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        try:
            if self.speed.amp:
                with torch.autocast(x.device.type, dtype=torch.bfloat16):
                    z = self.module(x).float()
            else:  # an autocast region around the call (ProtoNet's amp) stays in force
                z = self.module(x)
        except Exception as exc:
            if self.speed.compile and _compile_failed(exc):
                reason = _first_line(getattr(exc, "inner_exception", exc))
                raise UserError(
                    f"compile=true: torch.compile could not build the backbone ({reason}); "
                    "on CPU it needs a working C++ compiler (install g++, or point "
                    "torch._inductor.config.cpp.cxx at one), or drop -p compile=true (it "
                    "changes the speed, not the results)") from exc
            raise
        return z


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _compile_failed(exc: BaseException) -> bool:
    """True for torch.compile's backend failures (e.g. inductor without a C++ compiler)."""
    from torch._dynamo.exc import BackendCompilerFailed

    return isinstance(exc, BackendCompilerFailed)


@contextmanager
def speed_up(module: nn.Module, speed: TrainSpeed) -> Iterator[nn.Module]:
    """``with speed_up(encoder, speed) as fast:`` train through ``fast(x)``.

    ``fast`` shares ``module``'s parameters (an optimiser over ``module.parameters()``
    trains it); with every option off it is ``module`` itself. ``channels_last`` converts
    the 4-d weights on entry and back to the contiguous format on exit, so what is saved,
    hashed and evaluated afterwards is laid out as always; ``module`` is never replaced
    (its ``state_dict`` keys stay, compiled or not).
    """
    if speed.plain:
        yield module
        return
    if speed.channels_last:
        module.to(memory_format=torch.channels_last)
    try:
        yield _Fast(module, speed)
    finally:
        if speed.channels_last:
            module.to(memory_format=torch.contiguous_format)
