"""Fixtures for the dataset tests: real Omniglot and tiny fakes."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

OMNIGLOT_DIR = Path(os.environ.get(
    "PROTOBENCH_OMNIGLOT_DIR",
    Path(__file__).resolve().parents[3] / "shared" / "data" / "omniglot",
))


@pytest.fixture(scope="session")
def omniglot_root() -> Path:
    """The real Omniglot files (small background sets + all_runs.zip)."""
    if not (OMNIGLOT_DIR / "images_background_small1.zip").is_file():
        pytest.skip(f"real Omniglot data not found in {OMNIGLOT_DIR} "
                    "(set PROTOBENCH_OMNIGLOT_DIR to a folder holding the zips)")
    return OMNIGLOT_DIR


def drawing(rng: np.random.Generator, size: int = 105) -> Image.Image:
    """A 1-bit image, white background with a few black (ink) blocks."""
    a = np.ones((size, size), dtype=bool)
    for _ in range(3):
        r, c = rng.integers(0, size - 20, 2)
        a[r:r + rng.integers(5, 20), c:c + rng.integers(5, 20)] = False
    return Image.fromarray(a)  # bool array -> mode "1"


def write_fake_omniglot(root: Path, stem: str, alphabets: dict[str, int], drawings: int = 20,
                        as_zip: bool = True, seed: int = 0) -> Path:
    """``root/<stem>.zip`` (or folder) laid out like the official archives."""
    rng = np.random.default_rng(seed)
    folder = root / stem
    for alphabet, n_chars in alphabets.items():
        for c in range(1, n_chars + 1):
            d = folder / alphabet / f"character{c:02d}"
            d.mkdir(parents=True)
            for k in range(1, drawings + 1):
                drawing(rng).save(d / f"{c:02d}{k:02d}_{k:02d}.png")
    if not as_zip:
        return folder
    zpath = root / f"{stem}.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in sorted(folder.rglob("*")):
            z.write(p, p.relative_to(root).as_posix())
    for p in sorted(folder.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    folder.rmdir()
    return zpath


@pytest.fixture
def fake_omniglot():
    """:func:`write_fake_omniglot`, as a fixture (test modules do not import conftest)."""
    return write_fake_omniglot
