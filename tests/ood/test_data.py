"""ID/OOD specs, class overlap, shape conversion, near/far groups."""

import numpy as np
import pytest
import torch

from protobench.errors import UserError
from protobench.ood.data import (
    SEMANTIC_OVERLAP,
    SetSpec,
    check_disjoint,
    class_overlap,
    conform,
    load_id,
    load_ood,
    ood_group,
    parse_set,
    parse_sets,
    to_shape,
)


def test_parse_specs():
    assert parse_set("digits:0-4") == SetSpec("digits", (0, 1, 2, 3, 4))
    assert parse_set("digits:0-2,7").text == "digits:0-2,7"
    assert [s.text for s in parse_sets("digits:5-7,9,mnist")] == ["digits:5-7,9", "mnist"]
    for bad in ("digits:a", "digits:3,3", "nope"):
        with pytest.raises(UserError):
            parse_set(bad)


def test_overlap_is_an_error():
    with pytest.raises(UserError, match="overlap"):
        check_disjoint(parse_set("digits:0-4"), (), parse_set("digits:4-9"), ())
    with pytest.raises(UserError, match="overlap"):
        check_disjoint(parse_set("digits"), (), parse_set("digits:5-9"), ())
    with pytest.raises(UserError, match="share classes"):
        check_disjoint(parse_set("cifar10"), ("cat", "dog"), parse_set("svhn"), ("Dog",))
    check_disjoint(parse_set("digits:0-4"), (), parse_set("digits:5-9"), ())


def test_groups():
    assert ood_group("cifar10", "cifar100") == "near"
    assert ood_group("cifar10", "svhn") == "far"
    assert ood_group("digits", "digits") == "near"
    assert ood_group("digits", "omniglot") == "far"


def test_load_pair_and_conform():
    train, test = load_id(parse_set("digits:0-4"), None, {"image_size": 8})
    assert set(train.labels.tolist()) == set(range(5)) and len(train) + len(test) == 901
    ood = load_ood(parse_set("digits:5-9"), (1, 8, 8), None, {"image_size": 8})
    assert len(ood) == 1797 - 901 and ood.get(torch.tensor([0])).shape == (1, 1, 8, 8)
    x = torch.rand(2, 3, 16, 16)
    assert to_shape(x, (1, 8, 8)).shape == (2, 1, 8, 8)
    assert torch.allclose(to_shape(x, (1, 16, 16)), x.mean(1, keepdim=True))
    assert to_shape(torch.rand(2, 1, 4, 4), (3, 8, 8)).shape == (2, 3, 8, 8)
    grey = conform(load_ood(parse_set("digits:5-9"), (1, 28, 28), None, {}), (3, 32, 32))
    assert grey.get(torch.tensor([0, 1])).shape == (2, 3, 32, 32)


CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
CIFAR100 = tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy
    bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud
    cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl
    hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree
    motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck
    pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal
    shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper
    table tank telephone television tiger tractor train trout tulip turtle wardrobe whale
    willow_tree wolf woman worm""".split())
# Tiny ImageNet classes as its loader names them (first synonym of words.txt; the wnid
# when words.txt lacks the class): overlapping and non-overlapping ones
TIN = ("goldfish", "tabby", "Egyptian cat", "Persian cat", "cougar", "school bus",
       "trolleybus", "sports car", "convertible", "moving van", "bullfrog", "tailed frog",
       "monarch", "koala", "lion", "trilobite", "n02113799", "brown bear", "abacus")


def test_semantic_overlap_cifar10_vs_tiny_imagenet():
    got = {(j, i) for j, _, i in class_overlap(CIFAR10, TIN)}
    assert got == {(1, "cat"), (2, "cat"), (3, "cat"), (7, "automobile"), (8, "automobile"),
                   (9, "truck"), (10, "frog"), (11, "frog"), (16, "dog")}  # 16: standard poodle
    # both directions: TinyImageNet as the ID side
    assert [i for _, _, i in class_overlap(TIN, ("cat", "deer"))] == ["tabby"]


def test_semantic_overlap_cifar100_vs_tiny_imagenet():
    got = {(j, i) for j, _, i in class_overlap(CIFAR100, TIN)}
    assert got == {(0, "aquarium_fish"), (5, "bus"), (6, "bus"), (12, "butterfly"),
                   (14, "lion"), (17, "bear")}  # no cat in CIFAR-100; koala is no bear


def test_digits_overlap_across_datasets_and_cifar_pair_is_disjoint():
    digits = tuple(f"digit {d}" for d in range(5))
    assert [j for j, _, _ in class_overlap(digits, tuple(str(d) for d in range(10)))] == \
        list(range(5))  # sklearn digits vs MNIST / SVHN names
    assert class_overlap(("3 - three",), ("3",)) and not class_overlap(("3",), ("8",))
    assert class_overlap(CIFAR10, CIFAR100) == []  # mutually exclusive by construction


def test_overlap_table_names_real_classes():
    for key, others in SEMANTIC_OVERLAP.items():
        assert key in CIFAR10 + CIFAR100, key
        for other in others:
            wnid, _, name = other.partition(" ")
            assert len(wnid) == 9 and wnid[0] == "n" and wnid[1:].isdigit() and name, other


def _fake_tiny(root, words: dict[str, str], per_class: int = 2):
    from PIL import Image

    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(words) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in words.items()))
    notes = []
    for c, w in enumerate(sorted(words)):
        for k in range(per_class):
            name = f"val_{c}_{k}.JPEG"
            Image.fromarray(np.full((8, 8, 3), 30 * c, dtype=np.uint8)).save(
                base / "val" / "images" / name)
            notes.append(f"{name}\t{w}\t0\t0\t7\t7")
    (base / "val" / "val_annotations.txt").write_text("\n".join(notes) + "\n")
    return base


def test_check_disjoint_refuses_tiny_imagenet_for_cifar_and_gives_the_clean_spec(tmp_path):
    words = {"n01443537": "goldfish, Carassius auratus", "n01768244": "trilobite",
             "n02123045": "tabby, tabby cat", "n02124075": "Egyptian cat",
             "n04146614": "school bus", "n04285008": "sports car, sport car",
             "n12267677": "acorn"}
    root = _fake_tiny(tmp_path, words)
    tin = load_ood(parse_set("tiny-imagenet"), (3, 8, 8), root, {})
    assert tin.class_names == ("goldfish", "trilobite", "tabby", "Egyptian cat", "school bus",
                               "sports car", "acorn")
    with pytest.raises(UserError, match="share classes") as err:
        check_disjoint(parse_set("cifar10"), CIFAR10, parse_set("tiny-imagenet"), tin.class_names)
    assert "tabby ~ cat" in str(err.value) and "sports car ~ automobile" in str(err.value)
    assert "--ood tiny-imagenet:0-1,4,6" in str(err.value)
    with pytest.raises(UserError, match="--ood tiny-imagenet:1-3,5-6"):  # goldfish, bus
        check_disjoint(parse_set("cifar100"), CIFAR100, parse_set("tiny-imagenet"),
                       tin.class_names)
    # the suggested spec loads the rest and passes; ids refer to the full class list
    clean = load_ood(parse_set("tiny-imagenet:0-1,4,6"), (3, 8, 8), root, {})
    check_disjoint(parse_set("cifar10"), CIFAR10, parse_set("tiny-imagenet:0-1,4,6"),
                   clean.class_names)
    assert len(tin) - len(clean) == 3 * 2  # three classes of two images removed
    sub = parse_set("tiny-imagenet:2-6")
    with pytest.raises(UserError, match="--ood tiny-imagenet:4,6"):
        check_disjoint(parse_set("cifar10"), CIFAR10, sub,
                       load_ood(sub, (3, 8, 8), root, {}).class_names)


@pytest.mark.usefixtures("one_thread")
def test_ood_job_refuses_digits_vs_mnist_before_training(tmp_path):
    import gzip

    from protobench.tasks.ood import OODConfig, run_ood

    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    header = bytes([0, 0, 8, 3]) + np.array([10, 28, 28], ">i4").tobytes()
    with gzip.open(raw / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + np.zeros((10, 28, 28), np.uint8).tobytes())
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + np.array([10], ">i4").tobytes() + bytes(range(10)))
    cfg = OODConfig(id="digits:0-4", ood="mnist", epochs=1, device="cpu", progress=False,
                    plot=False, store=None, run_dir=str(tmp_path / "run"),
                    ood_roots={"mnist": str(tmp_path / "mnist")},
                    dataset_options={"image_size": 8})
    with pytest.raises(UserError, match="--ood mnist:5-9"):  # "digit 3" is MNIST's "3"
        run_ood(cfg)
    assert not (tmp_path / "run").exists()
