"""The OOD benchmarks run end to end in their --quick mode (no timing asserted).

They run in-process (the harness's ``main``) so the test pays no second interpreter
start-up."""

import json
from pathlib import Path

import pytest

from benchmarks import ood_digits, ood_knn
from benchmarks._harness import Benchmark, main


def _quick(benchmark: Benchmark, tmp_path: Path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)
    assert main(benchmark, ["--quick", "--out", str(tmp_path)]) == 0
    return json.loads((tmp_path / f"{benchmark.name}_quick.json").read_text())


@pytest.mark.usefixtures("one_thread")
def test_ood_knn_quick(tmp_path, monkeypatch):
    out = _quick(ood_knn.BENCHMARK, tmp_path, monkeypatch)
    backends = out["rows"][0]["backends"]
    assert "torch" in backends
    for name, v in backends.items():
        assert v["seconds"] > 0 and 0.5 < v["auroc"] <= 1
        if name != "torch":  # exact FAISS = exact torch, up to float round-off
            assert v["max_abs_score_diff_vs_torch"] < 1e-4
            assert v["auroc"] == pytest.approx(backends["torch"]["auroc"], abs=1e-3)


@pytest.mark.usefixtures("one_thread")
def test_ood_digits_quick(tmp_path, monkeypatch):
    out = _quick(ood_digits.BENCHMARK, tmp_path, monkeypatch)
    (pair,) = out["pairs"]
    assert (pair["id"], pair["ood"], pair["ood_count"]) == ("digits:0-4", "digits:5-9", 896)
    assert set(pair["methods"]["palm"]["scores"]) == {"ssd", "mahalanobis-centred", "knn",
                                                      "mahalanobis", "prototype"}
    msp = pair["methods"]["ce"]["scores"]["msp"]["auroc"]
    assert len(msp["per_seed"]) == 2 and msp["std"] is not None
    assert (tmp_path / "ood_digits_quick.md").read_text().count("| palm + ") == 5
