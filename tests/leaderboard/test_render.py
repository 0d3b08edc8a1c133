"""Rows say what they are: distinct labels, and ranks only among rows on the same episodes."""

import csv
import io
import shutil
from pathlib import Path

from protobench.leaderboard.labels import identity, labels
from protobench.leaderboard.render import export, notes, ranked_rows, to_csv, to_markdown
from protobench.tasks import Metric, ResultRecord, ResultStore

ROOT = Path(__file__).resolve().parents[2]
HASH_A, HASH_B = "7b" * 32, "55" * 32
CKPT = "runs/omniglot/heldout_1shot.pt"
PROTONET = {"backbone": "conv4", "lr": 0.001, "lr_decay_every": 2000, "temperature": 1.0,
            "train_queries": 5, "train_shots": 1, "train_ways": 60, "weight_decay": 0.0,
            "seed": 0, "dataset_options": {}, "train_dataset": "", "train_options": {}}


def omniglot(acc, metric="geodesic", metric_options=None, fit=None, manifest=HASH_A,
             when="2026-11-25T14:58:52+00:00", method="protonet", **params):
    config = {**PROTONET, "amp": True, "train_steps": 4000, "metric": metric,
              "metric_options": metric_options,
              "fit": {"checkpoint": CKPT, "test_features": "cached"} if fit is None else fit,
              **params}
    return ResultRecord(task="fewshot", dataset="omniglot", split="test", method=method,
                        setting={"ways": 5, "shots": 1, "queries": 15, "episodes": 1000},
                        config=config, metrics={"accuracy": Metric(acc, 0.008, 1000)}, seed=0,
                        manifest_hash=manifest, timestamp=when)


def geodesic_rows():
    """The five 5-way 1-shot rows the old board labelled "conv4 geodesic, checkpoint
    heldout_1shot.pt, bf16 autocast"; they differ only in metric options and pool."""
    pool = {"geodesic_pool": "omniglot:train"}
    return [
        omniglot(0.6558, fit={"checkpoint": CKPT, "test_features": "cached", **pool}),
        omniglot(0.6757, metric_options={"pool": "test"}),
        omniglot(0.8566, metric_options={"m": 32, "pool": "train", "t": 1},
                 fit={"checkpoint": CKPT, **pool}),
        omniglot(0.8724, metric_options={"bandwidth": "knn", "m": 128, "t": 1},
                 fit={"checkpoint": CKPT, **pool}),
        omniglot(0.8933, metric_options={"bandwidth": "knn", "m": 128, "pool": "test", "t": 1}),
    ]


def test_identically_labelled_rows_now_say_what_differs(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.add_all(geodesic_rows())
    rows = ranked_rows(store.records("fewshot/omniglot"))
    assert [round(r.value, 4) for r in rows] == [0.8933, 0.8724, 0.8566, 0.6757, 0.6558]
    details = [r.details for r in rows]
    assert len(set(details)) == 5, details
    assert all(d.startswith("conv4 geodesic; ") for d in details)  # backbone, metric first
    assert all(f"checkpoint={CKPT}" in d and "train_steps=4000" in d for d in details)
    best, knn, m32, pool_test, defaults = details
    assert {"metric_options.m=128", "metric_options.pool=test", "metric_options.t=1",
            "metric_options.bandwidth=knn"} <= set(best.split("; ")[1].split(", "))
    assert "metric_options.pool" not in knn and "geodesic_pool=omniglot:train" in knn
    assert "metric_options.m=32" in m32 and "metric_options.pool=train" in m32
    assert "metric_options.pool=test" in pool_test and "metric_options.m" not in pool_test
    assert "metric_options" not in defaults and "geodesic_pool=omniglot:train" in defaults
    # shared or measured values are not repeated on every row
    assert not any("lr=" in d or "amp=" in d or "test_features" in d for d in details)
    md = to_markdown("fewshot/omniglot", rows)
    for d in details:
        assert f"| {d} |" in md
    assert "same in every row: `amp=true`" in md and "`lr=0.001`" in md


def test_same_checkpoint_path_of_two_models_and_trained_vs_loaded_rows_differ():
    """heldout_1shot.pt was overwritten by another model: its parameters tell them apart;
    a model trained in the run and the same model loaded from its checkpoint do too."""
    old = omniglot(0.8230, metric="sqeuclidean", amp=False, train_steps=3000)
    new = omniglot(0.8159, metric="sqeuclidean")
    trained = omniglot(0.934, metric="sqeuclidean",
                       fit={"train_steps": 4000, "train_ways_used": 60, "train_loss_last": 0.1,
                            "train_seconds": 1005.9})
    a, b, c = labels([old, new, trained])
    assert len({a, b, c}) == 3
    assert "amp=false" in a and "train_steps=3000" in a and "amp=true" in b
    assert f"checkpoint={CKPT}" in b and "checkpoint" not in c and "train_steps=4000" in c
    assert "train_loss" not in c and "seconds" not in c and "train_ways_used" not in c
    # the fit's checkpoint is part of what a row is: two checkpoints are two rows
    other = omniglot(0.9, metric="sqeuclidean", fit={"checkpoint": "runs/other.pt"})
    assert len(ranked_rows([new, other])) == 2


def test_preset_name_is_always_shown():
    a = omniglot(0.9, metric="sqeuclidean", preset="protonet:omniglot@v1")
    b = omniglot(0.8, metric="sqeuclidean", preset="protonet:omniglot@v1", lr=0.01)
    la, lb = labels([a, b])
    assert la.startswith("conv4 sqeuclidean; preset=protonet:omniglot@v1")
    assert "lr=0.01" in lb and "lr=0.001" in la
    assert identity(a)["preset"] == "protonet:omniglot@v1"


def test_other_episodes_are_marked_and_ranked_apart(tmp_path):
    old = "2026-11-25T11:00:00+00:00"
    store = ResultStore(tmp_path / "r.sqlite")
    store.add_all([omniglot(0.70, metric="sqeuclidean", when=old),
                   omniglot(0.60, temperature=0.5, when=old),
                   omniglot(0.50, when=old),
                   omniglot(0.99, metric="cosine", manifest=HASH_B)])  # other episodes
    rows = ranked_rows(store.records())
    assert [(r.rank, r.marker, r.manifest) for r in rows] == [
        (1, "", HASH_A[:12]), (2, "", HASH_A[:12]), (3, "", HASH_A[:12]),
        (1, "†", HASH_B[:12])]  # the best value does not outrank rows on other episodes
    md = to_markdown("fewshot/omniglot", rows)
    assert "| 5w1s 15q | 1 † | protonet | 99.00 ± 0.80 |" in md
    footnote = [line for line in md.splitlines() if line.startswith("- †: ")]
    assert len(footnote) == 1 and "other episodes" in footnote[0]
    assert (f"5w1s 15q episodes: main `{HASH_A[:12]}` (3 rows), † `{HASH_B[:12]}` (1 row)"
            in md)
    table = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [(t["rank"], t["episodes_group"], t["marker"]) for t in table] == [
        ("1", "main", ""), ("2", "main", ""), ("3", "main", ""), ("1", "other 1", "†")]
    assert table[3]["details"] == rows[3].details


def test_main_episodes_are_the_majority_then_the_most_recent():
    early, late = "2026-11-25T09:00:00+00:00", "2026-11-25T15:00:00+00:00"
    tie = [omniglot(0.9, when=early), omniglot(0.8, lr=0.01, manifest=HASH_B, when=late)]
    assert [(r.manifest, r.marker) for r in ranked_rows(tie)] == [
        (HASH_B[:12], ""), (HASH_A[:12], "†")]
    majority = [*tie, omniglot(0.7, temperature=2.0, when=early)]
    assert [(r.manifest, r.marker) for r in ranked_rows(majority)] == [
        (HASH_A[:12], ""), (HASH_A[:12], ""), (HASH_B[:12], "†")]
    assert not any("- †" in line for line in notes(ranked_rows(tie[:1])))
    # a configuration run again (here on new episodes) replaces its earlier row
    again = omniglot(0.95, manifest=HASH_B, when=late)
    assert [(r.value, r.marker) for r in ranked_rows([tie[0], again])] == [(0.95, "")]


def test_other_methods_long_values_outcomes_and_pipes():
    """Labels are computed per method (the method column tells methods apart), long values
    are shortened, outcomes (class orders) never enter a label, pipes are escaped."""
    ncm = [omniglot(0.7, method="ncm", fit={"centred_on": "train"}, backbone="identity",
                    prompts=p) for p in ("a photo of a {}.|art of {}", "a {}")]
    stream = {"class_order": list(range(100)), "sizes": [10] * 10, "test_fraction": 0.2}
    c1 = omniglot(0.5, metric="sqeuclidean", stream=stream)
    c2 = omniglot(0.4, metric="sqeuclidean", stream={**stream, "class_order": [1, 0]},
                  note="x" * 200)
    rows = ranked_rows([*ncm, c1, c2])
    by_value = {r.value: r.details for r in rows}
    assert by_value[0.5] == f"conv4 sqeuclidean; checkpoint={CKPT}, train_steps=4000"
    assert "class_order" not in by_value[0.4] and "note=xxx" in by_value[0.4]
    assert "…#" in by_value[0.4] and len(by_value[0.4]) < 200
    ncm_labels = [r.details for r in rows if r.method == "ncm"]
    assert len(set(ncm_labels)) == 2 and all(d.startswith("identity geodesic;") for d in ncm_labels)
    assert not any("lr=" in d for d in ncm_labels)  # same in both ncm rows
    md = to_markdown("fewshot/omniglot", rows)
    assert "prompts=a photo of a {}.\\|art of {}" in md
    assert md.count("| 5w1s 15q |") == 4


def test_committed_boards_label_every_row_apart(tmp_path):
    """On a copy of the committed store (never the tracked file itself): within a setting
    and method, no two rows share a label."""
    committed = ROOT / "leaderboards" / "results.sqlite"
    if not committed.exists():
        return
    shutil.copyfile(committed, tmp_path / "r.sqlite")
    store = ResultStore(tmp_path / "r.sqlite")
    for board in store.boards():
        rows = ranked_rows(store.records(board))
        seen = {}
        for r in rows:
            key = (r.setting, r.method, r.n, r.details)
            assert key not in seen, (board, key)
            seen[key] = r
    paths = export(store, tmp_path / "out")
    assert all(p.exists() for p in paths)
