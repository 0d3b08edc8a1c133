"""Grid files: products, include/exclude/matrix, keys, and every kind of bad grid."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from typer.testing import CliRunner

from protobench.cli import app
from protobench.errors import UserError
from protobench.sweep import load_grid, validate

runner = CliRunner()


def write(tmp_path, text: str, name: str = "g.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


FEWSHOT = """
    task: fewshot
    datasets: [digits]
    methods: [ncm, {name: ncm, params: {metric: cosine}, label: ncm-cos}]
    settings: {ways: 5, shots: [1, 5], episodes: 20}
    seeds: [0, 1, 2]
"""


def test_lists_multiply_into_one_cell_per_setting_and_seed(tmp_path):
    grid = validate(load_grid(write(tmp_path, FEWSHOT)))
    assert grid.name == "g" and len(grid.cells) == 2 * 2 * 3
    combos = {(c.label, c.config["shots"], c.config["seed"]) for c in grid.cells}
    assert combos == {(m, (k,), s) for m in ("ncm", "ncm-cos") for k in (1, 5)
                      for s in (0, 1, 2)}
    assert len({c.key for c in grid.cells}) == 12  # every cell its own key
    cos = [c for c in grid.cells if c.label == "ncm-cos"]
    assert all(c.config["method_params"] == {"metric": "cosine"} for c in cos)


def test_keys_depend_on_the_configuration_only(tmp_path):
    a = validate(load_grid(write(tmp_path, FEWSHOT, "a.yaml")))
    b = validate(load_grid(write(tmp_path, FEWSHOT + "    options: {store: x.sqlite}\n",
                                 "b.yaml")))
    assert [c.key for c in a.cells] == [c.key for c in b.cells]  # the store is not identity
    c = validate(load_grid(write(tmp_path, FEWSHOT.replace("episodes: 20", "episodes: 21"),
                                 "c.yaml")))
    assert not {x.key for x in a.cells} & {x.key for x in c.cells}
    git = validate(load_grid(write(tmp_path, FEWSHOT, "a.yaml"), "git"), "git")
    assert not {x.key for x in a.cells} & {x.key for x in git.cells}


def test_exclude_include_and_matrix_give_non_product_grids(tmp_path):
    text = FEWSHOT + """
    exclude: [{method: ncm-cos, shots: 5}]
    include: [{method: ncm, dataset: digits, shots: 10, ways: 3, episodes: 20}]
    """
    grid = validate(load_grid(write(tmp_path, text)))
    shots = sorted({(c.label, c.config["shots"]) for c in grid.cells})
    assert shots == [("ncm", (1,)), ("ncm", (5,)), ("ncm", (10,)), ("ncm-cos", (1,))]
    assert len(grid.cells) == 4 * 3
    matrix = """
    task: fewshot
    matrix:
      - {method: ncm, dataset: digits, shots: [1, 5], episodes: 20}
      - {name: protonet, params: {train_steps: 2}, dataset: digits, shots: 1, episodes: 20}
    seeds: 2
    """
    grid = validate(load_grid(write(tmp_path, matrix, "m.yaml")))
    assert sorted((c.label, c.config["shots"], c.config["seed"]) for c in grid.cells) == [
        ("ncm", (1,), 0), ("ncm", (1,), 1), ("ncm", (5,), 0), ("ncm", (5,), 1),
        ("protonet", (1,), 0), ("protonet", (1,), 1)]


BAD = {
    "unknown dataset": ("datasets: [nope]", "unknown dataset 'nope'"),
    "unknown method": ("methods: [protonett]", "unknown method 'protonett'"),
    "unknown preset": ("methods: [{name: ncm, config: nope}]", "no preset 'nope'"),
    "impossible setting": ("settings: {ways: 50, shots: 1, episodes: 5}", "50"),
    "wrong task": ("methods: [finetune]", "does not support fewshot"),
    "unknown field": ("settings: {wayz: 5}", "take no wayz"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_each_kind_of_bad_grid_exits_2_and_writes_nothing(tmp_path, kind):
    change, message = BAD[kind]
    doc = yaml.safe_load(textwrap.dedent(FEWSHOT))
    doc.update(yaml.safe_load(change))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    store = tmp_path / "r.sqlite"
    res = runner.invoke(app, ["sweep", str(path), "--store", str(store)])
    assert res.exit_code == 2, res.output
    assert message in res.output and "nothing ran" in res.output
    assert not store.exists()


def test_every_problem_is_listed_at_once(tmp_path):
    text = FEWSHOT.replace("methods: [ncm, {name: ncm, params: {metric: cosine}, label: "
                           "ncm-cos}]", "methods: [protonett, finetune]")
    with pytest.raises(UserError) as info:
        validate(load_grid(write(tmp_path, text)))
    assert "unknown method 'protonett'" in str(info.value)
    assert "does not support fewshot" in str(info.value)


def test_bad_score_and_structure_errors(tmp_path):
    ood = """
    task: ood
    id: [digits:0-4]
    ood: [digits:5-9]
    methods: [ce]
    settings: {scores: [msp, nonsense], epochs: 1}
    """
    with pytest.raises(UserError, match="unknown score 'nonsense'|nonsense"):
        validate(load_grid(write(tmp_path, ood)))
    for text, message in (("task: fewshots\n", "task must be one of"),
                          ("task: fewshot\nbogus: 1\n", "unknown key"),
                          (": : :\n", "not valid YAML")):
        with pytest.raises(UserError, match=message):
            load_grid(write(tmp_path, text, "s.yaml"))


def test_dry_run_lists_the_cells_and_their_count(tmp_path):
    res = runner.invoke(app, ["sweep", str(write(tmp_path, FEWSHOT)), "--dry-run",
                              "--store", str(tmp_path / "r.sqlite")])
    assert res.exit_code == 0, res.output
    assert "12 cells" in res.output and "ncm-cos" in res.output
    assert not (tmp_path / "r.sqlite").exists()


def test_nested_shots_keep_several_shots_on_one_trained_model(tmp_path):
    grid = validate(load_grid(write(tmp_path, FEWSHOT.replace("shots: [1, 5]",
                                                              "shots: [[1, 5]]"))))
    assert len(grid.cells) == 2 * 3
    assert {c.config["shots"] for c in grid.cells} == {(1, 5)}


def test_runs_placeholder_is_filled_in_when_a_cell_runs_and_never_in_the_key(
        tmp_path, monkeypatch):
    from protobench.sweep.checks import job_config
    from protobench.tasks.base import TASKS

    text = FEWSHOT + '    options: {save_checkpoint: "{runs}/ck/model.pt"}\n'
    path = write(tmp_path, text)
    monkeypatch.setenv("PROTOBENCH_RUNS", str(tmp_path / "one"))
    one = validate(load_grid(path))
    cfg = job_config(TASKS["fewshot"], one.cells[0].config)
    assert cfg.save_checkpoint == str(tmp_path / "one" / "ck" / "model.pt")
    assert one.cells[0].config["save_checkpoint"] == "{runs}/ck/model.pt"  # as written
    monkeypatch.setenv("PROTOBENCH_RUNS", str(tmp_path / "two"))
    two = validate(load_grid(path))
    assert [c.key for c in one.cells] == [c.key for c in two.cells]
    assert job_config(TASKS["fewshot"], two.cells[0].config).save_checkpoint == str(
        tmp_path / "two" / "ck" / "model.pt")


def test_set_overrides_every_cell_and_changes_the_keys(tmp_path):
    path = write(tmp_path, FEWSHOT)
    plain = validate(load_grid(path))
    smoke = validate(load_grid(path, overrides={"episodes": 7}))
    assert {c.config["episodes"] for c in smoke.cells} == {7}
    assert len(smoke.cells) == len(plain.cells)
    assert not {c.key for c in plain.cells} & {c.key for c in smoke.cells}
    store = tmp_path / "s.sqlite"
    res = runner.invoke(app, ["sweep", str(path), "--store", str(store), "--set",
                              "no_such_field=1"])
    assert res.exit_code == 2 and "no_such_field" in res.output and not store.exists()
    res = runner.invoke(app, ["sweep", str(path), "--store", str(store), "--set", "episodes"])
    assert res.exit_code == 2 and "key=value" in res.output
    res = runner.invoke(app, ["sweep", str(path), "--dry-run", "--set", "episodes=7",
                              "--set", "seeds=0"])
    assert res.exit_code == 2 and "seeds" in res.output  # a grid's seeds are its own
