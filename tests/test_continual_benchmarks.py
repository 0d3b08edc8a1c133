"""The continual benchmark scripts run end to end in their --quick mode (no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from protobench.leaderboard.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
OMNIGLOT = ROOT.parent / "shared" / "data" / "omniglot"
METHODS = {"finetune", "napa-vq", "prd", "joint"}
METRICS = ("average_incremental_accuracy", "final_accuracy", "average_forgetting")


def _run(script: str, tmp_path: Path, *extra: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--threads",
                    "1", "--out", str(tmp_path), *extra], check=True, capture_output=True,
                   cwd=tmp_path, timeout=300)


def _check_accuracy(out: dict, experiences: int, classes: int) -> None:
    assert out["quick"] and out["seeds"] == [0]
    assert all(r["params"]["epochs"] == 1 for r in out["methods"].values())  # --quick wins
    assert out["stream"]["experiences"] == experiences
    assert out["stream"]["classes"] == classes
    assert set(out["methods"]) == METHODS
    for r in out["methods"].values():
        assert len(r["runs"]) == 1 and r["wall_time_s"]["mean"] > 0
        for k in ("average_incremental_accuracy", "final_accuracy"):
            assert 0 <= r[k]["min"] <= r[k]["mean"] <= r[k]["max"] <= 1
        assert -1 <= r["average_forgetting"]["mean"] <= 1
        matrix = r["runs"][0]["accuracy_matrix"]
        assert len(matrix) == experiences and matrix[0][1] is None  # NaN above the diagonal
    checks = out["checks"]
    assert {"napa-vq AIA > finetune", "prd forgetting < finetune", "finetune AIA < joint"} \
        <= set(checks)
    assert all(isinstance(v["ok"], bool) and v["seeds"].endswith("/1") for v in checks.values())


def test_continual_accuracy_quick_digits(tmp_path):
    store = tmp_path / "r.sqlite"
    _run("continual_accuracy.py", tmp_path, "--datasets", "digits", "--store", str(store))
    out = json.loads((tmp_path / "continual_accuracy_digits_quick.json").read_text())
    _check_accuracy(out, experiences=5, classes=10)
    assert (tmp_path / "continual_accuracy_digits_quick.md").read_text().count("| prd [") == 1
    rows = ResultStore(store).records("continual/digits")
    assert {r.method for r in rows} == METHODS


@pytest.mark.skipif(not OMNIGLOT.exists(), reason=f"real Omniglot files absent ({OMNIGLOT})")
def test_continual_accuracy_quick_omniglot(tmp_path):
    _run("continual_accuracy.py", tmp_path, "--datasets", "omniglot", "--data-root",
         str(OMNIGLOT))
    out = json.loads((tmp_path / "continual_accuracy_omniglot_quick.json").read_text())
    _check_accuracy(out, experiences=10, classes=20)  # quick: 20 characters


def test_continual_avalanche_quick(tmp_path):
    pytest.importorskip("avalanche")
    _run("continual_avalanche.py", tmp_path)
    out = json.loads((tmp_path / "continual_avalanche_quick.json").read_text())
    rows = out["rows"]
    assert set(rows) == {"protobench", "plain", "avalanche-naive", "avalanche-lwf"}
    assert out["same_matrix_as_plain"]  # our loop does exactly the plain loop's training
    for r in rows.values():
        assert 0 <= r["final_accuracy"] <= 1 and 0 <= r["average_incremental_accuracy"] <= 1
        assert r["seconds"] > 0 and r["time_vs_plain"] > 0 and r["time_vs_protobench"] > 0
        assert len(r["accuracy_matrix"]) == out["stream"]["experiences"] == 5
    assert rows["plain"]["time_vs_plain"] == 1.0


@pytest.mark.skipif(not OMNIGLOT.exists(), reason=f"real Omniglot files absent ({OMNIGLOT})")
def test_omniglot_settings_are_chosen_on_characters_the_test_streams_never_use():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import omniglot_pools
    from select_presets import omniglot_validation_stream

    from protobench.datasets import load_dataset

    data = load_dataset("omniglot", "all", OMNIGLOT, image_size=28, rotations="none")
    val_pool, test_pool = omniglot_pools(data)
    assert not set(val_pool) & set(test_pool)
    assert sorted(val_pool + test_pool) == list(range(data.num_classes))
    validation = omniglot_validation_stream(str(OMNIGLOT))
    used = {validation.train.class_names[c] for c in range(validation.train.num_classes)}
    test_names = {data.class_names[c] for c in test_pool}
    assert len(used) >= 50 and not used & test_names
