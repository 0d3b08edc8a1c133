"""The one runner: seeds for every task, CIs over seeds against scipy, rows that re-run
exactly, job options by name, run folders and provenance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from protobench.cli import app
from protobench.errors import UserError
from protobench.methods import build_method
from protobench.tasks import ResultStore
from protobench.tasks.base import parse_seeds, rerun
from protobench.tasks.continual import ContinualConfig, run_continual
from protobench.tasks.fewshot import FewShotConfig, run_fewshot

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def t_ci(values: list[float]) -> float:
    """Student-t 95% half-width, computed independently with scipy."""
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                              scale=stats.sem(values))
    return (hi - lo) / 2


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def test_parse_seeds_lists_ranges_and_counts():
    assert parse_seeds("0,1,2") == (0, 1, 2)
    assert parse_seeds("3-5") == (3, 4, 5)
    assert parse_seeds("2", seed=7) == (7, 8)
    assert parse_seeds(None) == ()
    for bad in ("0,0", "x", "0"):
        with pytest.raises(UserError):
            parse_seeds(bad)


def test_fewshot_seeds_give_mean_and_t_ci_over_seeds(tmp_path):
    store = tmp_path / "r.sqlite"
    common = ("fewshot", "-d", "digits", "-m", "ncm", "--episodes", 60, "--shots", 1,
              "--no-progress")
    singles = []
    for s in (0, 1, 2):
        res = run(*common, "--seed", s, "--store", tmp_path / f"s{s}.sqlite")
        assert res.exit_code == 0, res.output
        (row,) = ResultStore(tmp_path / f"s{s}.sqlite").records()
        singles.append(row)
    res = run(*common, "--seeds", "0,1,2", "--store", store)
    assert res.exit_code == 0, res.output
    assert "(seeds)" in res.output and "3 seeds" in res.output
    (row,) = ResultStore(store).records()
    values = [r.metrics["accuracy"].value for r in singles]
    acc = row.metrics["accuracy"]
    assert acc.n == 3 and row.seeds == [0, 1, 2]
    assert math.isclose(acc.value, float(np.mean(values)), rel_tol=0, abs_tol=1e-12)
    assert math.isclose(acc.ci95, t_ci(values), rel_tol=1e-9)
    # each seed keeps its own episodes and its CI over episodes
    assert [p["seed"] for p in row.per_seed] == [0, 1, 2]
    for p, single in zip(row.per_seed, singles):
        assert p["metrics"]["accuracy"]["value"] == single.metrics["accuracy"].value
        assert p["metrics"]["accuracy"]["ci95"] == single.metrics["accuracy"].ci95
        assert p["manifest_hash"] == single.manifest_hash
    assert len({p["manifest_hash"] for p in row.per_seed}) == 3


def test_continual_seeds_give_mean_and_t_ci_over_seeds(tmp_path):
    store = tmp_path / "r.sqlite"
    common = ("continual", "-d", "digits", "-m", "finetune",
              "--experiences", 2, "--epochs", 1, "--backbone", "mlp", "-o", "image_size=8",
              "--classes", 4, "--device", "cpu", "--no-progress")
    singles = []
    for s in (0, 1, 2):
        res = run(*common, "--seed", s, "--store", tmp_path / f"s{s}.sqlite",
                  "--run-dir", tmp_path / f"single{s}")
        assert res.exit_code == 0, res.output
        (r,) = ResultStore(tmp_path / f"s{s}.sqlite").records()
        singles.append(r.metrics["average_incremental_accuracy"].value)
    res = run(*common, "--seeds", "0,1,2", "--store", store, "--run-dir", tmp_path / "job")
    assert res.exit_code == 0, res.output
    assert "over seeds" in res.output
    (row,) = ResultStore(store).records()
    aia = row.metrics["average_incremental_accuracy"]
    assert aia.n == 3 and row.seeds == [0, 1, 2]
    assert math.isclose(aia.value, float(np.mean(singles)), abs_tol=1e-12)
    assert math.isclose(aia.ci95, t_ci(singles), rel_tol=1e-9)
    for s in (0, 1, 2):  # one folder (checkpoints, plot) per seed, one result.json
        assert (tmp_path / "job" / f"seed{s}" / "accuracy.png").exists()
    saved = json.loads((tmp_path / "job" / "result.json").read_text())["rows"]
    assert saved[0]["metrics"]["average_incremental_accuracy"]["value"] == aia.value


def test_rerun_reproduces_a_row_of_each_task(tmp_path):
    store = tmp_path / "r.sqlite"
    jobs = [
        ("fewshot", "-d", "digits", "-m", "protonet", "--train-steps", 5, "--episodes", 40,
         "--shots", 1, "--shots", 5, "-o", "image_size=16", "--backbone", "conv4"),
        ("continual", "-d", "digits", "-m", "finetune", "--experiences", 2, "--epochs", 1,
         "--backbone", "mlp", "-o", "image_size=8", "--classes", 4, "--device", "cpu",
         "--run-dir", tmp_path / "c"),
        ("ood", "--id", "digits:0-4", "--ood", "digits:5-9", "-m", "ce", "--epochs", 1,
         "--score", "msp,knn", "--backbone", "mlp", "-o", "image_size=8", "--device", "cpu",
         "--run-dir", tmp_path / "o"),
    ]
    for job in jobs:
        res = run(*job, "--store", store, "--no-progress")
        assert res.exit_code == 0, res.output
    rows = ResultStore(store).records()
    assert {r.task for r in rows} == {"fewshot", "continual", "ood"}
    for row in rows:  # every row rebuilds exactly its method
        method = row.build_method()
        assert method.get_params() == build_method(row.method_name, **row.method_params).get_params()
        assert method.get_params() == row.method_params
    # one row of each task through the CLI (the second few-shot row and the knn row: a
    # re-run restricted to a row that is not the job's first)
    for row in (rows[1], next(r for r in rows if r.task == "continual"),
                next(r for r in rows if r.method == "ce+knn")):
        res = run("rerun", row.id, "--store", store, "--run-dir", tmp_path / f"re{row.id}")
        assert res.exit_code == 0, res.output
        assert "reproduced exactly" in res.output
    # from Python: the re-run's primary metric equals the stored one
    again = rerun(rows[0], tmp_path / "py")
    assert again.records[0].primary.value == rows[0].primary.value
    assert len(ResultStore(store).records()) == len(rows)  # rerun wrote nothing


def test_rerun_refuses_rows_without_a_job(tmp_path):
    from protobench.tasks import Metric, ResultRecord

    store = ResultStore(tmp_path / "r.sqlite")
    (rid,) = store.add_all([ResultRecord(task="fewshot", dataset="digits", split="test",
                                         method="ncm", setting={}, config={},
                                         metrics={"accuracy": Metric(0.5)}, seed=0)])
    res = run("rerun", rid, "--store", tmp_path / "r.sqlite")
    assert res.exit_code == 2 and "no job to re-run" in res.output
    res = run("rerun", 999, "--store", tmp_path / "r.sqlite")
    assert res.exit_code == 2 and "no row 999" in res.output


def test_job_options_are_passed_by_name_only(tmp_path):
    # ncm declares no training options: --train-steps is ignored, --clip-model refused
    out = run_fewshot(FewShotConfig(dataset="digits", method="ncm", episodes=20,
                                    train_steps=5, store=None, progress=False))
    assert "train_steps" not in out[0].record.method_params
    with pytest.raises(UserError, match="--clip-model applies to"):
        run_fewshot(FewShotConfig(dataset="digits", method="ncm", episodes=20,
                                  clip_model="RN50", store=None, progress=False))
    with pytest.raises(UserError, match="with --seeds the job sets each seed"):
        run_continual(ContinualConfig(dataset="digits", method="finetune", seeds=(0, 1),
                                      method_params={"seed": 3}, store=None, progress=False))


def test_provenance_is_kept_apart_from_parameters(tmp_path):
    (o,) = run_fewshot(FewShotConfig(dataset="digits", method="ncm", episodes=20,
                                     store=str(tmp_path / "r.sqlite"), progress=False,
                                     run_dir=str(tmp_path / "run")))
    r = ResultStore(tmp_path / "r.sqlite").records()[0]
    assert r.method_name == "ncm" and r.method_params == build_method("ncm").get_params()
    assert not set(r.method_params) & set(r.config)  # no parameter mixed into the context
    assert r.machine["cores"] >= 1 and r.versions["torch"] and r.timestamp
    assert r.job["task"] == "fewshot" and r.job["config"]["episodes"] == 20
    assert r.data["manifest_hash"] == r.manifest_hash
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["rows"][0]["metrics"]["accuracy"]["value"] == o.record.metrics["accuracy"].value
