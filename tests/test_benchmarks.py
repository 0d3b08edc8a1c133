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
