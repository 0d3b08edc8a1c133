"""End-to-end `protobench continual` on the embedded digits dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from protobench.cli import app
from protobench.tasks import ResultStore

runner = CliRunner()
FAST = ("--backbone", "mlp", "-o", "image_size=8", "--epochs", 2, "--device", "cpu",
        "--no-progress")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_continual_prints_matrix_saves_plot_and_writes_one_row(tmp_path):
    store, run_dir = tmp_path / "r.sqlite", tmp_path / "run"
    res = run("continual", "-d", "digits", "-m", "finetune", "--experiences", 5, *FAST,
              "--class-order", "pass", "--seed", 2, "--run-dir", run_dir, "--store", store,
              "-p", "batch_size=128")
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "SGD step(s) per epoch" in res.output
    assert "after" in res.output and "exp 5" in res.output and "up to now" in res.output
    assert "average incremental accuracy" in res.output
    (record,) = ResultStore(store).records("continual/digits")
    assert record.method == "finetune" and record.seed == 2
    assert record.setting == {"experiences": 5, "classes": 10, "base_classes": 0,
                              "class_order": "pass"}
    matrix = record.config["fit"]["accuracy_matrix"]
    assert len(matrix) == 5 and matrix[0][1] is None and matrix[4][4] is not None
    assert record.method_params["backbone"] == "mlp" and record.method_params["epochs"] == 2
    pass_order = np.random.RandomState(1993).permutation(10).tolist()
    assert record.config["stream"]["class_order"] == pass_order
    for key in ("average_incremental_accuracy", "final_accuracy", "average_forgetting",
                "backward_transfer", "til_final_accuracy"):
        assert 0 <= abs(record.metrics[key].value) <= 1
    assert record.primary_metric == "average_incremental_accuracy"
    assert (run_dir / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    (saved,) = json.loads((run_dir / "result.json").read_text())["rows"]
    assert saved["manifest_hash"] == record.manifest_hash
    shown = run("leaderboard", "show", "continual/digits", "--store", store)
    assert shown.exit_code == 0 and "finetune" in shown.output


@pytest.mark.parametrize("args, message", [
    (("--experiences", 11), "lower --experiences to at most 10"),
    (("--base-classes", 10), "lower --base-classes"),
    (("--base-classes", 12), "lower --base-classes"),
    (("--class-order", "random"), "unknown class order 'random'"),
    (("-m", "protonet"), "does not support class-incremental"),
    (("-m", "nope"), "unknown method 'nope'"),
    (("--param", "nope=1"), "has no parameter(s) nope"),
    (("--resume",), "no checkpoint"),
])
def test_bad_input_exits_2_without_rows(tmp_path, args, message):
    store = tmp_path / "r.sqlite"
    res = run("continual", "-d", "digits", *FAST, "--run-dir", tmp_path / "run",
              "--store", store, *args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "error:" in res.output
    assert "Traceback" not in res.output
    assert not store.exists()


@pytest.mark.parametrize("method", ["napa-vq", "prd"])
def test_exemplar_free_methods_run_from_the_cli(tmp_path, method):
    store = tmp_path / "r.sqlite"
    res = run("continual", "-d", "digits", "-m", method, "--experiences", 2, *FAST,
              "--epochs", 1, "--run-dir", tmp_path / "run", "--store", store)
    assert res.exit_code == 0, res.output
    (record,) = ResultStore(store).records("continual/digits")
    assert record.method == method and len(record.config["fit"]["accuracy_matrix"]) == 2
    assert (tmp_path / "run" / "accuracy.png").exists()
