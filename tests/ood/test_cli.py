"""End-to-end `protobench ood` on digits:0-4 vs digits:5-9, and its input errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from protobench.cli import app
from protobench.tasks import ResultStore

runner = CliRunner()
FAST = ("-o", "image_size=8", "--epochs", 2, "--device", "cpu", "--no-progress")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.usefixtures("one_thread")
def test_ood_table_roc_and_one_row_per_score(tmp_path):
    store, run_dir = tmp_path / "r.sqlite", tmp_path / "run"
    res = run("ood", "--id", "digits:0-4", "--ood", "digits:5-9", "--method", "ce",
              "--score", "msp,knn,mahalanobis", "--score-param", "k=5", "--seeds", 2, *FAST,
              "--run-dir", run_dir, "--store", store, "--save-checkpoint", tmp_path / "ce.pt")
    assert res.exit_code == 0, res.output
    assert "near-OOD" in res.output and "classifier head" in res.output
    assert (run_dir / "roc.png").stat().st_size > 0
    records = ResultStore(store).records("ood/digits")
    assert [r.method for r in records] == ["ce+msp", "ce+knn", "ce+mahalanobis"]
    r = records[1]
    assert r.setting == {"id": "digits:0-4", "ood": "digits:5-9"}
    assert r.config["ood_counts"] == {"digits:5-9": 896} and r.config["score_params"] == {"k": 5}
    assert r.metrics["auroc"].n == 2 and r.metrics["auroc"].ci95 is not None
    assert r.metrics["auroc"].value == r.metrics["near_auroc"].value  # one (near) set
    assert 0.5 < r.metrics["digits:5-9/auroc"].value <= 1
    assert {"fpr95_id_positive", "fpr95_ood_positive", "aupr_in", "aupr_out",
            "id_accuracy"} <= set(r.metrics)
    assert r.config["resolved_backbone"] == "mlp" and len(r.config["fit"]["per_seed"]) == 2
    shown = run("leaderboard", "show", "ood/digits", "--store", store)
    assert shown.exit_code == 0 and "ce+knn" in shown.output
    assert "auroc" in shown.output and "acc %" not in shown.output  # names its metric
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["ood_counts"] == {"digits:5-9": 896}
    # a saved model is evaluated again without training: same numbers as seed 0's model
    again = run("ood", "--id", "digits:0-4", "--ood", "digits:5-9", "--score", "knn",
                "--score-param", "k=5", "--checkpoint", tmp_path / "ce_seed0.pt", *FAST,
                "--run-dir", run_dir, "--store", store)
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("args, message", [
    (("--ood", "digits:4-9", "--method", "ce"), "overlap"),
    (("--ood", "digits:5-9", "--score", "nope"), "unknown score"),
    (("--ood", "digits:5-9", "--method", "palm", "--score", "ssd,msp"), "needs logits"),
    (("--ood", "digits", "--method", "ce"), "overlap"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, args, message):
    store = tmp_path / "r.sqlite"
    res = run("ood", "--id", "digits:0-4", *args, *FAST, "--store", store,
              "--run-dir", tmp_path / "run")
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not store.exists()
