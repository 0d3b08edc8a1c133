"""Aggregation over seeds on real tiny runs of every task: groups of rows that differ only
in the seed, each seed's value once, mean and CI against scipy's t interval; the runner
keeps every seed's per-episode accuracies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

from protobench.cli import app
from protobench.leaderboard.aggregate import aggregate_rows, to_markdown
from protobench.tasks import ResultStore
from protobench.tasks.continual import ContinualConfig, run_continual
from protobench.tasks.fewshot import FewShotConfig, run_fewshot
from protobench.tasks.ood import OODConfig, run_ood

runner = CliRunner()


def t_half(values: list[float]) -> float:
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                              scale=stats.sem(values))
    return (hi - lo) / 2


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """digits 8x8 rows of every task: ncm over seeds 0-2 (one row) plus seed 3 twice, a
    cosine variant over seeds 0,1, an unnormalised variant on one fixed episode file over
    seeds 0,1; finetune over seeds 0,1 and joint as two single-seed rows; ce with two OOD
    scores over seeds 0,1."""
    root = tmp_path_factory.mktemp("aggregate")
    path = str(root / "r.sqlite")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    few = dict(dataset="digits", method="ncm", episodes=40, store=path, progress=False,
               plot=False, device="cpu", dataset_options={"image_size": 8},
               method_params={"centre": False}, run_dir=str(root / "fs"))
    rows = {"ncm": run_fewshot(FewShotConfig(**few, seeds=(0, 1, 2),
                                             save_episodes=str(root / "ep")))[0].record}
    for _ in range(2):  # a repeated seed counts once
        rows["ncm3"] = run_fewshot(FewShotConfig(**few, seed=3))[0].record
    run_fewshot(FewShotConfig(**few, metric="cosine", seeds=(0, 1)))
    (fixed,) = (root / "ep").glob("*seed0.json")
    rows["fixed"] = run_fewshot(FewShotConfig(
        **{**few, "method_params": {"centre": False, "normalise": False}}, seeds=(0, 1),
        episodes_file=str(fixed)))[0].record
    cont = dict(dataset="digits", experiences=2, epochs=1, backbone="mlp", num_classes=4,
                dataset_options={"image_size": 8}, device="cpu", store=path, progress=False,
                plot=False)
    rows["finetune"] = run_continual(ContinualConfig(method="finetune", seeds=(0, 1),
                                                     run_dir=str(root / "ft"), **cont)).record
    for s in (0, 1):
        rows[f"joint{s}"] = run_continual(ContinualConfig(method="joint", seed=s,
                                                          run_dir=str(root / f"j{s}"),
                                                          **cont)).record
    ood = run_ood(OODConfig(id="digits:0-4", ood="digits:5-9", method="ce", epochs=1,
                            scores=("msp", "knn"), backbone="mlp",
                            dataset_options={"image_size": 8}, device="cpu", seeds=(0, 1),
                            store=path, progress=False, plot=False, run_dir=str(root / "o")))
    rows.update({r.method: r for r in ood.records})
    torch.set_num_threads(before)
    return ResultStore(path), rows


def test_runner_keeps_every_seeds_episode_accuracies(store):
    rs, rows = store
    ncm = rs.get(rows["ncm"].id)
    assert list(ncm.samples) == [p["manifest_hash"] for p in ncm.per_seed]
    for p in ncm.per_seed:
        values = ncm.samples[p["manifest_hash"]]
        assert len(values) == 40
        assert math.isclose(np.mean(values), p["metrics"]["accuracy"]["value"], rel_tol=1e-12)
    # both seeds on one fixed episode list: one entry per seed
    fixed = rs.get(rows["fixed"].id)
    (h,) = {p["manifest_hash"] for p in fixed.per_seed}
    assert list(fixed.samples) == [f"{h}#seed0", f"{h}#seed1"]
    assert rs.get(rows["finetune"].id).samples == {}  # continual rows keep none


def test_fewshot_groups_differ_only_in_the_seed(store):
    rs, rows = store
    groups = aggregate_rows(rs.records("fewshot/digits"))
    assert sorted(g.n for g in groups) == [2, 2, 4]  # sqeuclidean, cosine, unnormalised
    assert [g.rank for g in groups] == [1, 2, 3]
    assert [g.mean for g in groups] == sorted((g.mean for g in groups), reverse=True)
    (g,) = [g for g in groups if g.n == 4]
    ncm, ncm3 = rows["ncm"], rows["ncm3"]
    values = [p["metrics"]["accuracy"]["value"] for p in ncm.per_seed]
    values.append(ncm3.metrics["accuracy"].value)
    assert g.seeds == (0, 1, 2, 3) and list(g.values) == values
    assert math.isclose(g.mean, float(np.mean(values)), abs_tol=1e-15)
    assert math.isclose(g.ci95, t_half(values), rel_tol=1e-9)
    assert len(g.row_ids) == 3  # the seeds row and seed 3 twice
    assert g.label == "identity sqeuclidean; preset=defaults, normalise=true"
    assert {x.label for x in groups} == {g.label, "identity cosine; preset=defaults, "
                                         "normalise=true", "identity sqeuclidean; "
                                         "preset=defaults, normalise=false"}
    assert all(x.setting == "5w1s 15q" and x.metric == "accuracy" for x in groups)


def test_continual_and_ood_groups(store):
    rs, rows = store
    (ft, joint) = sorted(aggregate_rows(rs.records("continual/digits")), key=lambda g: g.method)
    metric = "average_incremental_accuracy"
    assert (ft.method, ft.seeds, joint.method, joint.seeds) == ("finetune", (0, 1), "joint",
                                                                 (0, 1))
    jv = [rows[f"joint{s}"].metrics[metric].value for s in (0, 1)]
    assert list(joint.values) == jv and math.isclose(joint.ci95, t_half(jv), rel_tol=1e-9)
    fv = [p["metrics"][metric]["value"] for p in rows["finetune"].per_seed]
    assert list(ft.values) == fv and math.isclose(ft.ci95, t_half(fv), rel_tol=1e-9)
    ood = {g.method: g for g in aggregate_rows(rs.records("ood/digits"))}
    assert set(ood) == {"ce+msp", "ce+knn"}
    for name, g in ood.items():
        v = [p["metrics"]["auroc"]["value"] for p in rows[name].per_seed]
        assert (g.metric, g.seeds, list(g.values)) == ("auroc", (0, 1), v)
        assert math.isclose(g.mean, float(np.mean(v)), abs_tol=1e-15)
        assert math.isclose(g.ci95, t_half(v), rel_tol=1e-9)
    one = aggregate_rows([rows["joint0"]])[0]
    assert one.ci95 is None and "±" not in one.value_text


def test_ood_rows_keep_each_seeds_roc_curve_and_still_pair_by_seed(store):
    rs, rows = store
    (msp,) = [r for r in rs.records("ood/digits", samples=True) if r.method == "ce+msp"]
    for p in msp.per_seed:
        s = p["seed"]
        fpr = msp.samples[f"roc:digits:5-9:seed{s}:fpr"]
        tpr = msp.samples[f"roc:digits:5-9:seed{s}:tpr"]
        # the stored curve is the row's: its area is the seed's AUROC
        assert math.isclose(np.trapezoid(tpr, fpr), p["metrics"]["auroc"]["value"],
                            abs_tol=1e-9)
    from protobench.leaderboard.compare import compare_board

    (c,) = compare_board(rs, "ood/digits", "ce+msp", "ce+knn").comparisons
    assert c.unit == "seeds" and len(c.a_values) == 2  # seeds, not ROC points


def test_cli_show_aggregate_and_markdown(store):
    rs, _ = store
    res = runner.invoke(app, ["leaderboard", "show", "continual/digits", "--aggregate",
                              "--store", str(rs.path)])
    assert res.exit_code == 0, res.output
    groups = aggregate_rows(rs.records("continual/digits"))
    for g in groups:  # the console folds cells: look for the mean and the half-width
        assert f"{100 * g.mean:.2f}" in res.output and f"{100 * g.ci95:.2f}" in res.output
    assert "mean over seeds" in res.output and "Student-t" in res.output
    md = to_markdown("continual/digits", groups)
    assert md.startswith("## continual/digits (mean over seeds, Student-t 95% CI)")
    assert all(f"| {g.value_text} | 2 | 0,1 |" in md for g in groups)
    assert f"| {groups[0].setting} | 1 | {groups[0].method} |" in md
