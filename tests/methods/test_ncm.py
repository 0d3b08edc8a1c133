import numpy as np
import torch
from sklearn.neighbors import NearestCentroid

from protobench.episodic import EpisodeSpec, make_episodes
from protobench.evaluation import evaluate_episodes
from protobench.methods import build_method
from tests.conftest import make_features


def test_ncm_matches_scikit_learn_nearest_centroid():
    base, novel = make_features(seed=0), make_features(seed=1, spread=4.0)
    m = build_method("ncm")
    m.fit(base, torch.device("cpu"))
    assert torch.allclose(m.mean, base.x.mean(0))
    feats = m.transform(m.features(novel, torch.device("cpu")))
    ref_feats = (novel.x - base.x.mean(0)).numpy()
    ref_feats /= np.linalg.norm(ref_feats, axis=1, keepdims=True)
    assert np.allclose(feats.numpy(), ref_feats, atol=1e-6)
    eps = make_episodes(novel, EpisodeSpec(5, 3, 6, 40, seed=0))
    res = evaluate_episodes(feats, eps)
    ref = []
    for ep in eps.indices:
        s, q = ep[:, :3].flatten(), ep[:, 3:].flatten()
        clf = NearestCentroid().fit(ref_feats[s], np.repeat(np.arange(5), 3))
        ref.append((clf.predict(ref_feats[q]) == np.repeat(np.arange(5), 6)).mean())
    assert np.allclose(res.accuracies.numpy(), ref)


def test_ncm_is_inductive():
    """Predictions do not change when queries are scored alone or with extra queries."""
    base, novel = make_features(seed=0), make_features(seed=1, spread=4.0)
    m = build_method("ncm")
    m.fit(base, torch.device("cpu"))
    all_feats = m.transform(m.features(novel, torch.device("cpu")))
    some = m.transform(m.features(novel.subset_classes([0, 1]), torch.device("cpu")))
    assert torch.allclose(all_feats[novel.labels <= 1], some)
