"""Human-readable class names (text prompts) for every dataset kind."""

from __future__ import annotations

import torch

from protobench.datasets import load_dataset
from protobench.datasets.base import LabeledData
from protobench.datasets.omniglot import character_name


def test_readable_names_follow_subsets_and_replace_underscores():
    d = LabeledData(x=torch.zeros(3, 2), labels=torch.tensor([0, 1, 2]),
                    class_names=("n01", "n02", "aquarium_fish"), name="t", split="all",
                    display_names=("house finch", "robin", ""))
    assert d.readable_names == ("house finch", "robin", "")
    sub = d.subset_classes([2, 0])
    assert sub.class_names == ("aquarium_fish", "n01")
    assert sub.readable_names == ("", "house finch")
    plain = LabeledData(x=torch.zeros(1, 2), labels=torch.tensor([0]),
                        class_names=("aquarium_fish",), name="t", split="all")
    assert plain.readable_names == ("aquarium fish",)


def test_digits_names():
    assert load_dataset("digits", "test", image_size=8).readable_names == tuple(
        f"digit {d}" for d in range(5, 10))


def test_omniglot_names_are_alphabet_and_character_number(tmp_path, fake_omniglot):
    assert character_name("Latin", "character03") == "Latin character 3"
    assert character_name("Old_Church_Slavonic_(Cyrillic)", "character12") == \
        "Old Church Slavonic (Cyrillic) character 12"
    fake_omniglot(tmp_path, "images_background", {"Latin": 2})
    fake_omniglot(tmp_path, "images_evaluation", {"Ge_ez": 1}, seed=1)
    train = load_dataset("omniglot", "train", tmp_path, image_size=8)
    assert train.readable_names[:2] == ("Latin character 1", "Latin character 1 rotated 90 degrees")
    assert train.class_names[:2] == ("Latin/character01", "Latin/character01/rot090")
    assert load_dataset("omniglot", "test", tmp_path, image_size=8).readable_names == (
        "Ge ez character 1",)


def test_mini_imagenet_names_come_from_words_txt(tmp_path):
    from PIL import Image

    for wnid in ("n01532829", "n01558993"):
        (tmp_path / "test" / wnid).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "test" / wnid / "a.jpg")
    bare = load_dataset("mini-imagenet", "test", tmp_path)
    assert bare.readable_names == ("n01532829", "n01558993")  # ids: prompts refuse them
    (tmp_path / "words.txt").write_text("n01532829\thouse finch, linnet\nn01558993\trobin\n")
    named = load_dataset("mini-imagenet", "test", tmp_path)
    assert named.class_names == ("n01532829", "n01558993")
    assert named.readable_names == ("house finch", "robin")
