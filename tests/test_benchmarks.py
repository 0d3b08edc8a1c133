"""The benchmark scripts run end to end in their --quick mode (no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OMNIGLOT = ROOT.parent / "shared" / "data" / "omniglot"


def test_throughput_quick(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fewshot_throughput.py"),
                    "--quick", "--out", str(tmp_path)], check=True, capture_output=True,
                   cwd=tmp_path)
    out = json.loads((tmp_path / "fewshot_throughput_quick.json").read_text())
    rows = [r for r in out["rows"] if r["kind"] == "evaluation"]
    assert {(r["ways"], r["shots"]) for r in rows} == {(5, 1), (5, 5)}
    for r in rows:  # the three libraries score the same task: similar accuracies
        accs = [r[k]["accuracy"] for k in ("protobench", "easyfsl", "learn2learn")]
        assert 0.3 < min(accs) and max(accs) - min(accs) < 0.1


@pytest.mark.skipif(not OMNIGLOT.exists(), reason=f"real Omniglot files absent ({OMNIGLOT})")
def test_omniglot_quick(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "omniglot.py"), "--quick",
                    "--data-root", str(OMNIGLOT), "--store", str(tmp_path / "r.sqlite"),
                    "--checkpoints", str(tmp_path / "ck"), "--out", str(tmp_path)],
                   check=True, capture_output=True, cwd=tmp_path)
    out = json.loads((tmp_path / "omniglot_quick.json").read_text())
    settings = [(r["protocol"][:4], r["ways"], r["shots"]) for r in out["results"]]
    assert settings == [("held", 5, 1), ("held", 5, 5), ("held", 20, 1), ("Lake", 20, 1),
                        ("Lake", 20, 1)]
    assert all(len(r["per_run_error_percent"]) == 20 for r in out["results"][3:])


def _quick(script: str, tmp_path: Path, *extra: str) -> dict:
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out",
                    str(tmp_path), *extra], check=True, capture_output=True, cwd=tmp_path)
    return json.loads((tmp_path / script.replace(".py", "_quick.json")).read_text())


def test_prototype_search_quick(tmp_path):
    out = _quick("prototype_search.py", tmp_path)
    variants = out["rows"][0]["variants"]
    assert {"torch", "faiss", "faiss-ivf", "faiss-hnsw"} <= set(variants)
    assert variants["faiss"]["agree_with_torch"] > 0.99  # exact FAISS = exact torch
    assert all(0 < v["recall_at_1"] <= 1 for v in variants.values())


def test_eval_memory_quick(tmp_path):
    out = _quick("eval_memory.py", tmp_path)
    rows = {(r["mode"], r["episodes"]): r for r in out["rows"]}
    assert set(rows) == {("list", 1000), ("list", 5000), ("stream", 1000), ("stream", 5000)}
    # both modes score the same episodes
    assert rows["list", 5000]["accuracy"] == rows["stream", 5000]["accuracy"]


def test_protonet_training_quick(tmp_path):
    pytest.importorskip("learn2learn")
    out = _quick("protonet_training.py", tmp_path)
    rates = out["rows"][0]["median_eps_per_s"]
    assert set(rates) == {"protobench", "protobench-bf16", "learn2learn"}
    assert all(v > 0 for v in rates.values())
