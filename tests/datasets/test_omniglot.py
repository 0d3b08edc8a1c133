"""`omniglot`: real-data checks (242 characters, splits, processing, cache) and fake-archive
checks (layouts, defaults with images_evaluation, download path, errors)."""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from protobench.datasets import cache_dir, load_dataset
from protobench.datasets import omniglot as omni
from protobench.errors import DataError, UserError

SMALL_TEST = ["Korean", "Sanskrit", "Tagalog"]


@pytest.fixture(scope="session")
def omni_train(omniglot_root):
    return load_dataset("omniglot", "train", omniglot_root)


@pytest.fixture(scope="session")
def omni_test(omniglot_root):
    return load_dataset("omniglot", "test", omniglot_root)


@pytest.fixture(scope="session")
def omni_all(omniglot_root):
    return load_dataset("omniglot", "all", omniglot_root)


# ---- real data -------------------------------------------------------------------------

def test_union_of_small_sets_has_242_distinct_characters(omni_all):
    assert omni_all.num_classes == 242
    assert len(set(omni_all.class_names)) == 242
    assert omni_all.class_counts.tolist() == [20] * 242
    assert omni_all.x.shape == (242 * 20, 1, 28, 28)
    assert omni_all.meta["sources"] == ["images_background_small1", "images_background_small2"]


def test_default_split_is_alphabet_disjoint_with_rotated_train_classes(omni_train, omni_test):
    assert omni_test.meta["alphabets"] == SMALL_TEST
    assert set(omni_test.meta["alphabet"]) == set(SMALL_TEST)
    assert omni_test.num_classes == 40 + 42 + 17  # Korean, Sanskrit, Tagalog characters
    assert set(omni_train.meta["alphabet"]).isdisjoint(omni_test.meta["alphabet"])
    train_chars = 242 - omni_test.num_classes
    assert omni_train.num_classes == 4 * train_chars
    assert sorted(set(omni_train.meta["rotation"])) == [0, 90, 180, 270]
    assert sum("/rot" in n for n in omni_train.class_names) == 3 * train_chars
    assert not any("/rot" in n for n in omni_test.class_names)
    for d in (omni_train, omni_test):
        assert (d.class_counts == 20).all()
        assert d.labels.tolist() == sorted(d.labels.tolist())  # grouped by class


def test_images_are_binary_with_ink_one(omni_test):
    x = omni_test.x
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
    assert set(torch.unique(x).tolist()) == {0.0, 1.0}
    ink = x.mean().item()
    assert 0.02 < ink < 0.4  # strokes are thin: ink is the minority value


def test_processing_is_pil_nearest_resize_inverted_and_not_transposed(omniglot_root, omni_test):
    with zipfile.ZipFile(omniglot_root / "images_background_small1.zip") as z:
        folder = "images_background_small1/Korean/character01/"
        first = min(n for n in z.namelist() if n.startswith(folder) and n.endswith(".png"))
        with Image.open(io.BytesIO(z.read(first))) as img:
            ref = 1.0 - np.asarray(img.resize((28, 28), Image.Resampling.NEAREST), dtype=np.float32)
    k = omni_test.class_names.index("Korean/character01")
    got = omni_test.x[omni_test.class_table[k, 0], 0]
    assert torch.equal(got, torch.from_numpy(ref))
    assert not torch.equal(got, got.T)  # the ProtoNet transpose is not applied


def test_rotated_classes_hold_rotated_drawings(omni_train):
    names = omni_train.class_names
    base = omni_train.x[omni_train.class_table[names.index("Greek/character01")]]
    for k, deg in enumerate((90, 180, 270), start=1):
        c = names.index(f"Greek/character01/rot{deg:03d}")
        rotated = omni_train.x[omni_train.class_table[c]]
        assert torch.equal(rotated, torch.rot90(base, k, dims=(-2, -1)))  # PIL: counter-clockwise


def test_decoded_images_are_cached_and_reload_fast(omniglot_root, omni_test):
    assert list((cache_dir() / "omniglot").glob("omniglot-*.pt"))
    start = time.perf_counter()
    again = load_dataset("omniglot", "test", omniglot_root)
    assert time.perf_counter() - start < 1.0
    assert again.checksum == omni_test.checksum


def test_sources_option_selects_archives_and_deduplicates(omniglot_root):
    one = load_dataset("omniglot", "all", omniglot_root, sources="images_background_small1")
    two = load_dataset("omniglot", "all", omniglot_root, sources=["images_background_small2"])
    assert (one.num_classes, two.num_classes) == (136, 156)
    shared = set(one.class_names) & set(two.class_names)
    assert {n.split("/")[0] for n in shared} == {"Greek", "Latin"}
    assert 136 + 156 - len(shared) == 242
    with pytest.raises(UserError, match="unknown Omniglot source"):
        load_dataset("omniglot", "all", omniglot_root, sources="images_small3")
    with pytest.raises(DataError, match="images_evaluation is not in"):
        load_dataset("omniglot", "all", omniglot_root, sources="images_evaluation")


def test_val_alphabets_option(omniglot_root, omni_train):
    with pytest.raises(UserError, match="val_alphabets="):
        load_dataset("omniglot", "val", omniglot_root)
    val = load_dataset("omniglot", "val", omniglot_root, val_alphabets="Greek,Latin")
    assert val.num_classes == 24 + 26 and val.meta["alphabets"] == ["Greek", "Latin"]
    train = load_dataset("omniglot", "train", omniglot_root, val_alphabets="Greek,Latin")
    assert train.num_classes == omni_train.num_classes - 4 * 50
    assert {"Greek", "Latin"}.isdisjoint(train.meta["alphabet"])
    with pytest.raises(UserError, match="overlap"):
        load_dataset("omniglot", "val", omniglot_root, val_alphabets="Korean")
    with pytest.raises(DataError, match="Klingon"):
        load_dataset("omniglot", "test", omniglot_root, test_alphabets="Klingon")


def test_rotations_option(omniglot_root, omni_test):
    test_all = load_dataset("omniglot", "test", omniglot_root, rotations="all")
    assert test_all.num_classes == 4 * omni_test.num_classes
    train_none = load_dataset("omniglot", "train", omniglot_root, rotations="none")
    assert train_none.num_classes == 242 - omni_test.num_classes
    with pytest.raises(UserError, match="rotations"):
        load_dataset("omniglot", "train", omniglot_root, rotations="some")


def test_character_pools_are_disjoint_seeded_halves(omniglot_root, omni_all):
    val = load_dataset("omniglot", "all", omniglot_root, character_pool="validation")
    test = load_dataset("omniglot", "all", omniglot_root, character_pool="test")
    assert val.num_classes == test.num_classes == 121
    assert not set(val.class_names) & set(test.class_names)
    assert set(val.class_names) | set(test.class_names) == set(omni_all.class_names)
    # the same halves at every load (a fixed seed), drawn at random, not the first 121
    again = load_dataset("omniglot", "all", omniglot_root, character_pool="test")
    assert again.class_names == test.class_names
    assert test.class_names != omni_all.class_names[121:]
    assert test.meta["alphabet"] == [n.split("/")[0] for n in test.class_names]
    first = test.class_names[0]  # the images follow their class
    i = omni_all.class_names.index(first)
    assert torch.equal(test.x[test.labels == 0], omni_all.x[omni_all.labels == i])
    with pytest.raises(UserError, match="character_pool"):
        load_dataset("omniglot", "all", omniglot_root, character_pool="train")


# ---- fake archives -----------------------------------------------------------------------

def test_zip_and_extracted_folder_give_the_same_data(tmp_path, fake_omniglot):
    (tmp_path / "z").mkdir()
    (tmp_path / "f").mkdir()
    fake_omniglot(tmp_path / "z", "images_background_small1", {"Korean": 2, "Runic": 1})
    fake_omniglot(tmp_path / "f", "images_background_small1", {"Korean": 2, "Runic": 1},
                        as_zip=False)
    a = load_dataset("omniglot", "all", tmp_path / "z", image_size=14)
    b = load_dataset("omniglot", "all", tmp_path / "f", image_size=14)
    assert a.class_names == b.class_names == ("Korean/character01", "Korean/character02",
                                              "Runic/character01")
    assert a.x.shape == (60, 1, 14, 14) and a.checksum == b.checksum


def test_evaluation_alphabets_are_the_default_test_split(tmp_path, fake_omniglot):
    fake_omniglot(tmp_path, "images_background", {"Alpha": 2, "Beta": 1})
    fake_omniglot(tmp_path, "images_evaluation", {"Gamma": 2}, seed=1)
    test = load_dataset("omniglot", "test", tmp_path)
    train = load_dataset("omniglot", "train", tmp_path)
    assert test.meta["alphabets"] == ["Gamma"] and test.num_classes == 2
    assert train.meta["alphabets"] == ["Alpha", "Beta"] and train.num_classes == 3 * 4


def test_download_fetches_the_official_archives(tmp_path, monkeypatch, fake_omniglot):
    server = tmp_path / "server"
    server.mkdir()
    fake_omniglot(server, "images_background", {"Alpha": 2})
    fake_omniglot(server, "images_evaluation", {"Gamma": 1}, seed=1)
    monkeypatch.setattr(omni, "BASE_URL", server.as_uri() + "/")
    root = tmp_path / "root"
    root.mkdir()
    test = load_dataset("omniglot", "test", root)
    assert sorted(p.name for p in root.iterdir()) == ["images_background.zip",
                                                     "images_evaluation.zip"]
    assert test.class_names == ("Gamma/character01",)


def test_failed_download_is_one_line_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(omni, "BASE_URL", (tmp_path / "nowhere").as_uri() + "/")
    with pytest.raises(DataError) as err:
        load_dataset("omniglot", "train", tmp_path)
    msg = str(err.value)
    assert "download failed" in msg and "--data-root" in msg and "\n" not in msg
    assert not list(tmp_path.iterdir())  # no partial files left behind
    with pytest.raises(DataError, match="allow the download"):
        load_dataset("omniglot", "train", tmp_path, download=False)


def test_half_finished_download_leaves_nothing(tmp_path, monkeypatch, fake_omniglot):
    server, root = tmp_path / "server", tmp_path / "root"
    server.mkdir()
    root.mkdir()
    fake_omniglot(server, "images_background", {"Alpha": 1})  # images_evaluation.zip missing
    monkeypatch.setattr(omni, "BASE_URL", server.as_uri() + "/")
    with pytest.raises(DataError, match="images_evaluation.zip"):
        load_dataset("omniglot", "train", root)
    assert not list(root.iterdir())
