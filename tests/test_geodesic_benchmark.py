"""benchmarks/geodesic.py runs end to end in its --quick mode (no timing asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_geodesic_benchmark_quick(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "geodesic.py"), "--quick",
                    "--out", str(tmp_path)], check=True, capture_output=True, cwd=tmp_path,
                   env=env)
    out = json.loads((tmp_path / "geodesic_quick.json").read_text())
    assert out["label"] == "GeoProto-style (reconstructed)"
    cases = {(r["case"], r["shots"]) for r in out["synthetic"]}
    assert ("T1 negative control", 5) in cases and ("T4 swiss roll", 1) in cases
    assert all(0 <= r["geodesic"] <= 100 for r in out["synthetic"])
    assert out["cost"]["euclid_seconds"] > 0 and out["cost"]["geo_pool_seconds"] > 0
    assert "## Cost" in (tmp_path / "geodesic_quick.md").read_text()
