"""End-to-end CLI runs on the embedded digits dataset."""

import numpy as np
import pytest
from typer.testing import CliRunner

from protobench.cli import app
from protobench.tasks import ResultStore

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_fewshot_trains_evaluates_and_writes_rows(tmp_path):
    store = tmp_path / "r.sqlite"
    res = run("fewshot", "--dataset", "digits", "--method", "protonet", "--shots", 1,
              "--shots", 5, "--train-steps", 20, "--episodes", 100, "--dataset-option",
              "image_size=16", "--store", store, "--save-episodes", tmp_path / "eps")
    assert res.exit_code == 0, res.output
    assert "5-way 1-shot" in res.output and "5-way 5-shot" in res.output
    records = ResultStore(store).records("fewshot/digits")
    assert [r.setting["shots"] for r in records] == [1, 5]
    assert all(r.method_params["train_shots"] == r.setting["shots"] for r in records)
    assert all(0.2 < r.metrics["accuracy"].value <= 1 for r in records)
    assert len(list((tmp_path / "eps").glob("*.json"))) == 2
    shown = run("leaderboard", "show", "fewshot/digits", "--store", store)
    assert shown.exit_code == 0 and "protonet" in shown.output
    exported = run("leaderboard", "export", "--store", store, "--out", tmp_path / "lb")
    assert exported.exit_code == 0 and (tmp_path / "lb" / "fewshot_digits.md").exists()


def test_same_seed_same_result_and_replay(tmp_path):
    store = tmp_path / "r.sqlite"
    common = ("fewshot", "-d", "digits", "-m", "ncm", "--episodes", 200, "--store", store)
    assert run(*common, "--seed", 3, "--save-episodes", tmp_path).exit_code == 0
    assert run(*common, "--seed", 3).exit_code == 0
    assert run(*common, "--seed", 4).exit_code == 0
    manifest = next(tmp_path.glob("*.json"))
    assert run(*common, "--seed", 99, "--episodes-file", manifest).exit_code == 0
    a, b, c, d = ResultStore(store).records()
    assert a.metrics == b.metrics and a.manifest_hash == b.manifest_hash
    assert c.manifest_hash != a.manifest_hash and c.metrics != a.metrics
    assert d.manifest_hash == a.manifest_hash and d.metrics == a.metrics


def test_listings():
    assert "omniglot" in run("datasets").output
    out = run("methods").output
    assert "protonet" in out and "ncm" in out


@pytest.mark.parametrize("args, message", [
    (("-d", "nope"), "unknown dataset 'nope'"),
    (("-d", "digits", "-m", "nope"), "unknown method 'nope'"),
    (("-d", "digits", "--ways", 6), "lower --ways"),
    (("-d", "digits", "--shots", 170), "lower --shots"),
    (("-d", "digits", "--metric", "manhattan"), "does not support metric"),
    (("-d", "omniglot", "--data-root", "/nonexistent/omniglot"), "does not exist"),
    (("-d", "digits", "--dataset-option", "colour"), "key=value"),
])
def test_bad_input_exits_2_without_rows(tmp_path, args, message):
    store = tmp_path / "r.sqlite"
    res = run("fewshot", *args, "--train-steps", 1, "--store", store)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    assert not store.exists()


def test_nan_features_exit_2(tmp_path):
    x = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    x[7, 2] = np.nan
    path = tmp_path / "f.npz"
    np.savez(path, features=x, labels=np.repeat(np.arange(6), 10))
    store = tmp_path / "r.sqlite"
    res = run("fewshot", "-d", "features", "--data-root", path, "--split", "all", "-m", "ncm",
              "--shots", 1, "--queries", 2, "--store", store)
    assert res.exit_code == 2, res.output
    assert "NaN" in res.output and not store.exists()


def test_two_processes_same_seed_same_accuracy(tmp_path):
    """Training and evaluation are reproducible across processes for a seed."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json, sys;"
        "from protobench.tasks.fewshot import FewShotConfig, run_fewshot;"
        "o = run_fewshot(FewShotConfig(dataset='digits', shots=(1,), episodes=50,"
        " train_steps=8, seed=int(sys.argv[1]), dataset_options={'image_size': 16},"
        " store=None, progress=False));"
        "print(json.dumps([o[0].result.accuracies.tolist(), o[0].record.manifest_hash]))"
    )

    def start(seed):  # one thread each, all three at once: same thread count, less wall
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.Popen([sys.executable, "-c", code, str(seed)], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def result(proc):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        return json.loads(out.strip().splitlines()[-1])

    a, b, c = (result(p) for p in [start(1), start(1), start(2)])
    assert a == b
    assert a[1] != c[1] and a[0] != c[0]


def test_features_file_without_train_split_runs_ncm_uncentred(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(6, 1, 4)) * 3 + rng.normal(size=(6, 10, 4))).reshape(60, 4)
    path = tmp_path / "f.npz"
    np.savez(path, features=x.astype(np.float32), labels=np.repeat(np.arange(6), 10))
    store = tmp_path / "r.sqlite"
    res = run("fewshot", "-d", "features", "--data-root", path, "--split", "all", "-m", "ncm",
              "--shots", 1, "--queries", 2, "--episodes", 50, "--store", store)
    assert res.exit_code == 0, res.output
    (record,) = ResultStore(store).records()
    assert record.config["fit"] == {"centred_on": "none"}


def test_fixed_episode_dataset_refuses_other_shots(tmp_path):
    from pathlib import Path

    omniglot = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"
    if not omniglot.exists():
        pytest.skip(f"real Omniglot files absent ({omniglot})")
    res = run("fewshot", "-d", "omniglot-runs", "--data-root", omniglot, "-m", "ncm",
              "--shots", 5, "--store", tmp_path / "r.sqlite")
    assert res.exit_code == 2 and "fixed 20-way 1-shot" in res.output


def test_leaderboard_show_and_export_tell_rows_apart(tmp_path, monkeypatch):
    """Rows the old board labelled alike show what differs; a row measured on other
    episodes is marked, ranked apart and explained under the table."""
    import re

    from protobench import cli
    from protobench.tasks import Metric, ResultRecord

    def rec(acc, options, manifest="ab" * 32):
        return ResultRecord(
            task="fewshot", dataset="omniglot", split="test", method="protonet",
            setting={"ways": 5, "shots": 1, "queries": 15, "episodes": 1000},
            config={"backbone": "conv4", "metric": "geodesic", "amp": True,
                    "metric_options": options, "fit": {"checkpoint": "runs/h.pt"}},
            metrics={"accuracy": Metric(acc, 0.01, 1000)}, seed=0, manifest_hash=manifest,
            timestamp="2026-11-25T14:58:52+00:00")

    store = tmp_path / "r.sqlite"
    ResultStore(store).add_all([rec(0.65, None), rec(0.89, {"m": 128, "pool": "test"}),
                                rec(0.99, {"m": 5}, manifest="cd" * 32)])
    monkeypatch.setattr(cli.out, "width", 400)
    shown = run("leaderboard", "show", "fewshot/omniglot", "--store", store)
    assert shown.exit_code == 0, shown.output
    assert "conv4 geodesic; checkpoint=runs/h.pt, metric_options.m=128, " \
           "metric_options.pool=test" in shown.output
    assert re.search(r"conv4 geodesic; checkpoint=runs/h\.pt +│", shown.output)  # defaults
    assert "│ 1 † " in shown.output and "† cdcdcdcdcdcd (1 row)" in shown.output
    assert "†: measured on other episodes" in shown.output
    exported = run("leaderboard", "export", "--store", store, "--out", tmp_path / "lb")
    assert exported.exit_code == 0, exported.output
    md = (tmp_path / "lb" / "fewshot_omniglot.md").read_text()
    assert "| 1 † | protonet | 99.00 ± 1.00 |" in md and "- †: measured on other" in md
