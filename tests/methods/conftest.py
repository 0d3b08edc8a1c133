"""Fixtures for the method tests: a tiny randomly initialised open_clip model, a counter
of prototype-index builds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from protobench.geometry import prototypes as protos_mod
from protobench.geometry.index import PrototypeIndex

TINY_CLIP = {"embed_dim": 64,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8,
                            "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                          "layers": 2}}


def register_tiny_clip(folder: Path, name: str) -> str:
    """Registers the 3.4M-parameter open_clip config (ViT 32x32, d = 64) as ``name``; with
    ``pretrained="none"`` the real open_clip code path runs offline (skips without it)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported
    try:
        import open_clip
    except Exception as exc:  # noqa: BLE001  (torchvision build mismatches raise RuntimeError)
        pytest.skip(f"open_clip (extra 'clip') cannot be imported: {exc}")
    path = folder / f"{name}.json"
    path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(path)
    return name


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    return register_tiny_clip(tmp_path_factory.mktemp("clip"), "pb-tiny-clip")


@pytest.fixture
def index_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of every PrototypeIndex built through :mod:`protobench.geometry.prototypes`
    while the test runs (to check an index is built once, not per call)."""
    builds: list[int] = []

    class Counting(PrototypeIndex):
        def __post_init__(self) -> None:
            builds.append(len(self.prototypes))
            super().__post_init__()

    monkeypatch.setattr(protos_mod, "PrototypeIndex", Counting)
    return builds
