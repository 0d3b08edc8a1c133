"""The OOD benchmark scripts run end to end in their --quick mode (no timing asserted).

They run in-process (``runpy``) so the test pays no second interpreter start-up."""

import json
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _quick(script: str, tmp_path: Path, monkeypatch) -> dict:
    monkeypatch.setattr(sys, "argv", [script, "--quick", "--out", str(tmp_path)])
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / "benchmarks" / script), run_name="__main__")
    return json.loads((tmp_path / script.replace(".py", "_quick.json")).read_text())


@pytest.mark.usefixtures("one_thread")
def test_ood_knn_quick(tmp_path, monkeypatch):
    out = _quick("ood_knn.py", tmp_path, monkeypatch)
    backends = out["rows"][0]["backends"]
    assert "torch" in backends
    for name, v in backends.items():
        assert v["seconds"] > 0 and 0.5 < v["auroc"] <= 1
        if name != "torch":  # exact FAISS = exact torch, up to float round-off
            assert v["max_abs_score_diff_vs_torch"] < 1e-4
            assert v["auroc"] == pytest.approx(backends["torch"]["auroc"], abs=1e-3)


@pytest.mark.usefixtures("one_thread")
def test_ood_digits_quick(tmp_path, monkeypatch):
    out = _quick("ood_digits.py", tmp_path, monkeypatch)
    (pair,) = out["pairs"]
    assert (pair["id"], pair["ood"], pair["ood_count"]) == ("digits:0-4", "digits:5-9", 896)
    assert set(pair["methods"]["palm"]["scores"]) == {"ssd", "mahalanobis-centred", "knn",
                                                      "mahalanobis", "prototype"}
    msp = pair["methods"]["ce"]["scores"]["msp"]["auroc"]
    assert len(msp["per_seed"]) == 2 and msp["std"] is not None
    assert (tmp_path / "ood_digits_quick.md").read_text().count("| palm + ") == 5
