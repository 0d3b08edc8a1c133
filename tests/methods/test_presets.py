"""Versioned presets: one YAML per method, chosen with --config, recorded in the row."""

from __future__ import annotations

import pytest
import yaml

from protobench.errors import UserError
from protobench.methods import build_method, list_methods
from protobench.methods import presets as P


@pytest.fixture
def fake_presets(tmp_path, monkeypatch):
    """A preset file for ``finetune`` in a temporary folder."""
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump({"method": "finetune", "version": 3, "presets": {
        "digits": {"task": "class-incremental", "chosen_on": "validation stream",
                   "params": {"epochs": 7, "backbone": "mlp"},
                   "dataset_options": {"image_size": 8}},
        "paper-x": {"task": "class-incremental", "chosen_on": "the paper",
                    "params": {"epochs": 100}},
        "fs": {"task": "fewshot", "chosen_on": "x", "params": {}}}}))
    monkeypatch.setattr(P, "preset_file", lambda method: path)
    P.list_presets.cache_clear()
    yield path
    P.list_presets.cache_clear()


def test_resolution_rules(fake_presets):
    task = "class-incremental"
    auto = P.resolve_preset("finetune", None, "digits", task)
    assert auto is not None and auto.label == "finetune:digits@v3"
    assert auto.params == {"epochs": 7, "backbone": "mlp"}
    assert auto.dataset_options == {"image_size": 8}
    assert P.resolve_preset("finetune", "best", "digits", task) == auto
    assert P.resolve_preset("finetune", None, "omniglot", task) is None  # no preset: card
    assert P.resolve_preset("finetune", "defaults", "digits", task) is None
    assert P.resolve_preset("finetune", "paper-x", "digits", task).params == {"epochs": 100}
    with pytest.raises(UserError, match="no preset for omniglot.*digits, paper-x"):
        P.resolve_preset("finetune", "best", "omniglot", task)
    with pytest.raises(UserError, match="no preset 'fs' for class-incremental"):
        P.resolve_preset("finetune", "fs", "digits", task)  # another task's preset
    assert P.preset_label(None) == "defaults"


def test_explicit_values_win_over_the_preset(fake_presets):
    p = P.resolve_preset("finetune", None, "digits", "class-incremental")
    assert P.with_preset(p, {"epochs": 2}) == {"epochs": 2, "backbone": "mlp"}
    assert P.with_preset_options(p, {"image_size": 28}) == {"image_size": 28}
    assert P.with_preset(None, {"epochs": 2}) == {"epochs": 2}


@pytest.mark.parametrize("cls", list_methods(), ids=lambda c: c.name)
def test_every_committed_preset_builds_its_method(cls):
    for name, preset in P.list_presets(cls.name).items():
        assert preset.chosen_on, f"{cls.name}:{name} does not say what it was chosen on"
        assert preset.task in cls.tasks, f"{cls.name}:{name} names task {preset.task!r}"
        build_method(cls.name, task=preset.task, **preset.params)  # unknown keys raise


def test_bundled_dataset_presets_say_they_were_chosen_on_validation_data():
    for cls in list_methods():
        for name, preset in P.list_presets(cls.name).items():
            if name in ("digits", "omniglot"):
                assert "validation" in preset.chosen_on, (cls.name, name, preset.chosen_on)
                assert "select_presets.py" in preset.chosen_on


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("method", ["ce", "palm"])
def test_ood_digits_preset_gives_a_meaningful_id_accuracy(tmp_path, method):
    from protobench.tasks.ood import OODConfig, run_ood

    res = run_ood(OODConfig(id="digits:0-4", ood="digits:5-9", method=method, device="cpu",
                            run_dir=str(tmp_path), store=None, progress=False, plot=False))
    (row, *_) = res.records
    assert row.config["preset"] == P.list_presets(method)["digits"].label
    assert res.per_seed[0].id_accuracy >= 0.8  # 5 classes: chance is 0.2


@pytest.mark.usefixtures("one_thread")
def test_fewshot_digits_preset_trains_and_is_recorded(tmp_path):
    from protobench.tasks.fewshot import FewShotConfig, run_fewshot

    preset = P.list_presets("protonet")["digits"]
    (out,) = run_fewshot(FewShotConfig(dataset="digits", episodes=100, device="cpu",
                                       store=None, progress=False))
    assert out.record.config["preset"] == preset.label
    assert out.record.config["fit"]["train_steps"] == preset.params["train_steps"]
    assert out.result.mean >= 0.4  # 5-way 1-shot: chance is 0.2


def test_rechoosing_one_preset_moves_only_its_version(fake_presets, monkeypatch):
    """select_presets writes a changed preset with its own version + 1; the other presets
    keep their labels (and so the sweep cells keyed on them)."""
    import benchmarks.select_presets as S

    monkeypatch.setattr(S, "preset_file", lambda method: fake_presets)
    out = {"chosen": {"finetune": {"epochs": 9, "backbone": "mlp", "image_size": 8}}}
    S.write_presets("continual-digits", out)
    got = P.list_presets("finetune")
    assert got["digits"].version == 4 and got["digits"].params == {"epochs": 9,
                                                                   "backbone": "mlp"}
    assert got["paper-x"].version == 3 and got["fs"].version == 3
    assert got["digits"].dataset_options == {"image_size": 8}
    text = fake_presets.read_text()
    S.write_presets("continual-digits", out)  # the same choice again: nothing moves
    assert fake_presets.read_text() == text
