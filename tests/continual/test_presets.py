"""With its digits preset, every continual method learns every new experience, and the row
says which preset ran; --config names a preset or the card's defaults."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from protobench.cli import app
from protobench.methods.presets import list_presets
from protobench.tasks import ResultStore
from protobench.tasks.continual import ContinualConfig, run_continual

runner = CliRunner()


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("method", ["finetune", "napa-vq", "prd", "joint"])
def test_digits_preset_learns_every_new_experience(tmp_path, method):
    preset = list_presets(method)["digits"]
    out = run_continual(ContinualConfig(dataset="digits", method=method, experiences=5,
                                        device="cpu", run_dir=str(tmp_path), store=None,
                                        progress=False, plot=False))
    diagonal = out.result.accuracy.diagonal()
    assert bool((diagonal >= 0.5).all()), f"{method}: A[i, i] = {diagonal.tolist()}"
    assert out.record.config["preset"] == preset.label
    assert out.record.config["dataset_options"] == preset.dataset_options
    for key, value in preset.params.items():
        assert out.record.method_params[key] == value


def test_config_defaults_and_unknown_presets(tmp_path):
    store = tmp_path / "r.sqlite"
    common = ("continual", "-d", "digits", "-m", "napa-vq", "--experiences", 5, "--epochs", 1,
              "--backbone", "mlp", "-o", "image_size=8", "--device", "cpu", "--no-progress",
              "--store", store, "--run-dir", tmp_path / "run")
    bad = runner.invoke(app, [str(a) for a in (*common, "--config", "nope")])
    assert bad.exit_code == 2 and "no preset 'nope'" in bad.output and "digits" in bad.output
    ok = runner.invoke(app, [str(a) for a in (*common, "--config", "defaults")])
    assert ok.exit_code == 0, ok.output
    (row,) = ResultStore(store).records()
    assert row.config["preset"] == "defaults"
    assert row.method_params["kd_weight"] == 10.0 and row.method_params["batch_size"] == 64  # the card's
