"""Every registered method honours its protocol and its declared capabilities.

Parametrised over the method registry, so a newly registered method is checked without a
line here: ``get_params`` round-trips through ``build_method``; a tiny trained fixture
round-trips through ``save`` / ``load_method`` with identical outputs (few-shot: features
and episode accuracies on a tiny digits subset; continual: ``predict`` after one tiny
experience; OOD: ``features`` and ``logits`` after one epoch); the declared capabilities
(tasks, distances, job options, presets) agree with the constructor and the protocols.
The training knobs are shrunk by parameter name (:func:`tiny_params`), never per method.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

from protobench.datasets.digits import load_digits
from protobench.episodic import EpisodeSpec, make_episodes
from protobench.errors import UserError
from protobench.methods import (
    ContinualMethod,
    ExperienceInfo,
    FewShotMethod,
    OODMethod,
    build_method,
    load_method,
)
from protobench.methods.presets import list_presets
from protobench.methods.protocols import JOB_OPTIONS, TASKS
from protobench.registry import registry
from tests.methods.conftest import register_tiny_clip

CPU = torch.device("cpu")
METHODS = registry("methods")
NAMES = METHODS.names()
PROTOCOL = {"fewshot": FewShotMethod, "class-incremental": ContinualMethod,
            "task-incremental": ContinualMethod, "ood": OODMethod}
# constructor parameter -> tiny value (applied only where the method takes the parameter)
TINY = {"epochs": 1, "warmup_epochs": 0, "batch_size": 16, "train_steps": 2, "train_ways": 3,
        "train_shots": 1, "train_queries": 2, "train_epochs": 2, "search_episodes": 4,
        "projection_hidden": 16, "projection_dim": 8, "pretrained": "none", "seed": 0}


def constructor(cls: type) -> dict[str, inspect.Parameter]:
    return {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}


def tiny_params(name: str, clip_model: str | None = None) -> dict[str, Any]:
    """The method's parameters shrunk for a seconds-long run on 8x8 digits: 1 epoch, 2
    steps, an ``mlp`` backbone (unless the default is the parameter-free ``identity``),
    and for CLIP methods a tiny randomly initialised open_clip model (``pretrained="none"``)."""
    params = constructor(METHODS.get(name))
    out = {k: v for k, v in TINY.items() if k in params}
    if "backbone" in params and params["backbone"].default != "identity":
        out["backbone"] = "mlp"
    if "clip_model" in params:
        out["clip_model"] = clip_model
    return out


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny open_clip config of tests/methods/conftest.py under its own name; with
    ``pretrained="none"`` the CLIP methods run offline on random weights."""
    return register_tiny_clip(tmp_path_factory.mktemp("clip"), "pb-contract-clip")


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    """8x8 digits: ``id``, 12 samples of each class 0-4 (meta-train, stream and OOD ID data)
    and ``test``, 10 samples of each class 5-9 (few-shot evaluation)."""
    train, test = load_digits("train", image_size=8), load_digits("test", image_size=8)
    return {"id": train.subset(train.class_table[:, :12].flatten()),
            "test": test.subset(test.class_table[:, :10].flatten())}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def needs(cls: type, *parameters_: str) -> None:
    missing = [p for p in parameters_ if p not in constructor(cls)]
    if missing:
        pytest.skip(f"{cls.name} takes no {', '.join(missing)} parameter")


# --- declarations: no data needed ----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_get_params_round_trips(name: str) -> None:
    for params in ({}, tiny_params(name, clip_model="RN50")):
        m = build_method(name, **params)
        p = m.get_params()
        assert set(p) == set(constructor(type(m)))
        assert build_method(name, **p).get_params() == p
        assert {k: p[k] for k in params} == params  # given values are stored as given


@pytest.mark.parametrize("name", NAMES)
def test_declared_tasks_match_the_protocols(name: str) -> None:
    cls = METHODS.get(name)
    assert cls.name == name and cls.summary, "a registered method names itself and has a summary"
    assert cls.tasks and set(cls.tasks) <= set(TASKS)
    for task in TASKS:
        if task in cls.tasks:
            assert issubclass(cls, PROTOCOL[task])
            assert build_method(name, task=task).tasks == cls.tasks
        else:
            with pytest.raises(UserError, match=f"does not support {task}"):
                build_method(name, task=task)
    assert cls.keeps_data is False or issubclass(cls, ContinualMethod)
    assert cls.has_classifier is False or issubclass(cls, OODMethod)
    assert cls.scores_episodes is False or issubclass(cls, FewShotMethod)


@pytest.mark.parametrize("name", NAMES)
def test_job_options_are_constructor_parameters(name: str) -> None:
    cls = METHODS.get(name)
    assert set(cls.job_options) <= set(JOB_OPTIONS)
    params = constructor(cls)
    for option in cls.job_options:
        fit = getattr(cls, "fit", None)
        assert option in params or (option == "epochs" and fit is not None
                                    and "epochs" in inspect.signature(fit).parameters), option


@pytest.mark.parametrize("name", NAMES)
def test_declared_distances_are_accepted_and_others_refused(name: str) -> None:
    cls = METHODS.get(name)
    metrics = registry("metrics")
    for d in cls.distances:
        assert d in metrics, f"{name} declares unregistered distance {d!r}"
        assert build_method(name, metric=d).get_params()["metric"] == d
    if cls.distances:
        with pytest.raises(UserError, match="does not support metric 'manhattan'"):
            build_method(name, metric="manhattan")
        undeclared = [d for d in metrics.names() if d not in cls.distances]
        for d in undeclared:
            with pytest.raises(UserError, match="does not support metric"):
                build_method(name, metric=d)
    else:
        assert "metric" not in constructor(cls) or not issubclass(cls, FewShotMethod)
        with pytest.raises(UserError):
            build_method(name, metric="sqeuclidean")


@pytest.mark.parametrize("name", NAMES)
def test_unknown_parameters_are_refused(name: str) -> None:
    with pytest.raises(UserError, match="has no parameter"):
        build_method(name, no_such_parameter=1)


@pytest.mark.parametrize("name", NAMES)
def test_presets_build_for_their_task(name: str) -> None:
    cls = METHODS.get(name)
    for preset in list_presets(name).values():
        assert preset.task in cls.tasks, f"preset {preset.label} targets {preset.task}"
        m = build_method(name, task=preset.task, **preset.params)
        assert {k: m.get_params()[k] for k in preset.params} == preset.params


@pytest.mark.parametrize("name", NAMES)
def test_describe_lists_the_constructor_and_capabilities(name: str) -> None:
    cls = METHODS.get(name)
    d = METHODS.describe(name)
    assert [p["name"] for p in d["parameters"]] == list(constructor(cls))
    defaults = {k: p.default for k, p in constructor(cls).items() if p.default is not p.empty}
    assert {p["name"]: p["default"] for p in d["parameters"] if "default" in p} == defaults
    assert d["capabilities"] == cls.capabilities()
    assert set(d["presets"]) == set(list_presets(name))


# --- behaviour: tiny fixtures, save / load round trip --------------------------------------


def build_tiny(name: str, request: pytest.FixtureRequest):
    """The method built with :func:`tiny_params` (CLIP methods: the tiny random model)."""
    cls = METHODS.get(name)
    clip = request.getfixturevalue("clip_model") if "clip_model" in constructor(cls) else None
    return build_method(name, **tiny_params(name, clip_model=clip))


def reloaded(m, tmp_path):
    path = tmp_path / f"{m.name}.pt"
    m.save(path)
    return load_method(path)


FEWSHOT = [n for n in NAMES if "fewshot" in METHODS.get(n).tasks]
CONTINUAL = [n for n in NAMES if issubclass(METHODS.get(n), ContinualMethod)]
OOD = [n for n in NAMES if issubclass(METHODS.get(n), OODMethod)]


@pytest.mark.parametrize("name", FEWSHOT)
def test_fewshot_features_and_episodes_round_trip(name, digits, request, tmp_path) -> None:
    m = build_tiny(name, request)
    m.fit(digits["id"], CPU, progress=False)  # meta-train / validation split: classes 0-4
    test = digits["test"]
    feats = m.features(test, CPU)
    assert feats.dim() == 2 and len(feats) == len(test) and torch.isfinite(feats).all()
    episodes = make_episodes(test, EpisodeSpec(ways=5, shots=1, queries=2, episodes=3, seed=0))
    result, _ = m.evaluate(test, feats, episodes, CPU, progress=False)
    assert result.n == 3 and 0.0 <= result.mean <= 1.0

    back = reloaded(m, tmp_path)
    assert type(back) is type(m) and back.get_params() == m.get_params()
    if not m.trains:  # a training-free method keeps the validation split it searches on
        back.fit(digits["id"], CPU, progress=False)
    again = back.features(test, CPU)
    torch.testing.assert_close(again, feats)
    result_back, _ = back.evaluate(test, again, episodes, CPU, progress=False)
    torch.testing.assert_close(result_back.accuracies, result.accuracies)


@pytest.mark.parametrize("name", CONTINUAL)
def test_continual_predict_shapes_and_round_trip(name, digits, request, tmp_path) -> None:
    m = build_tiny(name, request)
    data = digits["id"]
    first = data.subset_classes([0, 1])
    info = ExperienceInfo(index=0, classes=(0, 1), num_experiences=2, seed=0)
    torch.manual_seed(info.seed)
    stats = m.train_experience(first.x, first.labels, info, CPU, progress=False)
    assert isinstance(stats, dict)
    x = first.x[:7]
    scores = m.predict(x, CPU)
    assert scores.shape == (7, info.num_seen) and torch.isfinite(scores).all()
    feats = m.features(x, CPU)
    assert feats.dim() == 2 and len(feats) == 7

    back = reloaded(m, tmp_path)
    torch.testing.assert_close(back.predict(x, CPU), scores)
    torch.testing.assert_close(back.features(x, CPU), feats)


@pytest.mark.parametrize("name", OOD)
def test_ood_features_logits_and_round_trip(name, digits, request, tmp_path) -> None:
    m = build_tiny(name, request)
    train = digits["id"]
    m.fit(train, CPU, epochs=1, progress=False)
    x = train.get(torch.arange(9))
    feats = m.features(x, CPU)
    assert feats.dim() == 2 and len(feats) == 9 and torch.isfinite(feats).all()
    if m.has_classifier:
        logits = m.logits(x, CPU)
        assert logits.shape == (9, train.num_classes)
    else:
        with pytest.raises(UserError, match="no classifier head"):
            m.logits(x, CPU)
    config = m.trained_config()
    assert config.get("num_classes") == train.num_classes

    back = reloaded(m, tmp_path)
    torch.testing.assert_close(back.features(x, CPU), feats)
    if m.has_classifier:
        torch.testing.assert_close(back.logits(x, CPU), logits)
