"""ID/OOD specs, class overlap, shape conversion, near/far groups."""

import pytest
import torch

from protobench.errors import UserError
from protobench.ood.data import (
    SetSpec,
    check_disjoint,
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
