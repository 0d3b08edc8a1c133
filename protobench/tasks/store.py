"""SQLite store of result records.

One table, one row per record, JSON columns for the nested parts. Writes go
through :meth:`ResultStore.add_all`, one transaction for all the rows of a run:
either every row lands or none does. SQLite serialises concurrent writers
(``timeout`` waits for the lock).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

from protobench.errors import UserError
from protobench.tasks.record import Metric, ResultRecord

DEFAULT_STORE = Path("leaderboards") / "results.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    board TEXT NOT NULL,
    task TEXT NOT NULL,
    dataset TEXT NOT NULL,
    split TEXT NOT NULL,
    method TEXT NOT NULL,
    setting TEXT NOT NULL,
    config TEXT NOT NULL,
    metrics TEXT NOT NULL,
    primary_metric TEXT NOT NULL,
    primary_value REAL,
    seed INTEGER NOT NULL,
    manifest_hash TEXT NOT NULL,
    versions TEXT NOT NULL,
    git_revision TEXT NOT NULL,
    device TEXT NOT NULL,
    wall_time_s REAL NOT NULL,
    timestamp TEXT NOT NULL,
    method_name TEXT NOT NULL DEFAULT '',
    method_params TEXT NOT NULL DEFAULT '{}',
    data TEXT NOT NULL DEFAULT '{}',
    job TEXT NOT NULL DEFAULT '{}',
    seeds TEXT NOT NULL DEFAULT '[]',
    per_seed TEXT NOT NULL DEFAULT '[]',
    machine TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS results_board ON results(board);
"""

_JSON = ("setting", "config", "metrics", "versions", "method_params", "data", "job", "seeds",
         "per_seed", "machine")
#: columns added after the first schema: (name, declaration) for ALTER TABLE on old stores
_ADDED = (("method_name", "TEXT NOT NULL DEFAULT ''"),
          ("method_params", "TEXT NOT NULL DEFAULT '{}'"), ("data", "TEXT NOT NULL DEFAULT '{}'"),
          ("job", "TEXT NOT NULL DEFAULT '{}'"), ("seeds", "TEXT NOT NULL DEFAULT '[]'"),
          ("per_seed", "TEXT NOT NULL DEFAULT '[]'"), ("machine", "TEXT NOT NULL DEFAULT '{}'"))


class ResultStore:
    """``ResultStore(path)``; the file and its folder are created on first write."""

    def __init__(self, path: str | Path = DEFAULT_STORE) -> None:
        self.path = Path(path)

    def _connect(self, create: bool) -> sqlite3.Connection:
        if not self.path.exists():
            if not create:
                raise UserError(f"no leaderboard store at {self.path}; run an evaluation first "
                                "or pass --store")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30)
        conn.executescript(SCHEMA)
        have = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
        missing = [(c, decl) for c, decl in _ADDED if c not in have]
        if missing and create:  # an older store: add the new columns (old rows keep defaults)
            with conn:
                for col, decl in missing:
                    conn.execute(f"ALTER TABLE results ADD COLUMN {col} {decl}")
        return conn

    def add_all(self, records: Iterable[ResultRecord]) -> list[int]:
        """Insert every record in one transaction; returns their row ids."""
        rows = [self._row(r) for r in records]
        with closing(self._connect(create=True)) as conn, conn:
            cols = list(rows[0]) if rows else []
            sql = (f"INSERT INTO results ({', '.join(cols)}) "
                   f"VALUES ({', '.join('?' for _ in cols)})")
            return [conn.execute(sql, list(r.values())).lastrowid for r in rows]

    def add(self, record: ResultRecord) -> int:
        return self.add_all([record])[0]

    @staticmethod
    def _row(r: ResultRecord) -> dict[str, object]:
        d = r.to_dict()
        primary = r.metrics.get(r.primary_metric)
        row = {k: d[k] for k in ("task", "dataset", "split", "method", "primary_metric", "seed",
                                 "manifest_hash", "git_revision", "device", "wall_time_s",
                                 "timestamp", "method_name")}
        row.update({k: json.dumps(d[k], sort_keys=True, default=str) for k in _JSON})
        row["board"] = r.board
        row["primary_value"] = primary.value if primary else None
        return row

    def get(self, row_id: int) -> ResultRecord:
        """The record stored as row ``row_id``."""
        with closing(self._connect(create=False)) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM results WHERE id = ?", (row_id,)).fetchone()
        if row is None:
            raise UserError(f"no row {row_id} in {self.path}; `protobench leaderboard show "
                            "BOARD --store ...` lists the rows and their ids")
        return self._record(dict(row))

    def boards(self) -> list[str]:
        with closing(self._connect(create=False)) as conn:
            return [b for (b,) in conn.execute("SELECT DISTINCT board FROM results ORDER BY board")]

    def records(self, board: str | None = None) -> list[ResultRecord]:
        """Records of ``board`` (all boards when None), oldest first."""
        with closing(self._connect(create=False)) as conn:
            conn.row_factory = sqlite3.Row
            q = "SELECT * FROM results" + (" WHERE board = ?" if board else "") + " ORDER BY id"
            rows = conn.execute(q, (board,) if board else ()).fetchall()
        return [self._record(dict(r)) for r in rows]

    @staticmethod
    def _record(row: dict[str, object]) -> ResultRecord:
        d = {k: v for k, v in row.items() if k not in ("board", "primary_value")}
        for k in _JSON:
            if k in d:  # a read-only old store may lack the newer columns
                d[k] = json.loads(d[k])  # type: ignore[arg-type]
        d["metrics"] = {k: Metric(**v) for k, v in d["metrics"].items()}
        return ResultRecord(**d)
