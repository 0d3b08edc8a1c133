"""Executors: where a sweep's cells run (in-process, a local process pool, Ray, SLURM).

The driver hands :meth:`Executor.run` one picklable top-level ``fn`` and a sequence of
picklable items; ``run`` yields ``(index into items, fn's result or the exception)`` as
items finish, in completion order (index order only for ``local`` with ``-j 1``), each
index exactly once. Workers only compute and return plain records: the driver, in the
main process, is the only writer of the store.

Failures stay with their item. An exception raised by ``fn`` comes back as itself (type
and message; the worker's traceback as its ``__cause__``; one that cannot be pickled as a
:class:`RemoteError` with its text). A worker process that dies (kill -9, the OOM killer,
a segfault, a lost node) comes back as :class:`WorkerDied` for the item it was running,
and the other items still run. ``ray`` and ``submitit`` are optional extras, imported only
when their executor is made.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import pickle
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from protobench.errors import UserError, unknown_name

T = TypeVar("T")
R = TypeVar("R")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class Executor(Protocol):
    """Runs ``fn`` over items; see the module docstring for ordering and failures."""

    name: str

    def run(self, fn: Callable[[T], R],
            items: Sequence[T]) -> Iterator[tuple[int, R | BaseException]]: ...

    def close(self) -> None: ...


class WorkerDied(BrokenProcessPool):
    """The process running an item died before it returned (a BrokenProcessPool, whichever
    executor ran it, so ``except BrokenProcessPool`` catches every kind)."""


class RemoteError(RuntimeError):
    """A worker's exception that could not be pickled back: its type name and message."""


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in a worker (set as its ``__cause__``)."""

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0]}"""'


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    value: Any
    tb: str = ""


@dataclass(frozen=True)
class _Call:
    """``fn(item)`` in a worker, returned as an :class:`_Outcome`: fn's exception travels as
    data (a task or job fails only when its process does); ``threads`` caps its threads."""

    fn: Callable[[Any], Any]
    threads: int | None = None

    def __call__(self, item: Any) -> _Outcome:
        if self.threads is not None:
            limit_threads(self.threads)
        try:
            return _Outcome(True, self.fn(item))
        except BaseException as exc:  # a worker reports everything, KeyboardInterrupt too
            tb = traceback.format_exc()
            try:
                pickle.loads(pickle.dumps(exc))
            except Exception:
                exc = RemoteError(f"{type(exc).__qualname__}: {exc}")
            return _Outcome(False, exc, tb)


def _unwrap(outcome: _Outcome) -> Any:
    if outcome.ok:
        return outcome.value
    exc = outcome.value
    if outcome.tb and exc.__cause__ is None:
        exc.__cause__ = RemoteTraceback(outcome.tb)
    return exc


def limit_threads(n: int) -> None:
    """Cap this process at ``n`` threads: the BLAS/OpenMP variables (read when torch or numpy
    is first imported) and, when torch is already imported, ``torch.set_num_threads``."""
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: what SLURM or a container grants)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _import(module: str, kind: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"--executor {kind} needs {module}, which is not installed: "
                        f"pip install 'protobench[{extra}]' (or make install)") from exc


def _died(index: int, where: str, cause: BaseException | None = None) -> WorkerDied:
    err = WorkerDied(f"item {index}: {where} died before returning (killed by a signal such "
                     "as kill -9 or the out-of-memory killer, or crashed in native code); "
                     "the other items ran on")
    err.__cause__ = cause
    return err


class _Closing:
    def close(self) -> None:  # overridden
        pass

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Lane:
    """One spawn process pool with the futures it runs; a broken pool is replaced lazily."""

    def __init__(self, workers: int, threads: int) -> None:
        self.workers, self.threads = workers, threads
        self.pool: ProcessPoolExecutor | None = None
        self.flight: dict[Future[Any], int] = {}

    def submit(self, call: _Call, index: int, item: Any) -> None:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=limit_threads, initargs=(self.threads,))
        self.flight[self.pool.submit(call, item)] = index

    def reset(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


class LocalExecutor(_Closing):
    """``jobs == 1``: in the driver's process, in index order, no pool. ``jobs > 1``: a
    ``spawn`` ProcessPoolExecutor of ``jobs`` workers (kept across ``run`` calls until
    ``close``), each capped at ``usable_cpus() // jobs`` threads (at least 1).

    At most ``jobs`` items are in flight. When a worker dies the pool breaks and every item
    in flight with it fails: if it held one item, that item gets :class:`WorkerDied`;
    otherwise they are suspects, re-run one at a time in a one-worker side pool (while the
    main pool, rebuilt, runs ``jobs - 1`` fresh items), so the item that kills its worker
    alone gets WorkerDied and the others their own results. The side pool's worker is the
    only extra process. ``close`` waits for items already running.
    """

    name = "local"

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = jobs
        self.threads = max(1, usable_cpus() // jobs)
        self._main, self._solo = _Lane(jobs, self.threads), _Lane(1, self.threads)

    def run(self, fn: Callable[[T], R],
            items: Sequence[T]) -> Iterator[tuple[int, R | BaseException]]:
        return self._inline(fn, items) if self.jobs == 1 else self._pooled(_Call(fn), items)

    @staticmethod
    def _inline(fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, Any]]:
        for i, item in enumerate(items):
            try:
                result: Any = fn(item)
            except Exception as exc:  # KeyboardInterrupt and SystemExit stop the sweep
                result = exc
            yield i, result

    def _pooled(self, call: _Call, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        main, solo = self._main, self._solo
        todo, suspects = deque(range(len(items))), deque[int]()
        try:
            while todo or suspects or main.flight or solo.flight:
                if suspects and not solo.flight:
                    i = suspects.popleft()
                    solo.submit(call, i, items[i])
                while todo and len(main.flight) < self.jobs - len(solo.flight):
                    i = todo.popleft()
                    main.submit(call, i, items[i])
                done, _ = wait([*main.flight, *solo.flight], return_when=FIRST_COMPLETED)
                for lane in (solo, main):
                    finished = [f for f in done if f in lane.flight]
                    if any(isinstance(f.exception(), BrokenProcessPool) for f in finished):
                        wait(list(lane.flight))  # a broken pool fails all its futures
                        finished = list(lane.flight)
                    broken: list[tuple[int, BaseException]] = []
                    for fut in finished:
                        i, exc = lane.flight.pop(fut), fut.exception()
                        if isinstance(exc, BrokenProcessPool):
                            broken.append((i, exc))
                        else:
                            yield i, exc if exc is not None else _unwrap(fut.result())
                    if broken:
                        lane.reset()
                        if len(broken) == 1:
                            yield broken[0][0], _died(broken[0][0], "its worker process",
                                                      broken[0][1])
                        else:
                            suspects.extend(i for i, _ in broken)
        finally:  # the consumer stopped early: drop what has not started
            for lane in (main, solo):
                for fut in lane.flight:
                    fut.cancel()
                lane.flight.clear()

    def close(self) -> None:
        self._main.reset()
        self._solo.reset()


def _ray_task(call: _Call, item: Any) -> _Outcome:
    return call(item)


class RayExecutor(_Closing):
    """One Ray task per item (``num_cpus=1``, no retries: an item that kills its worker
    would be killed again), gathered with ``ray.wait`` as they complete. Connects on the
    first ``run``: to ``address`` (an existing cluster, whose nodes must have protobench
    installed), else a local cluster of ``jobs`` CPUs; when Ray is already initialised in
    this process it is used as is. Logs stay in Ray's session folder (``log_dir``), not on
    the console. Ray caps each task at its one CPU's threads (OMP_NUM_THREADS=1). A dead
    worker or node gives that item WorkerDied; Ray starts a new worker for the rest.
    ``close`` shuts Ray down only if this executor started it.
    """

    name = "ray"

    def __init__(self, jobs: int, address: str | None = None) -> None:
        self.jobs, self.address = jobs, address
        self.log_dir: str | None = None
        self._ray = _import("ray", "ray", "ray")
        self._started = False
        self._task: Any = None

    def _connect(self) -> Any:
        ray = self._ray
        if not ray.is_initialized():
            quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            try:
                if self.address:
                    ctx = ray.init(address=self.address, **quiet)
                else:
                    ctx = ray.init(num_cpus=self.jobs, include_dashboard=False, **quiet)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the cluster at {self.address}" if self.address else "a local cluster"
                raise UserError(f"could not start Ray on {where}: {exc}; check --ray-address "
                                "(`ray status` on the head node shows it)") from exc
            self._started = True
            session = getattr(ctx, "address_info", {}).get("session_dir")
            self.log_dir = str(Path(session) / "logs") if session else None
        if self._task is None:
            self._task = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
        return ray

    def run(self, fn: Callable[[T], R],
            items: Sequence[T]) -> Iterator[tuple[int, R | BaseException]]:
        ray = self._connect()
        deaths = tuple(getattr(ray.exceptions, n) for n in
                       ("WorkerCrashedError", "OutOfMemoryError", "NodeDiedError")
                       if hasattr(ray.exceptions, n))
        call_ref = ray.put(_Call(fn))
        pending = {self._task.remote(call_ref, item): i for i, item in enumerate(items)}
        refs = list(pending)
        try:
            while refs:
                ready, refs = ray.wait(refs, num_returns=1)
                for ref in ready:
                    i = pending.pop(ref)
                    try:
                        result = _unwrap(ray.get(ref))
                    except deaths as exc:
                        result = _died(i, "its Ray worker", exc)
                    except Exception as exc:
                        result = exc
                    yield i, result
        finally:
            for ref in pending:
                ray.cancel(ref)

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started, self._task = False, None


SLURM_ALIASES = {
    "partition": "slurm_partition", "time": "timeout_min", "gpus": "gpus_per_node",
    "cpus": "cpus_per_task", "mem": "mem_gb", "array_parallelism": "slurm_array_parallelism",
    "account": "slurm_account", "qos": "slurm_qos", "constraint": "slurm_constraint",
}
SLURM_GENERIC = ("timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb", "name", "nodes",
                 "tasks_per_node")
_MEM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)I?B?\s*$", re.IGNORECASE)


def _mem_gb(value: Any) -> float:
    match = _MEM.match(str(value))
    if match is None or isinstance(value, bool):
        raise UserError(f"slurm mem={value!r}: give gigabytes (16) or a size like 16G or 500M")
    scale = {"": 1, "K": 1 / 1024**2, "M": 1 / 1024, "G": 1, "T": 1024}[match[2].upper()]
    return float(match[1]) * scale


def _count(key: str, value: Any, least: int) -> int:
    try:
        n = int(value) if not isinstance(value, bool) and float(value) == int(value) else None
    except (TypeError, ValueError):
        n = None
    if n is None or n < least:
        unit = " (minutes)" if key == "timeout_min" else ""
        raise UserError(f"slurm {key}={value!r}: expected an integer >= {least}{unit}")
    return n


def slurm_parameters(options: dict[str, Any], jobs: int) -> dict[str, Any]:
    """Sweep-level SLURM options -> submitit ``update_parameters`` keyword arguments.

    ``partition``, ``time`` (minutes), ``gpus`` (per node), ``cpus`` (per task), ``mem``
    (GB, or 16G / 500M), ``array_parallelism`` (default ``jobs``), ``account``, ``qos``,
    ``constraint``, submitit's generic names and any ``slurm_*`` key (verbatim). Defaults:
    60 minutes (not submitit's 5), job name ``protobench-sweep``; one node, one task.
    """
    params: dict[str, Any] = {"timeout_min": 60, "name": "protobench-sweep",
                              "slurm_array_parallelism": jobs}
    for key, value in options.items():
        target = SLURM_ALIASES.get(key, key)
        if target not in SLURM_GENERIC and not target.startswith("slurm_"):
            known = ", ".join([*SLURM_ALIASES, *SLURM_GENERIC, "cluster"])
            raise UserError(f"unknown slurm option {key!r}; use one of {known} or a slurm_* "
                            "key (passed to submitit verbatim)")
        if target == "mem_gb":
            value = _mem_gb(value)
        elif target in ("timeout_min", "cpus_per_task", "nodes", "tasks_per_node",
                        "slurm_array_parallelism"):
            value = _count(target, value, 1)
        elif target == "gpus_per_node":
            value = _count(target, value, 0)
        params[target] = value
    if params.get("nodes", 1) != 1 or params.get("tasks_per_node", 1) != 1:
        raise UserError("a sweep cell runs as one task: slurm nodes and tasks_per_node must be 1")
    return params


class SlurmExecutor(_Closing):
    """submitit jobs, one per item. On SLURM (``slurm``) all items go in one job array
    (``map_array``, at most ``array_parallelism`` running); with ``cluster=local``
    (``slurm-local``) submitit starts each job as local processes, at most
    ``array_parallelism`` at a time (local jobs see GPUs only when ``gpus`` is set).
    ``folder`` holds the pickles and per-job logs (on SLURM it must be on a filesystem the
    nodes share); ``slurm-local`` defaults to a temporary folder.

    Jobs are polled (``job.done()``) and yielded as they finish. fn's exception is returned
    as itself; a job that ends without a result (killed, out of memory, timed out, node
    lost) gives WorkerDied naming its logs; submitit's own failures (e.g. the job could not
    unpickle fn) come back as submitit's FailedJobError. Each job caps its threads at
    ``cpus`` (default: 1 on SLURM, ``usable_cpus() // array_parallelism`` locally).
    ``close`` (or stopping early) cancels jobs that have not finished.
    """

    def __init__(self, jobs: int, options: dict[str, Any], folder: str | Path | None,
                 local: bool = False) -> None:
        options = dict(options)
        cluster = options.pop("cluster", "local" if local else "slurm")
        if cluster not in ("slurm", "local") or (local and cluster != "local"):
            raise UserError(f"slurm cluster={cluster!r}: use cluster=slurm (sbatch) or "
                            "cluster=local (processes on this machine, --executor slurm-local)")
        self.local = cluster == "local"
        self.name = "slurm-local" if self.local else "slurm"
        submitit = _import("submitit", self.name, "slurm")
        if not self.local and shutil.which("sbatch") is None:
            raise UserError("no SLURM on this machine (sbatch not found): run on a login node, "
                            "or use --executor slurm-local to run the jobs here")
        if folder is None and not self.local:
            raise UserError("--executor slurm needs a folder for job pickles and logs on a "
                            "filesystem the compute nodes share")
        self.parameters = slurm_parameters(options, jobs)
        self.folder = Path(folder or tempfile.mkdtemp(prefix="protobench-submitit-"))
        self.parallelism: int = self.parameters["slurm_array_parallelism"]
        self.threads = self.parameters.get("cpus_per_task") or (
            max(1, usable_cpus() // self.parallelism) if self.local else 1)
        self.poll_s, self.grace_s = (0.1, 1.0) if self.local else (2.0, 60.0)
        self._errors = (submitit.core.utils.FailedSubmissionError,)
        self._ex = submitit.AutoExecutor(folder=self.folder, cluster=cluster)
        try:
            self._ex.update_parameters(**self.parameters)
        except (AssertionError, NameError, TypeError, ValueError) as exc:
            raise UserError(f"submitit refused the slurm options: {exc}".splitlines()[0]) from exc
        self._live: dict[Any, int] = {}

    def run(self, fn: Callable[[T], R],
            items: Sequence[T]) -> Iterator[tuple[int, R | BaseException]]:
        call, todo = _Call(fn, self.threads), deque(range(len(items)))
        running, ended = self._live, {}  # ended: job -> when it stopped without a result
        if todo and not self.local:
            try:
                running.update(zip(self._ex.map_array(call, list(items)), todo))
            except self._errors as exc:
                raise UserError(f"sbatch refused the job array: {exc}; check the slurm "
                                "options (partition, time, account, ...)") from exc
            todo.clear()
        try:
            while todo or running:
                while todo and len(running) < self.parallelism:
                    i = todo.popleft()
                    running[self._ex.submit(call, items[i])] = i
                finished: list[tuple[int, Any]] = []
                for job, i in list(running.items()):
                    if not job.done():
                        continue
                    if job.paths.result_pickle.exists():
                        finished.append((i, self._result(job)))
                    elif time.monotonic() - ended.setdefault(job, time.monotonic()) > self.grace_s:
                        finished.append((i, self._lost(job, i)))
                    else:
                        continue
                    del running[job]
                yield from finished
                if not finished:
                    time.sleep(self.poll_s)
        finally:
            self.close()

    @staticmethod
    def _result(job: Any) -> Any:
        try:
            return _unwrap(job.result())
        except Exception as exc:  # submitit could not run the call at all
            return exc

    def _lost(self, job: Any, index: int) -> WorkerDied:
        log = (job.stderr() or "").strip().splitlines()[-12:]
        err = _died(index, f"job {job.job_id} (state {job.state}, logs {job.paths.stderr})")
        err.__cause__ = RemoteTraceback("\n".join(log) + "\n") if log else None
        return err

    def close(self) -> None:
        for job in self._live:
            job.cancel(check=False)
        self._live.clear()


EXECUTORS: dict[str, Callable[[int, str | None, dict[str, Any], Any], Executor]] = {
    "local": lambda jobs, address, slurm, folder: LocalExecutor(jobs),
    "ray": lambda jobs, address, slurm, folder: RayExecutor(jobs, address),
    "slurm": lambda jobs, address, slurm, folder: SlurmExecutor(
        jobs, slurm, folder, local=slurm.get("cluster") == "local"),
    "slurm-local": lambda jobs, address, slurm, folder: SlurmExecutor(jobs, slurm, folder, True),
}


def make_executor(kind: str = "local", jobs: int = 1, *, ray_address: str | None = None,
                  slurm: dict[str, Any] | None = None,
                  folder: str | Path | None = None) -> Executor:
    """The executor ``kind`` (``local``, ``ray``, ``slurm``, ``slurm-local``) for ``jobs``
    parallel items. Bad input (unknown kind, an option for another kind, a missing extra,
    bad slurm options) raises a UserError naming the fix."""
    if kind not in EXECUTORS:
        raise unknown_name("executor", kind, list(EXECUTORS))
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"-j/--jobs must be a positive integer, got {jobs!r}")
    if ray_address is not None and kind != "ray":
        raise UserError("--ray-address applies only to --executor ray")
    if slurm and not kind.startswith("slurm"):
        raise UserError(f"slurm options apply only to --executor slurm, not {kind}")
    return EXECUTORS[kind](jobs, ray_address, dict(slurm or {}), folder)
