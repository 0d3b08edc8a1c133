"""The sweep driver: idempotent cells, failed cells, kill -9 then --resume, only the
driver writes (many workers lose nothing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from protobench.cli import app
from protobench.sweep import load_grid, make_executor, run_sweep, validate
from protobench.tasks import ResultStore

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "g.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


NCM = """
    name: ncm-grid
    task: fewshot
    datasets: [digits]
    methods: [ncm, {name: ncm, params: {metric: cosine}, label: ncm-cos}]
    settings: {ways: 5, shots: [1, 5], episodes: %d}
    seeds: [0, 1]
"""


def rows_by_cell(store: Path) -> dict[str, float]:
    """cell key -> primary metric of its (single) row, from the store."""
    out = {}
    for r in ResultStore(store).records():
        key = r.config["sweep"]["cell"]
        assert key not in out, "a cell was written twice"
        out[key] = r.primary.value
    return out


def test_cells_are_idempotent_and_match_the_cli(tmp_path, one_thread):
    grid = write(tmp_path, NCM % 40)
    store = tmp_path / "r.sqlite"
    res = runner.invoke(app, ["sweep", str(grid), "--store", str(store)])
    assert res.exit_code == 0, res.output
    assert "8 cells run, 0 skipped" in res.output
    first = rows_by_cell(store)
    assert len(first) == 8
    again = runner.invoke(app, ["sweep", str(grid), "--store", str(store)])
    assert again.exit_code == 0 and "0 cells run, 8 skipped" in again.output
    assert rows_by_cell(store) == first  # nothing re-run, nothing duplicated
    # a cell's row equals the same job typed at the CLI
    cli_store = tmp_path / "cli.sqlite"
    one = runner.invoke(app, ["fewshot", "-d", "digits", "-m", "ncm", "-p", "metric=cosine",
                              "--shots", 5, "--episodes", 40, "--seed", 1, "--store",
                              str(cli_store), "--no-progress"])
    assert one.exit_code == 0, one.output
    (cli_row,) = ResultStore(cli_store).records()
    (swept,) = [r for r in ResultStore(store).records()
                if r.config["sweep"]["label"] == "ncm-cos" and r.setting["shots"] == 5
                and r.seed == 1]
    assert swept.primary == cli_row.primary and swept.manifest_hash == cli_row.manifest_hash
    # the summary is aggregated over seeds
    assert "fewshot/digits" in res.output


def test_a_failing_cell_is_recorded_and_the_others_land(tmp_path, one_thread):
    text = """
    name: with-a-failure
    task: fewshot
    datasets: [digits]
    methods: [ncm, {name: protonet, params: {train_steps: 2}}]
    settings: {ways: 5, shots: 1, episodes: 20, train_dataset: features}
    seeds: [0]
    """
    store = tmp_path / "r.sqlite"
    res = runner.invoke(app, ["sweep", str(write(tmp_path, text)), "--store", str(store)])
    assert res.exit_code == 1, res.output
    assert "1 failed" in res.output and "--retry-failed" in res.output
    cells = ResultStore(store).cells("with-a-failure")
    assert sorted(v["status"] for v in cells.values()) == ["done", "failed"]
    (failed,) = [v for v in cells.values() if v["status"] == "failed"]
    assert "feature file" in failed["error"] and failed["row_ids"] == []
    assert [r.method for r in ResultStore(store).records()] == ["ncm"]


def test_kill_9_then_resume_gives_the_uninterrupted_rows(tmp_path):
    grid = write(tmp_path, NCM % 400)
    whole, killed = tmp_path / "whole.sqlite", tmp_path / "killed.sqlite"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "protobench.cli", "sweep", str(grid)]
    done = subprocess.run([*cmd, "--store", str(whole)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    driver = subprocess.Popen([*cmd, "--store", str(killed)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once some, not all, cells are written
        n = len(ResultStore(killed).cells()) if killed.exists() else 0
        if n >= 2:
            break
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    partial = rows_by_cell(killed)
    assert 2 <= len(partial) < 8
    resumed = subprocess.run([*cmd, "--store", str(killed), "--resume"], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{8 - len(partial)} cells run, {len(partial)} skipped" in resumed.stdout
    assert rows_by_cell(killed) == rows_by_cell(whole)  # same cells, same numbers
    assert len(ResultStore(killed).records()) == 8


def test_resume_needs_a_started_grid(tmp_path):
    res = runner.invoke(app, ["sweep", str(write(tmp_path, NCM % 20)), "--resume",
                              "--store", str(tmp_path / "r.sqlite")])
    assert res.exit_code == 2 and "nothing to resume" in res.output


def test_many_workers_write_only_through_the_driver(tmp_path):
    grid = validate(load_grid(write(tmp_path, NCM % 10)))
    store = tmp_path / "r.sqlite"
    ex = make_executor("local", 4)  # 32 workers: tests/sweep/test_executors.py
    try:
        summary = run_sweep(grid, store, ex)
    finally:
        ex.close()
    assert len(summary.done) == 8 and not summary.failed
    assert len(rows_by_cell(store)) == 8


@pytest.mark.usefixtures("one_thread")
def test_continual_cells_resume_from_their_checkpoint(tmp_path):
    text = """
    name: stream-grid
    task: continual
    datasets: [digits]
    methods: [{name: finetune, params: {epochs: 1, backbone: mlp}}]
    settings: {experiences: 2, num_classes: 4, dataset_options: {image_size: 8}}
    seeds: [0, 1]
    """
    store = tmp_path / "r.sqlite"
    res = runner.invoke(app, ["sweep", str(write(tmp_path, text)), "--store", str(store)])
    assert res.exit_code == 0, res.output
    rows = ResultStore(store).records("continual/digits")
    assert sorted(r.seed for r in rows) == [0, 1]
    assert all(r.job["task"] == "continual" for r in rows)


def test_resume_starts_the_continual_cells_a_grid_gained(tmp_path, monkeypatch):
    """--resume of a grid that gained a method: the old cells are skipped, the new ones
    have no checkpoint to continue from and start from scratch."""
    monkeypatch.setenv("PROTOBENCH_RUNS", str(tmp_path / "runs"))
    text = """
    name: grown-grid
    task: continual
    datasets: [digits]
    methods: [%s]
    settings: {experiences: 2, num_classes: 4, dataset_options: {image_size: 8}}
    options: {epochs: 1, backbone: mlp}
    seeds: [0]
    """
    store = tmp_path / "r.sqlite"
    res = runner.invoke(app, ["sweep", str(write(tmp_path, text % "finetune")), "--store",
                              str(store)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["sweep", str(write(tmp_path, text % "finetune, lwf")),
                              "--store", str(store), "--resume"])
    assert res.exit_code == 0, res.output
    assert "1 cells run, 1 skipped" in res.output
    assert sorted(r.method for r in ResultStore(store).records()) == ["finetune", "lwf"]
