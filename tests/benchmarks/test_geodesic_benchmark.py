"""benchmarks.geodesic runs end to end in its --quick mode (no timing asserted)."""


def test_geodesic_benchmark_quick(quick, tmp_path):
    out = quick("geodesic")
    assert out["label"] == "GeoProto-style (reconstructed)"
    cases = {(r["case"], r["shots"]) for r in out["synthetic"]}
    assert ("T1 negative control", 5) in cases and ("T4 swiss roll", 1) in cases
    assert all(0 <= r["geodesic"] <= 100 for r in out["synthetic"])
    assert out["cost"]["euclid_seconds"] > 0 and out["cost"]["geo_pool_seconds"] > 0
    assert "## Cost" in (tmp_path / "geodesic_quick.md").read_text()
