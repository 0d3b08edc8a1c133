"""SQLite store of result records.

One table, one row per record, JSON columns for the nested parts. Writes go
through :meth:`ResultStore.add_all`, one transaction for all the rows of a run:
either every row lands or none does. SQLite serialises concurrent writers
(``timeout`` waits for the lock).

Sweeps add a ``cells`` table: a finished cell's key is inserted in the same transaction
as its rows (the key is the primary key, so a cell can never be written twice), and a
failed cell is recorded with its error and no rows.

A row's ``samples`` (per-episode accuracies, :class:`~protobench.tasks.record.ResultRecord`)
go to a ``samples`` side table, one float64 blob per key, written in the rows'
transaction; ``records()`` loads them only when asked (``samples=True``), ``get()``
always. Stores written before the table read as rows without samples.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from array import array
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
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
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    grid TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    row_ids TEXT NOT NULL DEFAULT '[]',
    seconds REAL NOT NULL DEFAULT 0,
    timestamp TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    row_id INTEGER NOT NULL REFERENCES results(id),
    key TEXT NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (row_id, key)
);
"""

_JSON = ("setting", "config", "metrics", "versions", "method_params", "data", "job", "seeds",
         "per_seed", "machine")
#: columns added after the first schema: (name, declaration) for ALTER TABLE on old stores
_ADDED = (("method_name", "TEXT NOT NULL DEFAULT ''"),
          ("method_params", "TEXT NOT NULL DEFAULT '{}'"), ("data", "TEXT NOT NULL DEFAULT '{}'"),
          ("job", "TEXT NOT NULL DEFAULT '{}'"), ("seeds", "TEXT NOT NULL DEFAULT '[]'"),
          ("per_seed", "TEXT NOT NULL DEFAULT '[]'"), ("machine", "TEXT NOT NULL DEFAULT '{}'"))


@dataclass(frozen=True)
class Cell:
    """A sweep cell as the store sees it: its key, grid name, wall time and when."""

    key: str
    grid: str = ""
    seconds: float = 0.0
    timestamp: str = ""


class CellDone(Exception):
    """The cell's rows are already in the store (nothing was written)."""


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
        if not create:  # reading never changes the file (e.g. the committed boards)
            return sqlite3.connect(f"file:{self.path.resolve()}?mode=ro", uri=True, timeout=30)
        conn = sqlite3.connect(self.path, timeout=30)
        conn.executescript(SCHEMA)
        have = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
        missing = [(c, decl) for c, decl in _ADDED if c not in have]
        if missing:  # an older store: add the new columns (old rows keep defaults)
            with conn:
                for col, decl in missing:
                    conn.execute(f"ALTER TABLE results ADD COLUMN {col} {decl}")
        return conn

    def add_all(self, records: Iterable[ResultRecord], cell: Cell | None = None) -> list[int]:
        """Insert every record in one transaction; returns their row ids. With ``cell``
        the sweep cell is marked done in the same transaction: a cell already done raises
        :class:`CellDone` and writes nothing."""
        records = list(records)
        rows = [self._row(r) for r in records]
        with closing(self._connect(create=True)) as conn, conn:
            if cell is not None:
                done = conn.execute("SELECT status FROM cells WHERE key = ?",
                                    (cell.key,)).fetchone()
                if done is not None and done[0] == "done":
                    raise CellDone(cell.key)
            cols = list(rows[0]) if rows else []
            sql = (f"INSERT INTO results ({', '.join(cols)}) "
                   f"VALUES ({', '.join('?' for _ in cols)})")
            ids = [conn.execute(sql, list(r.values())).lastrowid for r in rows]
            conn.executemany("INSERT INTO samples (row_id, key, data) VALUES (?, ?, ?)",
                             [(i, key, _blob(v)) for r, i in zip(records, ids)
                              for key, v in r.samples.items()])
            if cell is not None:
                conn.execute("INSERT OR REPLACE INTO cells (key, grid, status, error, row_ids, "
                             "seconds, timestamp) VALUES (?, ?, 'done', '', ?, ?, ?)",
                             (cell.key, cell.grid, json.dumps(ids), cell.seconds,
                              cell.timestamp))
            return ids

    def fail_cell(self, cell: Cell, error: str) -> None:
        """Record a failed sweep cell (no rows); a later success replaces it."""
        with closing(self._connect(create=True)) as conn, conn:
            conn.execute("INSERT INTO cells (key, grid, status, error, row_ids, seconds, "
                         "timestamp) VALUES (?, ?, 'failed', ?, '[]', ?, ?) ON CONFLICT(key) "
                         "DO UPDATE SET status = 'failed', error = excluded.error, "
                         "timestamp = excluded.timestamp WHERE cells.status != 'done'",
                         (cell.key, cell.grid, error, cell.seconds, cell.timestamp))

    def drop_cells(self, keys: Iterable[str]) -> int:
        """Delete sweep cells and the rows (with their samples) they wrote, in one
        transaction; returns how many rows went. For a grid whose cells changed: its
        stale cells go before the new ones run."""
        keys = list(keys)
        if not keys or not self.path.exists():
            return 0
        with closing(self._connect(create=True)) as conn, conn:
            ids = [i for (row_ids,) in conn.execute(
                f"SELECT row_ids FROM cells WHERE key IN ({', '.join('?' for _ in keys)})",
                keys) for i in json.loads(row_ids)]
            marks = ", ".join("?" for _ in ids)
            if ids:
                conn.execute(f"DELETE FROM samples WHERE row_id IN ({marks})", ids)
                conn.execute(f"DELETE FROM results WHERE id IN ({marks})", ids)
            conn.execute(f"DELETE FROM cells WHERE key IN ({', '.join('?' for _ in keys)})",
                         keys)
            return len(ids)

    def cells(self, grid: str | None = None) -> dict[str, dict[str, object]]:
        """Sweep cells by key: ``status`` (done | failed), ``error``, ``row_ids``."""
        if not self.path.exists():
            return {}
        with closing(self._connect(create=False)) as conn:
            if not _has_table(conn, "cells"):  # a store no sweep has written to
                return {}
            q = "SELECT key, grid, status, error, row_ids, seconds FROM cells" + (
                " WHERE grid = ?" if grid else "")
            out = {}
            for key, g, status, error, row_ids, seconds in conn.execute(
                    q, (grid,) if grid else ()):
                out[key] = {"grid": g, "status": status, "error": error,
                            "row_ids": json.loads(row_ids), "seconds": seconds}
            return out

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
                raise UserError(f"no row {row_id} in {self.path}; `protobench leaderboard "
                                "show BOARD --store ...` lists the rows and their ids")
            samples = _samples(conn, "row_id = ?", (row_id,))
        return self._record(dict(row), samples.get(row_id, {}))

    def boards(self) -> list[str]:
        with closing(self._connect(create=False)) as conn:
            return [b for (b,) in conn.execute("SELECT DISTINCT board FROM results ORDER BY board")]

    def records(self, board: str | None = None, samples: bool = False) -> list[ResultRecord]:
        """Records of ``board`` (all boards when None), oldest first; their ``samples``
        only with ``samples=True`` (empty otherwise: boards render without them)."""
        with closing(self._connect(create=False)) as conn:
            conn.row_factory = sqlite3.Row
            q = "SELECT * FROM results" + (" WHERE board = ?" if board else "") + " ORDER BY id"
            rows = conn.execute(q, (board,) if board else ()).fetchall()
            found: dict[int, dict[str, list[float]]] = {}
            if samples:
                where = "row_id IN (SELECT id FROM results WHERE board = ?)" if board else "1"
                found = _samples(conn, where, (board,) if board else ())
        return [self._record(dict(r), found.get(r["id"], {})) for r in rows]

    def samples(self, row_ids: Iterable[int]) -> dict[int, dict[str, list[float]]]:
        """The ``samples`` of the rows ``row_ids`` (rows without any are left out)."""
        ids = sorted(set(row_ids))
        out: dict[int, dict[str, list[float]]] = {}
        with closing(self._connect(create=False)) as conn:
            for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
                part = ids[start:start + 500]
                out.update(_samples(conn, f"row_id IN ({', '.join('?' * len(part))})", part))
        return out

    @staticmethod
    def _record(row: dict[str, object], samples: dict[str, list[float]] | None = None
                ) -> ResultRecord:
        d = {k: v for k, v in row.items() if k not in ("board", "primary_value")}
        for k in _JSON:
            if k in d:  # a read-only old store may lack the newer columns
                d[k] = json.loads(d[k])  # type: ignore[arg-type]
        d["metrics"] = {k: Metric(**v) for k, v in d["metrics"].items()}
        return ResultRecord(**d, samples=samples or {})


def _blob(values: list[float]) -> bytes:
    """float64, little-endian: exact for every Python float."""
    a = array("d", values)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def _floats(blob: bytes) -> list[float]:
    a = array("d")
    a.frombytes(blob)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tolist()


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def _samples(conn: sqlite3.Connection, where: str, params: Iterable[object]
             ) -> dict[int, dict[str, list[float]]]:
    """``row_id -> {key: values}`` of the samples rows matching ``where`` (insertion order);
    empty on a store that has no samples table."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'samples'"
                    ).fetchone() is None:
        return {}
    out: dict[int, dict[str, list[float]]] = {}
    for row_id, key, data in conn.execute(
            f"SELECT row_id, key, data FROM samples WHERE {where} ORDER BY rowid", tuple(params)):
        out.setdefault(row_id, {})[key] = _floats(data)
    return out
