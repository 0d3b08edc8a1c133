"""Fixtures for the method tests: a tiny randomly initialised open_clip model."""

from __future__ import annotations

import json
import os

import pytest

TINY_CLIP = {"embed_dim": 64,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8,
                            "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                          "layers": 2}}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Registers a 3.4M-parameter open_clip config (ViT 32x32, d = 64) and returns its name;
    with ``--pretrained none`` the real open_clip code path runs offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported
    try:
        import open_clip
    except Exception as exc:  # noqa: BLE001  (torchvision build mismatches raise RuntimeError)
        pytest.skip(f"open_clip (extra 'clip') cannot be imported: {exc}")
    path = tmp_path_factory.mktemp("clip") / "pb-tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(path)
    return "pb-tiny-clip"
