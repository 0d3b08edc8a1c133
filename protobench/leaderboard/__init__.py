"""Result records, the SQLite store and renderers."""

from protobench.leaderboard.record import Metric, ResultRecord
from protobench.leaderboard.store import DEFAULT_STORE, ResultStore

__all__ = ["DEFAULT_STORE", "Metric", "ResultRecord", "ResultStore"]
