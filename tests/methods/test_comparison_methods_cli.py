"""The comparison methods from the CLI: `protobench methods` lists each with its tasks and
presets; a digits run of each continual one lands on the continual board under its preset;
bad input (unsupported task, wrong metric, impossible setting) exits 2 and writes nothing."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from protobench.cli import app
from protobench.methods.presets import list_presets
from protobench.tasks import ResultStore

runner = CliRunner()
NEW = ("efc", "fecam", "lwf", "cider", "bd-cspn", "soft-kmeans")


def test_methods_lists_every_comparison_method_with_its_presets():
    from rich.console import Console

    from protobench.report.listing import methods_table

    res = runner.invoke(app, ["methods"])
    assert res.exit_code == 0, res.output
    for name in NEW:
        assert name in res.output, name
    wide = Console(width=400, record=True)  # the CLI's table, one line per method
    wide.print(methods_table())
    lines = {line.split("│")[1].strip(): line for line in wide.export_text().splitlines()
             if line.startswith("│") and line.split("│")[1].strip()}
    for name in NEW:
        for preset in list_presets(name):
            assert preset in lines[name], (name, preset)
    for name in ("efc", "fecam", "lwf"):
        assert "class-incremental" in lines[name] and {"digits", "omniglot"} <= \
            set(list_presets(name))
    assert "cifar100-cold-start" in lines["efc"] and "cifar100-warm-start" in lines["efc"]
    assert {"digits", "cifar100", "cifar10"} <= set(list_presets("cider"))
    for name in NEW:
        one = runner.invoke(app, ["methods", name])
        assert one.exit_code == 0 and name in one.output, one.output


@pytest.mark.parametrize("name", ["efc", "fecam", "lwf"])
def test_a_digits_run_lands_on_the_board_under_its_preset(name, tmp_path):
    store = tmp_path / "r.sqlite"
    res = runner.invoke(app, ["continual", "-d", "digits", "-m", name, "--epochs", "1",
                              "--store", str(store), "--run-dir", str(tmp_path / "run"),
                              "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    (row,) = ResultStore(store).records()
    assert row.board == "continual/digits" and row.method == name
    version = list_presets(name)["digits"].version
    assert row.config["preset"] == f"{name}:digits@v{version}"


@pytest.mark.parametrize(("args", "why"), [
    (["fewshot", "-d", "digits", "-m", "efc"], "does not support"),
    (["ood", "--id", "digits:0-4", "--ood", "digits:5-9", "-m", "fecam"], "does not support"),
    (["fewshot", "-d", "digits", "-m", "lwf"], "does not support"),
    (["continual", "-d", "digits", "-m", "cider"], "does not support"),
    (["continual", "-d", "digits", "-m", "efc", "-p", "metric=cosine"], "metric"),
    (["continual", "-d", "digits", "-m", "efc", "-p", "proto_batch=0"], "proto_batch"),
    (["continual", "-d", "digits", "-m", "fecam", "-p", "beta=-1"], "beta"),
    (["continual", "-d", "digits", "-m", "lwf", "-p", "distill_temperature=0"],
     "distill_temperature"),
    (["continual", "-d", "digits", "-m", "efc", "--experiences", "11"], "11"),
])
def test_bad_input_exits_2_and_writes_nothing(args, why, tmp_path):
    store = tmp_path / "bad.sqlite"
    res = runner.invoke(app, [*args, "--store", str(store), "--no-progress", "--device", "cpu"])
    assert res.exit_code == 2 and why in res.output, (args, res.output)
    assert not store.exists()
