"""Class-incremental streams: class orders, experience sizes, relabelling, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protobench.continual.stream import (
    StreamSpec,
    build_stream,
    class_order,
    experience_sizes,
    holdout_split,
    stream_from_dataset,
)
from protobench.datasets import load_dataset
from protobench.errors import DataError, SpecError, UserError


def test_pass_order_is_numpy_seed_1993():
    np.random.seed(1993)
    expected = np.random.permutation(100).tolist()
    assert class_order(100, "pass") == expected
    assert expected[:5] == [68, 56, 78, 8, 23]  # the PASS / NAPA-VQ CIFAR-100 order


def test_seeded_order_is_reproducible_and_differs_by_seed():
    assert class_order(20, "seed", 3) == class_order(20, "seed", 3)
    assert class_order(20, "seed", 3) != class_order(20, "seed", 4)
    assert sorted(class_order(20, "seed", 3)) == list(range(20))
    assert class_order(5, "natural") == [0, 1, 2, 3, 4]
    assert class_order(3, (2, 0, 1)) == [2, 0, 1]


@pytest.mark.parametrize("classes, spec, sizes", [
    (10, StreamSpec(5), (2, 2, 2, 2, 2)),
    (10, StreamSpec(3), (4, 3, 3)),
    (100, StreamSpec(6, base_classes=50), (50, 10, 10, 10, 10, 10)),
    (100, StreamSpec(21, base_classes=40), (40,) + (3,) * 20),
    (10, StreamSpec(4, base_classes=4), (4, 2, 2, 2)),
    (10, StreamSpec(3, experience_sizes=(5, 4, 1)), (5, 4, 1)),
])
def test_experience_sizes(classes, spec, sizes):
    assert experience_sizes(classes, spec) == sizes


@pytest.mark.parametrize("spec, message", [
    (StreamSpec(11), "lower --experiences to at most 10"),
    (StreamSpec(0), "at least 1"),
    (StreamSpec(3, base_classes=10), "lower --base-classes"),
    (StreamSpec(3, base_classes=12), "lower --base-classes"),
    (StreamSpec(1, base_classes=4), "--experiences between 2 and 7"),
    (StreamSpec(9, base_classes=4), "--experiences between 2 and 7"),
    (StreamSpec(2, experience_sizes=(5, 4)), "summing to the 10 classes"),
])
def test_bad_specs_are_user_errors(spec, message):
    with pytest.raises(SpecError, match=message):
        experience_sizes(10, spec)


def test_unknown_class_order_names_the_choices():
    with pytest.raises(UserError, match="--class-order seed|pass|natural"):
        class_order(10, "random")
    with pytest.raises(SpecError, match="each of the 3 classes"):
        class_order(3, (0, 1, 1))


def test_digits_stream_relabels_in_class_order(digits_stream):
    s = digits_stream
    assert len(s) == 5 and s.num_classes == 10 and s.sizes == (2,) * 5
    assert s.class_order == tuple(class_order(10, "seed", 0))
    assert s.class_names == tuple(f"digit {c}" for c in s.class_order)
    full = load_dataset("digits", "all", image_size=8)
    seen_train, seen_test = set(), set()
    for exp in s:
        assert exp.classes == (2 * exp.index, 2 * exp.index + 1)
        x, y = s.inputs(s.train, exp.train_indices)
        assert set(y.tolist()) == set(exp.classes)
        assert (s.task_labels(y) == exp.task_label).all()
        # every relabelled sample is the original image of class class_order[label]
        orig = torch.tensor(s.class_order)[y]
        match = (x.flatten(1)[:, None] == full.x.flatten(1)[None]).all(-1)
        assert (full.labels[match.float().argmax(1)] == orig).all()
        seen_train.update(exp.train_indices.tolist())
        seen_test.update(exp.test_indices.tolist())
    assert len(seen_train) == len(s.train) and len(seen_test) == len(s.test)
    assert len(s.train) + len(s.test) == len(full)
    assert 0.18 < len(s.test) / len(full) < 0.22


def test_holdout_split_is_per_class_seeded_and_disjoint():
    data = load_dataset("digits", "all", image_size=8)
    tr, te = holdout_split(data, 0.25, seed=1)
    tr2, te2 = holdout_split(data, 0.25, seed=1)
    assert torch.equal(te.x, te2.x) and torch.equal(tr.labels, tr2.labels)
    assert (te.class_counts > 0).all() and (tr.class_counts > 0).all()
    assert len(tr) + len(te) == len(data)
    with pytest.raises(SpecError, match="between 0 and 1"):
        holdout_split(data, 1.5)


def test_stream_hash_depends_on_order_and_data():
    a = stream_from_dataset("digits", StreamSpec(5, seed=0), image_size=8)
    b = stream_from_dataset("digits", StreamSpec(5, seed=0), image_size=8)
    c = stream_from_dataset("digits", StreamSpec(5, class_order="pass"), image_size=8)
    assert a.hash == b.hash != c.hash


def test_base_experience_and_class_subset():
    s = stream_from_dataset("digits", StreamSpec(4, base_classes=4, num_classes=8,
                                                 class_order="natural"), image_size=8)
    assert s.sizes == (4, 2, 1, 1)
    assert s.class_order == tuple(range(8)) and s.num_classes == 8
    assert s.experience(0).classes == (0, 1, 2, 3)


def test_train_and_test_must_share_classes():
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    with pytest.raises(DataError, match="same classes"):
        build_stream(tr, te, StreamSpec(2))


def test_dataset_without_all_split_is_refused():
    with pytest.raises(DataError, match="class-disjoint"):
        stream_from_dataset("mini-imagenet", StreamSpec(2))
