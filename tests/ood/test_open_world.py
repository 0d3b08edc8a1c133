"""Open-world streams: unseen classes as OOD after each experience (`--ood-score`)."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from protobench.cli import app
from protobench.methods import build_method
from protobench.ood.metrics import ood_metrics
from protobench.tasks import ResultStore
from protobench.tasks.continual_run import run_stream
from protobench.tasks.open_world import open_world_metrics


@pytest.mark.usefixtures("one_thread")
def test_open_world_metrics_match_a_direct_computation(digits_stream):
    stream = digits_stream
    method = build_method("finetune", backbone="mlp", epochs=1, seed=0)
    cpu = torch.device("cpu")
    rows = []
    result = run_stream(method, stream, cpu, progress=False,
                        open_world=lambda m, t: rows.append(t) or
                        open_world_metrics(m, stream, t, cpu, "msp"))
    assert rows == [0, 1, 2, 3, 4]
    per_exp = result.extra["open_world"]
    assert per_exp[-1] is None and len(per_exp) == 5
    # after the last experience: recompute the t = 3 row by hand with MSP over predict()
    t = 3
    seen = torch.cat([stream.experience(j).test_indices for j in range(t + 1)])
    unseen = stream.experience(4).test_indices
    m = build_method("finetune", backbone="mlp", epochs=1, seed=0)
    run_stream(m, stream, cpu, progress=False)  # same seeds: same final model as `method`
    got = open_world_metrics(m, stream, t, cpu, "msp")
    xs, _ = stream.inputs(stream.test, seen)
    xu, _ = stream.inputs(stream.test, unseen)
    p_id = torch.softmax(m.predict(xs, cpu), 1).max(1).values
    p_ood = torch.softmax(m.predict(xu, cpu), 1).max(1).values
    ref = ood_metrics(p_id, p_ood)
    assert got["n_id"] == len(seen) and got["n_ood"] == len(unseen)
    for k, v in ref.items():
        assert np.isclose(got[k], v, atol=1e-6)


@pytest.mark.usefixtures("one_thread")
def test_continual_cli_flag(tmp_path):
    store = tmp_path / "r.sqlite"
    res = CliRunner().invoke(app, [str(a) for a in (
        "continual", "-d", "digits", "-m", "finetune", "--experiences", 3, "--backbone", "mlp",
        "-o", "image_size=8", "--epochs", 1, "--device", "cpu", "--no-progress",
        "--ood-score", "knn", "--ood-score-param", "k=3", "--run-dir", tmp_path / "run",
        "--store", store)])
    assert res.exit_code == 0, res.output
    assert "open world" in res.output and "exp 2" in res.output
    (rec,) = ResultStore(store).records("continual/digits")
    rows = rec.config["open_world"]["per_experience"]
    assert [r["after"] for r in rows] == [1, 2] and rec.config["open_world"]["score"] == "knn"
    assert rec.metrics["open_world_auroc"].value == pytest.approx(
        (rows[0]["auroc"] + rows[1]["auroc"]) / 2)
    bad = CliRunner().invoke(app, ["continual", "-d", "digits", "--ood-score", "nope",
                                   "--store", str(store)])
    assert bad.exit_code == 2 and "unknown score" in bad.output
