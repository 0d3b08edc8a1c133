"""`protobench fewshot --metric geodesic` end to end on the embedded digits dataset."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from protobench.cli import app
from protobench.tasks import ResultStore


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_fewshot_geodesic_trains_protonet_and_keeps_transductive_rows_apart(tmp_path):
    store = tmp_path / "r.sqlite"
    res = run("fewshot", "--dataset", "digits", "--method", "protonet", "--metric", "geodesic",
              "--metric-option", "landmarks=150", "--metric-option", "refresh=2",
              "--train-steps", 4, "--episodes", 60, "--dataset-option", "image_size=16",
              "--store", store, "--no-progress", "--cache-dir", tmp_path / "cache")
    assert res.exit_code == 0, res.output
    (row,) = ResultStore(store).records("fewshot/digits")
    assert row.method == "protonet" and row.method_params["metric"] == "geodesic"
    assert row.method_params["metric_options"] == {"landmarks": 150, "refresh": 2}
    assert row.config["fit"]["geodesic_pool"] == "digits:train"
    assert 0.2 < row.metrics["accuracy"].value <= 1
    trans = run("fewshot", "-d", "digits", "-m", "ncm", "--metric", "geodesic",
                "--metric-option", "mode=geo_trans", "--episodes", 30, "--store", store,
                "--no-progress")
    assert trans.exit_code == 0, trans.output
    assert "fewshot-transductive/digits" in trans.output
    assert len(ResultStore(store).records("fewshot/digits")) == 1
    (t_row,) = ResultStore(store).records("fewshot-transductive/digits")
    assert t_row.method_params["metric_options"] == {"mode": "geo_trans"}
    bad = run("fewshot", "-d", "digits", "-m", "ncm", "--metric-option", "mode=geo_trans",
              "--episodes", 10, "--store", store, "--no-progress")
    assert bad.exit_code == 2 and "apply to --metric geodesic" in bad.output
    one_shot = run("fewshot", "-d", "digits", "-m", "ncm", "--metric", "geodesic",
                   "--metric-option", "mode=geo_class", "--episodes", 10, "--store", store,
                   "--no-progress")
    assert one_shot.exit_code == 2 and "K=1" in one_shot.output
    assert len(ResultStore(store).records()) == 2
