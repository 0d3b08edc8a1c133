"""The GPU suite runs end to end in its --quick mode on CPU (no timing asserted): every part
has figures or a skip reason, the evaluation matches the CPU path episode by episode, and
nothing is written into benchmarks/results."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
PARTS = ("evaluation", "faiss", "protonet_training", "continual_overhead", "cuda_vs_cpu",
         "training_speed")


def _results_state() -> tuple[str, dict[str, int]]:
    """``git status`` of benchmarks/results and the mtimes of any gpu_suite files there."""
    status = subprocess.run(["git", "status", "--porcelain", "--", str(RESULTS)], cwd=ROOT,
                            capture_output=True, text=True).stdout
    return status, {p.name: p.stat().st_mtime_ns for p in RESULTS.glob("gpu_suite*")}


def test_gpu_suite_quick(quick, tmp_path: Path):
    before = _results_state()
    out = quick("gpu_suite", "--device", "cpu")
    assert _results_state() == before  # records went to --out only
    assert (tmp_path / "gpu_suite_quick.md").read_text().startswith("> **Provenance**")

    env = out["environment"]
    assert env["device"] == "cpu" and env["device_name"] and env["torch"]
    parts = out["parts"]
    assert tuple(parts) == PARTS
    for name, part in parts.items():
        assert part["status"] in ("ok", "skipped"), (name, part.get("reason"))
        assert part["seconds"] >= 0
        if part["status"] == "skipped":
            assert part["reason"], name
    assert out["total_seconds"] >= sum(p["seconds"] for p in parts.values()) - 1

    ev = parts["evaluation"]
    assert ev["status"] == "ok" and ev["dim"] == 640
    assert {(r["ways"], r["shots"]) for r in ev["rows"]} == {(5, 5), (5, 1)}
    for r in ev["rows"]:  # streamed on the device = make_episodes + evaluate_episodes on CPU
        assert r["equal_to_cpu"] and r["episodes_differing"] == 0
        assert r["median_eps_per_s"] > 0 and 0.3 < r["accuracy"] <= 1

    faiss = parts["faiss"]
    assert faiss["status"] == "ok" and faiss["faiss_backend"] == "faiss-cpu"
    assert faiss["variants"]["faiss"]["agree_with_torch"] > 0.99
    assert "faiss-gpu" in faiss["skipped_variants"]

    cont = parts["continual_overhead"]
    assert cont["status"] == "ok"
    for r in cont["rows"]:  # our loop and the plain one train the same model the same way
        assert r["same_matrix"] and r["overhead"] > 0

    cvc = parts["cuda_vs_cpu"]
    assert cvc["status"] == "ok" and set(cvc["rows"]) == {"napa-vq", "prd", "efc", "fecam",
                                                          "palm"}
    assert cvc["all_passed"]
    for r in cvc["rows"].values():  # CPU against CPU: the same numbers
        assert r["training"]["identical"] and r["inference"]["identical"]
        assert r["training"]["accuracy_cpu"] == r["training"]["accuracy_device"]

    pt = parts["protonet_training"]
    if pt["status"] == "ok":
        assert all(v > 0 for v in pt["rows"][0]["median_eps_per_s"].values())
