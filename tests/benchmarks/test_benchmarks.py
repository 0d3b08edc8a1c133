"""The few-shot and search benchmarks run end to end in their --quick mode (no timing
asserted)."""

from pathlib import Path

import pytest

OMNIGLOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "omniglot"


def test_throughput_quick(quick):
    out = quick("fewshot_throughput")
    rows = [r for r in out["rows"] if r["kind"] == "evaluation"]
    assert {(r["ways"], r["shots"]) for r in rows} == {(5, 1), (5, 5)}
    for r in rows:  # the three libraries score the same task: similar accuracies
        accs = [r[k]["accuracy"] for k in ("protobench", "protobench_batched",
                                           "protobench_streamed", "easyfsl", "learn2learn")]
        assert 0.3 < min(accs) and max(accs) - min(accs) < 0.1
        assert r["fused_equals_batched"] is True  # same episodes: the same accuracies
        assert r["gather_only"]["median_eps_per_s"] > 0
        assert r["of_gather_bound"] == pytest.approx(
            r["protobench"]["median_eps_per_s"] / r["gather_only"]["median_eps_per_s"])


@pytest.mark.skipif(not OMNIGLOT.exists(), reason=f"real Omniglot files absent ({OMNIGLOT})")
def test_omniglot_quick(quick, tmp_path):
    out = quick("omniglot", "--data-root", str(OMNIGLOT), "--store", str(tmp_path / "r.sqlite"),
                "--checkpoints", str(tmp_path / "ck"))
    settings = [(r["protocol"][:4], r["ways"], r["shots"]) for r in out["results"]]
    assert settings == [("held", 5, 1), ("held", 5, 5), ("held", 20, 1), ("Lake", 20, 1),
                        ("Lake", 20, 1)]
    assert all(len(r["per_run_error_percent"]) == 20 for r in out["results"][3:])


def test_prototype_search_quick(quick):
    out = quick("prototype_search")
    variants = out["rows"][0]["variants"]
    assert {"torch", "faiss", "faiss-ivf", "faiss-hnsw"} <= set(variants)
    assert variants["faiss"]["agree_with_torch"] > 0.99  # exact FAISS = exact torch
    assert all(0 < v["recall_at_1"] <= 1 for v in variants.values())


def test_eval_memory_quick(quick):
    out = quick("eval_memory")
    rows = {(r["mode"], r["episodes"]): r for r in out["rows"]}
    assert set(rows) == {("list", 1000), ("list", 5000), ("stream", 1000), ("stream", 5000)}
    # both modes score the same episodes
    assert rows["list", 5000]["accuracy"] == rows["stream", 5000]["accuracy"]


def test_protonet_training_quick(quick):
    pytest.importorskip("learn2learn")
    out = quick("protonet_training")
    rates = out["rows"][0]["median_eps_per_s"]
    assert set(rates) == {"protobench", "protobench-bf16", "learn2learn"}
    assert all(v > 0 for v in rates.values())
