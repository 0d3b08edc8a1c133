import sqlite3

import pytest

from protobench.errors import UserError
from protobench.leaderboard.render import export, ranked_rows, to_markdown
from protobench.tasks import Metric, ResultRecord, ResultStore


def rec(method="protonet", acc=0.9, shots=1, seed=0, **kw):
    return ResultRecord(task="fewshot", dataset="digits", split="test", method=method,
                        setting={"ways": 5, "shots": shots, "queries": 15, "episodes": 100},
                        config={"backbone": "conv4", "metric": "sqeuclidean"},
                        metrics={"accuracy": Metric(acc, 0.01, 100)}, seed=seed,
                        manifest_hash="ab" * 32, timestamp="2026-01-01T00:00:00+00:00", **kw)


def test_round_trip(tmp_path):
    store = ResultStore(tmp_path / "sub" / "r.sqlite")
    r = rec(versions={"torch": "2"}, git_revision="abc", wall_time_s=1.5)
    store.add(r)
    assert store.boards() == ["fewshot/digits"]
    assert store.records("fewshot/digits") == [r]


def test_all_rows_of_a_run_or_none(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.add(rec())
    bad = rec(method=None)  # NOT NULL violation on the second row
    with pytest.raises(sqlite3.IntegrityError):
        store.add_all([rec(method="ncm"), bad])
    assert [r.method for r in store.records()] == ["protonet"]


def test_missing_store_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no leaderboard store"):
        ResultStore(tmp_path / "none.sqlite").boards()


def test_ranking_groups_by_setting_and_keeps_latest(tmp_path):
    rows = ranked_rows([rec("a", 0.5), rec("b", 0.7), rec("a", 0.9, shots=5),
                        rec("a", 0.6)])  # repeated a/1-shot: latest (0.6) wins
    assert [(r.setting, r.rank, r.method, r.value) for r in rows] == [
        ("5w1s 15q", 1, "b", 0.7), ("5w1s 15q", 2, "a", 0.6), ("5w5s 15q", 1, "a", 0.9)]
    md = to_markdown("fewshot/digits", rows)
    assert "| 5w1s 15q | 1 | b | 70.00 ± 1.00 | 100 |" in md


def test_export_writes_markdown_csv_and_index(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.add_all([rec("a", 0.5), rec("b", 0.7)])
    paths = export(store, tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == ["README.md", "fewshot_digits.csv", "fewshot_digits.md"]
    csv_lines = (tmp_path / "out" / "fewshot_digits.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[1].startswith("fewshot/digits,5w1s 15q,1,b,0.7")


def test_reading_a_store_never_changes_the_file(tmp_path):
    """The committed boards are read by tests, benchmarks and `protobench compare`: reads
    open the file read-only (no new tables or columns on an older store either: a copy
    without the sweep's `cells` and the `samples` tables reads as rows without them)."""
    import hashlib
    import shutil
    import sqlite3
    from pathlib import Path

    committed = Path(__file__).resolve().parents[2] / "leaderboards" / "results.sqlite"
    older = tmp_path / "older.sqlite"
    shutil.copyfile(committed, older)
    with sqlite3.connect(older) as conn:
        conn.execute("DROP TABLE cells")
        conn.execute("DROP TABLE samples")
    for path, has_cells in ((committed, True), (older, False)):
        before = hashlib.sha256(path.read_bytes()).hexdigest()
        store = ResultStore(path)
        rows = store.records()
        assert rows and store.boards() and bool(store.cells()) == has_cells
        assert store.get(rows[0].id).id == rows[0].id
        store.records(rows[0].board, samples=True)
        found = store.samples([r.id for r in rows])
        assert bool(found) == has_cells
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_drop_cells_removes_their_rows_and_samples_only(tmp_path):
    from protobench.tasks.store import Cell

    store = ResultStore(tmp_path / "r.sqlite")
    keep = store.add_all([rec(samples={"ep": [1.0, 0.0]})], Cell("keep", "g"))
    gone = store.add_all([rec(method="ncm", samples={"ep": [0.5]}), rec(method="x")],
                         Cell("gone", "g"))
    loose = store.add(rec(method="loose"))  # a row of no cell
    assert store.drop_cells(["gone", "not-there"]) == 2
    assert set(store.cells("g")) == {"keep"}
    assert sorted(r.method for r in store.records()) == ["loose", "protonet"]
    assert set(store.samples(keep + gone + [loose])) == set(keep)  # ncm's samples went too
    assert store.drop_cells([]) == 0
