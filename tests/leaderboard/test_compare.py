"""Paired comparisons on real tiny runs: per-episode accuracies kept in the store (float64
exact, in a side table old stores lack), pairs checked against episodes evaluated again
with ``evaluate_episodes`` and against scipy, and every refusal (exit code 2)."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from typer.testing import CliRunner

from protobench.cli import app
from protobench.datasets import load_dataset
from protobench.episodic import EpisodeList
from protobench.errors import UserError
from protobench.evaluation import evaluate_episodes
from protobench.leaderboard.compare import compare_board, compare_rows
from protobench.methods import load_method
from protobench.tasks import Metric, ResultRecord, ResultStore
from protobench.tasks.continual import ContinualConfig, run_continual
from protobench.tasks.fewshot import FewShotConfig, run_fewshot

runner = CliRunner()
BOARD = "fewshot/digits"
NCM = "ncm[metric=sqeuclidean]"
JOINT = "joint[epochs=1,stream.test_fraction=0.2]"


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def t_interval(d: np.ndarray) -> tuple[float, float]:
    return stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))


@pytest.fixture(scope="module")
def fewshot(tmp_path_factory):
    """ncm (1 and 5 shots), ncm with cosine (seed 0 and seed 1) and a 5-step protonet, all
    on digits 8x8, 50 episodes; the seed-0 1-shot episodes are shared by all but seed 1."""
    root = tmp_path_factory.mktemp("fewshot")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    common = dict(dataset="digits", episodes=50, store=str(root / "r.sqlite"), progress=False,
                  plot=False, device="cpu", dataset_options={"image_size": 8},
                  save_episodes=str(root / "episodes"), run_dir=str(root / "run"))
    ncm = dict(method="ncm", method_params={"centre": False})
    out = {
        "ncm": run_fewshot(FewShotConfig(**ncm, shots=(1, 5), **common)),
        "cosine": run_fewshot(FewShotConfig(**ncm, metric="cosine", **common)),
        "protonet": run_fewshot(FewShotConfig(method="protonet", train_steps=5, backbone="mlp",
                                              save_checkpoint=str(root / "protonet.pt"),
                                              **common)),
        "cosine1": run_fewshot(FewShotConfig(**ncm, metric="cosine", seed=1, **common)),
    }
    torch.set_num_threads(before)
    return root, out


def episodes(root: Path, seed: int = 0, shots: int = 1) -> EpisodeList:
    (path,) = (root / "episodes").glob(f"digits_*_5w{shots}s15q_50e_seed{seed}.json")
    return EpisodeList.load(path)


def recomputed(root: Path, lst: EpisodeList) -> tuple[np.ndarray, np.ndarray]:
    """Per-episode accuracies of ncm and protonet on ``lst``, evaluated again: ncm from the
    L2-normalised pixels, protonet from its saved checkpoint's features."""
    test = load_dataset("digits", lst.split, image_size=8)
    x = test.get(torch.arange(len(test))).flatten(1).float()
    ncm = evaluate_episodes(F.normalize(x, dim=1), lst).accuracies
    protonet = load_method(root / "protonet.pt")
    feats = protonet.transform(protonet.features(test, torch.device("cpu")))
    proto = evaluate_episodes(feats, lst, metric=protonet.metric).accuracies
    return ncm.numpy(), proto.numpy()


def test_samples_round_trip_float64_exact(fewshot):
    root, out = fewshot
    store = ResultStore(root / "r.sqlite")
    (o,) = out["protonet"]
    row = store.get(o.record.id)
    assert row.samples == {o.record.manifest_hash: o.result.accuracies.tolist()}
    assert [r.samples for r in store.records(BOARD)] == [{}] * 5  # only when asked
    full = {r.id: r.samples for r in store.records(BOARD, samples=True)}
    assert full[o.record.id] == row.samples and all(len(s) == 1 for s in full.values())
    assert store.samples([o.record.id]) == {o.record.id: row.samples}
    # awkward floats survive exactly; the JSON columns never hold the samples
    values = [math.pi, 1 / 3, 5e-324, -0.0, 1e308, 0.1 + 0.2]
    rec = ResultRecord(task="fewshot", dataset="x", split="test", method="m", setting={},
                       config={}, metrics={"accuracy": Metric(0.5)}, seed=0,
                       samples={"h1": values, "h2": [0.25]})
    i = store.add(rec)
    back = store.get(i).samples
    assert list(back) == ["h1", "h2"] and back["h1"] == values
    assert math.copysign(1, back["h1"][3]) == -1
    with sqlite3.connect(root / "r.sqlite") as conn:
        cols = conn.execute("SELECT * FROM results WHERE id = ?", (i,)).fetchone()
        (blob,) = conn.execute("SELECT data FROM samples WHERE row_id = ? AND key = 'h1'",
                               (i,)).fetchone()
    assert not any(isinstance(c, str) and "h1" in c for c in cols)
    assert np.frombuffer(blob, dtype="<f8").tolist() == values


def test_old_store_without_samples_table_still_reads(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # the first schema: no samples, cells, method_name...
        conn.execute(
            "CREATE TABLE results (id INTEGER PRIMARY KEY AUTOINCREMENT, board TEXT NOT NULL, "
            "task TEXT NOT NULL, dataset TEXT NOT NULL, split TEXT NOT NULL, method TEXT NOT "
            "NULL, setting TEXT NOT NULL, config TEXT NOT NULL, metrics TEXT NOT NULL, "
            "primary_metric TEXT NOT NULL, primary_value REAL, seed INTEGER NOT NULL, "
            "manifest_hash TEXT NOT NULL, versions TEXT NOT NULL, git_revision TEXT NOT NULL, "
            "device TEXT NOT NULL, wall_time_s REAL NOT NULL, timestamp TEXT NOT NULL)")
        conn.execute(
            "INSERT INTO results VALUES (NULL, 'fewshot/digits', 'fewshot', 'digits', 'test', "
            "'ncm', ?, '{}', ?, 'accuracy', 0.7, 0, 'ab', '{}', '', 'cpu', 1.0, 't')",
            (json.dumps({"ways": 5, "shots": 1}),
             json.dumps({"accuracy": {"value": 0.7, "ci95": 0.01, "n": 50}})))
    store = ResultStore(path)
    for rows in (store.records(BOARD), store.records(BOARD, samples=True), [store.get(1)]):
        (r,) = rows
        assert (r.method, r.metrics["accuracy"].value, r.samples) == ("ncm", 0.7, {})
    assert store.samples([1]) == {}
    i = store.add(ResultRecord(task="fewshot", dataset="digits", split="test", method="ncm",
                               setting={"ways": 5, "shots": 1}, config={},
                               metrics={"accuracy": Metric(0.8)}, seed=1,
                               samples={"cd": [0.75, 0.8]}))
    assert store.get(i).samples == {"cd": [0.75, 0.8]} and store.get(1).samples == {}


def test_fewshot_pairs_episodes_like_an_independent_evaluation(fewshot):
    root, out = fewshot
    lst = episodes(root)
    x, y = recomputed(root, lst)
    (o,) = out["protonet"]
    assert o.record.manifest_hash == lst.hash
    assert np.array_equal(np.asarray(ResultStore(root / "r.sqlite").get(o.record.id)
                                     .samples[lst.hash]), y)
    report = compare_board(ResultStore(root / "r.sqlite"), BOARD, NCM, "protonet")
    assert report.skipped == [("5w5s 15q", "no rows of protonet in this setting")]
    assert len(report.comparisons) == 1
    c = report.comparisons[0]
    assert (c.setting, c.unit, c.n, c.paired_on) == ("5w1s 15q", "episodes", 50, "1 manifest")
    assert np.array_equal(c.a_values, x) and np.array_equal(c.b_values, y)
    d = x - y
    assert math.isclose(c.mean_a, x.mean()) and math.isclose(c.mean_b, y.mean())
    assert math.isclose(c.diff, d.mean(), abs_tol=1e-15)
    assert np.allclose((c.ci_low, c.ci_high), t_interval(d), rtol=1e-12)
    assert math.isclose(c.t_p, stats.ttest_rel(x, y).pvalue, rel_tol=1e-9)
    assert math.isclose(c.wilcoxon_p, stats.wilcoxon(x, y).pvalue, rel_tol=1e-9)
    assert (c.wins, c.ties, c.losses) == ((d > 0).sum(), (d == 0).sum(), (d < 0).sum())
    assert c.wins + c.ties + c.losses == 50
    significant = stats.ttest_rel(x, y).pvalue < 0.05
    if significant:
        better = NCM if d.mean() > 0 else "protonet"
        assert c.verdict.startswith(f"{better} is better than ")
        assert f"by {100 * abs(d.mean()):.1f} points" in c.verdict
        assert c.verdict.endswith("paired on 50 episodes)")
    else:
        assert c.verdict.startswith("no significant difference")


def test_cli_compare_prints_the_pairs_and_the_verdict(fewshot):
    root, _ = fewshot
    res = cli("compare", BOARD, NCM, "protonet", "--store", root / "r.sqlite",
              "--setting", "shots=1")
    assert res.exit_code == 0, res.output
    assert "Wilcoxon" in res.output
    assert "5w1s 15q: " in res.output and "paired on 50 episodes" in res.output
    # ncm has a 5-shot row, the cosine variant not: that setting is skipped, named
    res = cli("compare", BOARD, NCM, "ncm[metric=cosine]", "--store", root / "r.sqlite")
    assert res.exit_code == 0, res.output
    assert "5w5s 15q: skipped, no rows of ncm[metric=cosine] in this setting" in res.output


def test_identical_decisions_give_no_difference(fewshot):
    root, _ = fewshot
    # 1-shot prototypes of L2-normalised features: cosine and sqeuclidean rank alike
    report = compare_board(ResultStore(root / "r.sqlite"), BOARD, "ncm[metric=cosine]", NCM,
                           {"shots": 1})
    (c,) = report.comparisons
    assert c.n == 50 and c.ties == 50 and c.wins == c.losses == 0
    assert (c.t_p, c.wilcoxon_p, c.ci_low, c.ci_high) == (1.0, 1.0, 0.0, 0.0)
    assert c.verdict.startswith("no difference")
    # the cosine variant also ran seed 1: only the shared (seed 0) episodes are paired
    assert c.paired_on == "1 manifest; A has 2, B 1"


@pytest.mark.parametrize(("a", "b", "message"), [
    ("ncm[metric=cosine,seed=1]", "protonet", "share no episodes"),
    ("xyz", "protonet", "no rows of 'xyz' on fewshot/digits; methods there: ncm, protonet"),
    ("ncm", "protonet", "ncm is ambiguous: it matches 2 configurations (ncm[metric=cosine]; "
                        "ncm[metric=sqeuclidean]); name one"),
    ("ncm[metric=geodesic]", "protonet", "no row of ncm matches ncm[metric=geodesic]"),
    (NCM, NCM, "name the same rows"),
])
def test_unpaired_comparisons_are_refused(fewshot, a, b, message):
    root, _ = fewshot
    res = cli("compare", BOARD, a, b, "--store", root / "r.sqlite", "--setting", "shots=1")
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    with pytest.raises(UserError):
        compare_board(ResultStore(root / "r.sqlite"), BOARD, a, b, {"shots": 1})


def test_unknown_setting_and_board_are_refused(fewshot):
    root, _ = fewshot
    res = cli("compare", BOARD, NCM, "protonet", "--store", root / "r.sqlite",
              "--setting", "shots=3")
    assert res.exit_code == 2 and "has shots=3; settings: 5w1s 15q, 5w5s 15q" in res.output
    res = cli("compare", "fewshot/none", NCM, "protonet", "--store", root / "r.sqlite")
    assert res.exit_code == 2 and "no board 'fewshot/none'" in res.output


@pytest.fixture(scope="module")
def continual(tmp_path_factory):
    """finetune over seeds 0,1,2 (one row), joint as three single-seed rows, and two joint
    variants that cannot be paired with finetune (seed 3 only; another test split)."""
    root = tmp_path_factory.mktemp("continual")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    common = dict(dataset="digits", experiences=2, epochs=1, backbone="mlp", num_classes=4,
                  dataset_options={"image_size": 8}, device="cpu", store=str(root / "r.sqlite"),
                  progress=False, plot=False)
    rows = {"finetune": run_continual(ContinualConfig(method="finetune", seeds=(0, 1, 2),
                                                      run_dir=str(root / "ft"), **common)).record}
    for s in (0, 1, 2):
        rows[f"joint{s}"] = run_continual(ContinualConfig(
            method="joint", seed=s, run_dir=str(root / f"j{s}"), **common)).record
    run_continual(ContinualConfig(method="joint", seed=3, run_dir=str(root / "j3"),
                                  **{**common, "epochs": 2}))
    run_continual(ContinualConfig(method="joint", seed=0, test_fraction=0.3,
                                  run_dir=str(root / "jt"), **common))
    torch.set_num_threads(before)
    return root, rows


def test_continual_pairs_seeds_on_the_same_streams(continual):
    root, rows = continual
    ft = rows["finetune"]
    metric = "average_incremental_accuracy"
    x = np.array([rows[f"joint{s}"].metrics[metric].value for s in (0, 1, 2)])
    y = np.array([p["metrics"][metric]["value"] for p in ft.per_seed])
    assert [rows[f"joint{s}"].manifest_hash for s in (0, 1, 2)] == [
        p["manifest_hash"] for p in ft.per_seed]  # same stream per seed
    report = compare_board(ResultStore(root / "r.sqlite"), "continual/digits",
                           JOINT, "finetune")
    (c,) = report.comparisons
    assert (c.unit, c.n, c.paired_on) == ("seeds", 3, "seeds 0, 1, 2")
    assert np.array_equal(c.a_values, x) and np.array_equal(c.b_values, y)
    d = x - y
    assert np.allclose((c.ci_low, c.ci_high), t_interval(d), rtol=1e-12)
    assert math.isclose(c.t_p, stats.ttest_rel(x, y).pvalue, rel_tol=1e-9)
    assert math.isclose(c.wilcoxon_p, stats.wilcoxon(x, y).pvalue, rel_tol=1e-9)
    assert c.wins == (d > 0).sum()
    assert "paired on 3 seeds)" in c.verdict
    # a lower-is-better metric: A wins where it forgets less
    f = compare_board(ResultStore(root / "r.sqlite"), "continual/digits", JOINT,
                      "finetune", metric="average_forgetting").comparisons[0]
    fd = np.array(f.a_values) - np.array(f.b_values)
    assert not f.higher_is_better and f.wins == (fd < 0).sum()
    # one shared seed: reported, not tested
    (one,) = compare_rows([rows["joint0"], ft], "joint", "finetune").comparisons
    assert (one.n, one.paired_on, one.a_values[0]) == (1, "seed 0", x[0])
    assert math.isnan(one.t_p) and one.verdict.startswith("too few pairs for a test (paired "
                                                          "on 1 seed)")


@pytest.mark.parametrize(("a", "message"), [
    ("joint[epochs=2]", "no seed in common (joint[epochs=2]: seeds 3; finetune: seeds 0, 1, 2)"),
    ("joint[stream.test_fraction=0.3]", "the same seeds (0) but not the same stream"),
    ("joint", "joint is ambiguous: it matches 3 configurations"),
])
def test_continual_refusals(continual, a, message):
    root, _ = continual
    res = cli("compare", "continual/digits", a, "finetune", "--store", root / "r.sqlite")
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())


def test_an_empty_value_selects_rows_that_leave_the_key_unset():
    from protobench.leaderboard.compare import _same

    assert _same(None, "") and not _same("test", "")
    assert not _same(None, "test") and _same("test", "test") and _same("0.1", "0.1")
