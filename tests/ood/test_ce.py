"""The cross-entropy OOD baseline: trains, round-trips, and logits match the head."""

import pytest
import torch

from protobench.datasets import load_dataset
from protobench.methods import build_method
from protobench.methods.ce import standard_view


@pytest.mark.usefixtures("one_thread")
def test_ce_trains_and_round_trips():
    data = load_dataset("digits", "train", image_size=8)
    method = build_method("ce", task="ood", epochs=3, seed=1)
    stats = method.fit(data, torch.device("cpu"), progress=False)
    assert stats["loss_curve"][-1] < stats["loss_curve"][0]
    assert stats["config"]["backbone"] == "mlp" and stats["config"]["augment"] == "none"
    x = data.get(torch.arange(50))
    logits = method.logits(x, torch.device("cpu"))
    assert (logits.argmax(1) == data.labels[:50]).float().mean() > 0.8
    h = method.features(x, torch.device("cpu"))
    assert h.shape == (50, 64)
    assert torch.allclose(method.logits_from_features(h), logits)
    clone = build_method("ce", **method.get_params())
    clone.load_state_dict(method.state_dict())
    assert torch.allclose(clone.logits(x, torch.device("cpu")), logits)


def test_standard_view_is_a_shifted_crop():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    v = standard_view(x, torch.Generator().manual_seed(0), pad=2)
    assert v.shape == x.shape
    for b in range(2):  # every output is a (possibly flipped) window of the padded image
        padded = torch.nn.functional.pad(x[b], (2, 2, 2, 2))
        wins = [padded[:, i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(v[b], w) or torch.equal(v[b], w.flip(-1)) for w in wins)


def test_id_accuracy_comes_from_the_head_whatever_the_scores(tmp_path):
    """A CE row's ID accuracy is its classifier's, with or without a logit score in the job
    (a row re-run alone with its own feature score gives the same ID accuracy)."""
    import torch

    from protobench.tasks.ood import OODConfig, run_ood

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = [run_ood(OODConfig(id="digits:0-4", ood="digits:5-9", method="ce", epochs=1,
                                  scores=scores, backbone="mlp", device="cpu", store=None,
                                  dataset_options={"image_size": 8}, progress=False,
                                  plot=False, run_dir=str(tmp_path / str(i))))
                for i, scores in enumerate((("msp", "knn"), ("knn",)))]
    finally:
        torch.set_num_threads(before)
    (a,), (b,) = runs[0].per_seed, runs[1].per_seed
    assert a.id_accuracy_source == b.id_accuracy_source == "classifier head"
    assert a.id_accuracy == b.id_accuracy
    assert a.metrics["knn"] == b.metrics["knn"]
