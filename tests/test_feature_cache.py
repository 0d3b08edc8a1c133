import torch

from protobench.feature_cache import FeatureCache, weights_hash
from protobench.methods import protonet as protonet_mod
from protobench.tasks.fewshot import FewShotConfig, run_fewshot
from tests.conftest import make_features


def test_computes_once_then_hits(tmp_path):
    cache, data = FeatureCache(tmp_path), make_features()
    calls = []

    def compute():
        calls.append(1)
        return data.x * 2

    first = cache.get(data, "enc-a", compute, {"image_size": 8})
    again = cache.get(data, "enc-a", compute, {"image_size": 8})
    assert torch.equal(first, again) and len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    cache.get(data, "enc-b", compute, {"image_size": 8})  # other weights
    cache.get(data, "enc-a", compute, {"image_size": 16})  # other transform
    cache.get(make_features(seed=1), "enc-a", compute, {"image_size": 8})  # other data
    assert len(calls) == 4
    assert not list(tmp_path.glob("*.tmp"))


def test_unreadable_entry_is_recomputed(tmp_path):
    cache, data = FeatureCache(tmp_path), make_features()
    cache.get(data, "k", lambda: data.x)
    entry = next(tmp_path.glob("*.pt"))
    entry.write_bytes(b"truncated")
    out = cache.get(data, "k", lambda: data.x + 1)
    assert torch.equal(out, data.x + 1) and cache.misses == 2


def test_weights_hash_follows_the_weights():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert weights_hash(a) == weights_hash(b)
    with torch.no_grad():
        b.bias.add_(1e-6)
    assert weights_hash(a) != weights_hash(b)


def test_a_sweep_over_settings_runs_the_backbone_once(tmp_path, monkeypatch):
    ckpt = tmp_path / "proto.pt"
    common = dict(dataset="digits", method="protonet", queries=5, episodes=50, store=None,
                  progress=False, cache_dir=str(tmp_path / "cache"),
                  dataset_options={"image_size": 16})
    run_fewshot(FewShotConfig(**common, shots=(1,), train_steps=3,
                              save_checkpoint=str(ckpt)))
    calls = []
    real = protonet_mod.extract_features
    monkeypatch.setattr(protonet_mod, "extract_features",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    outs = [run_fewshot(FewShotConfig(**common, shots=(k,), ways=w, checkpoint=str(ckpt)))[0]
            for w, k in ((5, 1), (5, 5), (3, 2))]
    assert calls == []  # every setting read the test features from the cache
    assert all(o.record.config["fit"]["test_features"] == "cached" for o in outs)
    fresh = run_fewshot(FewShotConfig(**common, shots=(5,), checkpoint=str(ckpt),
                                      feature_cache=False))[0]
    assert len(calls) == 1 and fresh.record.config["fit"]["test_features"] == "computed"
    assert fresh.result.mean == outs[1].result.mean
