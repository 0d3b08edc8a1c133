"""The continual benchmarks run end to end in their --quick mode (no timing asserted), and
the figures they write agree with the accuracy matrices they write."""

from pathlib import Path

import pytest

from protobench.tasks import ResultStore

ROOT = Path(__file__).resolve().parents[2]
OMNIGLOT = ROOT.parent / "shared" / "data" / "omniglot"
METHODS = {"finetune", "napa-vq", "prd", "joint"}
METRICS = ("average_incremental_accuracy", "final_accuracy", "average_forgetting")


def _check_matrix(matrix: list[list[float | None]], experiences: int, row: dict) -> None:
    """Square, NaN (None) exactly above the diagonal; final accuracy and forgetting are the
    matrix's (the JSON rounds it to 4
    decimals); AIA lies within the seen rows' ranges."""
    assert len(matrix) == experiences and all(len(r) == experiences for r in matrix)
    for i, r in enumerate(matrix):
        assert all(v is None for v in r[i + 1:])
        assert all(v is not None and 0 <= v <= 1 for v in r[:i + 1])
    last = matrix[-1]
    assert row["final_accuracy"] == pytest.approx(sum(last) / len(last), abs=1e-4)
    drops = [max(matrix[i][j] for i in range(j, experiences - 1)) - last[j]
             for j in range(experiences - 1)]
    assert row["average_forgetting"] == pytest.approx(sum(drops) / len(drops), abs=1.5e-4)
    lows = [min(r[:i + 1]) for i, r in enumerate(matrix)]
    highs = [max(r[:i + 1]) for i, r in enumerate(matrix)]
    aia = row["average_incremental_accuracy"]
    assert sum(lows) / experiences - 1e-4 <= aia <= sum(highs) / experiences + 1e-4


def _check_accuracy(out: dict, experiences: int, classes: int) -> None:
    assert out["quick"] and out["seeds"] == [0]
    assert out["benchmark"] == "continual_accuracy"
    assert all(r["params"]["epochs"] == 1 for r in out["methods"].values())  # --quick wins
    stream = out["stream"]
    assert stream["experiences"] == experiences
    assert stream["classes"] == classes
    assert stream["sizes"] == [classes // experiences] * experiences
    total = stream["train_samples"] + stream["test_samples"]
    assert stream["test_samples"] / total == pytest.approx(0.2, abs=0.02)  # 20% held out
    assert set(out["methods"]) == METHODS
    for r in out["methods"].values():
        assert len(r["runs"]) == 1 and r["wall_time_s"]["mean"] > 0
        (run,) = r["runs"]
        assert run["seed"] == 0 and run["wall_time_s"] == r["wall_time_s"]["mean"]
        for k in METRICS:  # one seed: the spread is that seed's value
            assert r[k]["min"] == r[k]["mean"] == r[k]["max"] == run[k] and r[k]["std"] == 0
        for k in ("average_incremental_accuracy", "final_accuracy"):
            assert 0 <= r[k]["min"] <= r[k]["mean"] <= r[k]["max"] <= 1
        assert -1 <= r["average_forgetting"]["mean"] <= 1
        matrix = run["accuracy_matrix"]
        assert len(matrix) == experiences and matrix[0][1] is None  # NaN above the diagonal
        _check_matrix(matrix, experiences, run)
        size = r["options"]["image_size"]
        assert run["input_shape"][-2:] == [size, size]
    checks = out["checks"]
    assert {"napa-vq AIA > finetune", "prd forgetting < finetune", "finetune AIA < joint"} \
        <= set(checks)
    assert all(isinstance(v["ok"], bool) and v["seeds"].endswith("/1") for v in checks.values())
    m = out["methods"]
    aia, fgt = "average_incremental_accuracy", "average_forgetting"
    expected = {**{f"{a} AIA > finetune": m[a][aia]["mean"] > m["finetune"][aia]["mean"]
                   for a in ("napa-vq", "prd")},
                **{f"{a} forgetting < finetune": m[a][fgt]["mean"] < m["finetune"][fgt]["mean"]
                   for a in ("napa-vq", "prd")},
                **{f"{a} AIA < joint": m[a][aia]["mean"] < m["joint"][aia]["mean"]
                   for a in METHODS - {"joint"}}}
    assert {k: v["ok"] for k, v in checks.items()} == expected  # the claims match the means
    for k, v in checks.items():  # one seed: the claim holds on it exactly when on the means
        assert v["seeds"] == ("1/1" if v["ok"] else "0/1"), k


def test_continual_accuracy_quick_digits(quick, tmp_path):
    store = tmp_path / "r.sqlite"
    out = quick("continual_accuracy", "--datasets", "digits", "--store", str(store),
                stem="continual_accuracy_digits")
    _check_accuracy(out, experiences=5, classes=10)
    assert out["dataset"] == "digits" and out["arguments"]["datasets"] == "digits"
    assert not (tmp_path / "continual_accuracy_omniglot_quick.json").exists()
    md = (tmp_path / "continual_accuracy_digits_quick.md").read_text()
    assert md.count("| prd [") == 1 and md.startswith("> **Provenance**")
    rows = ResultStore(store).records("continual/digits")
    assert {r.method for r in rows} == METHODS and len(rows) == len(METHODS)
    for r in rows:  # the leaderboard rows carry the figures of the JSON
        run = out["methods"][r.method]["runs"][0]
        assert r.seed == 0 and r.setting["experiences"] == 5 and r.setting["classes"] == 10
        for k in METRICS:
            assert r.metrics[k].value == pytest.approx(run[k], abs=1e-12)


@pytest.mark.skipif(not OMNIGLOT.exists(), reason=f"real Omniglot files absent ({OMNIGLOT})")
def test_continual_accuracy_quick_omniglot(quick):
    out = quick("continual_accuracy", "--datasets", "omniglot", "--data-root", str(OMNIGLOT),
                stem="continual_accuracy_omniglot")
    _check_accuracy(out, experiences=10, classes=20)  # quick: 20 characters
    assert out["class_pool"] == "from the test half of the characters"


def test_continual_avalanche_quick(quick):
    pytest.importorskip("avalanche")
    out = quick("continual_avalanche")
    rows = out["rows"]
    assert set(rows) == {"protobench", "plain", "avalanche-naive", "avalanche-lwf"}
    assert out["same_matrix_as_plain"]  # our loop does exactly the plain loop's training
    assert rows["protobench"]["accuracy_matrix"] == rows["plain"]["accuracy_matrix"]
    assert rows["protobench"]["final_accuracy"] == rows["plain"]["final_accuracy"]
    assert (out["epochs"], out["repeats"], out["backbone"]) == (1, 1, "mlp")  # --quick
    assert out["stream"]["sizes"] == [2] * 5 and out["stream"]["input_shape"] == [1, 8, 8]
    for r in rows.values():
        assert 0 <= r["final_accuracy"] <= 1 and 0 <= r["average_incremental_accuracy"] <= 1
        assert r["seconds"] > 0 and r["time_vs_plain"] > 0 and r["time_vs_protobench"] > 0
        assert len(r["accuracy_matrix"]) == out["stream"]["experiences"] == 5
        assert r["runs_seconds"] == [r["seconds"]]  # one repeat: its median is itself
        _check_matrix(r["accuracy_matrix"], 5, r)
        assert r["time_vs_plain"] == pytest.approx(r["seconds"] / rows["plain"]["seconds"])
    assert rows["plain"]["time_vs_plain"] == 1.0
    assert rows["protobench"]["time_vs_protobench"] == 1.0


@pytest.mark.skipif(not OMNIGLOT.exists(), reason=f"real Omniglot files absent ({OMNIGLOT})")
def test_omniglot_settings_are_chosen_on_characters_the_test_streams_never_use():
    from benchmarks._common import omniglot_pools
    from benchmarks.select_presets import omniglot_validation_stream
    from protobench.datasets import load_dataset

    data = load_dataset("omniglot", "all", OMNIGLOT, image_size=28, rotations="none")
    val_pool, test_pool = omniglot_pools(data)
    assert not set(val_pool) & set(test_pool)
    assert sorted(val_pool + test_pool) == list(range(data.num_classes))
    validation = omniglot_validation_stream(str(OMNIGLOT))
    used = {validation.train.class_names[c] for c in range(validation.train.num_classes)}
    test_names = {data.class_names[c] for c in test_pool}
    assert len(used) >= 50 and not used & test_names
