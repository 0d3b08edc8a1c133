"""Small helpers shared across subpackages: devices, hashing and counter seeds."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from protobench.errors import UserError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise UserError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from exc


SEED_STRIDE = 1_000_003  # a prime: (seed, i) pairs never collide for i < stride


def counter_seed(seed: int, i: int) -> int:
    """The seed of the ``i``-th draw (chunk, experience, episode, refresh) under ``seed``:
    ``seed * 1_000_003 + i``, the one formula every seeded loop uses."""
    return int(seed) * SEED_STRIDE + int(i)


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the form that is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def sha256_tensor(*tensors: torch.Tensor) -> str:
    """SHA-256 of the raw bytes (and shapes/dtypes) of CPU-contiguous copies of tensors."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()
