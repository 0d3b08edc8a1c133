"""The experiment core: the runner (:mod:`.base`), the task definitions (few-shot,
continual, OOD, open world), records and the result store. Importing this package
registers every task (``protobench rerun`` finds a row's task by name)."""

from protobench.tasks import continual, fewshot, ood  # noqa: E402, F401, I001  (registers)
from protobench.tasks.record import Metric, ResultRecord
from protobench.tasks.store import DEFAULT_STORE, ResultStore

__all__ = ["DEFAULT_STORE", "Metric", "ResultRecord", "ResultStore"]
