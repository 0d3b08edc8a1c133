"""Executors: every kind returns what a plain loop returns, and keeps failures per item.

Real components only: spawned process pools, one local Ray cluster for the module (started
by the Ray executor itself, shut down by its close), submitit's local executor (real job
processes).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool

import pytest

from protobench.errors import UserError
from protobench.sweep.executors import (
    RemoteTraceback,
    WorkerDied,
    make_executor,
    slurm_parameters,
    usable_cpus,
)
from tests.sweep import workers

KINDS = ["local-1", "local-2", "ray", "slurm-local"]


@pytest.fixture(scope="module")
def ray_executor() -> Iterator:
    """One local Ray cluster for the module: the executor starts it (num_cpus=2, no
    dashboard) on its first run and its close shuts it down."""
    ray = pytest.importorskip("ray")
    ex = make_executor("ray", 2)
    yield ex
    ex.close()
    assert not ray.is_initialized()


@pytest.fixture
def executor(request: pytest.FixtureRequest, tmp_path) -> Iterator:
    kind = request.param
    if kind == "ray":
        yield request.getfixturevalue("ray_executor")
        return
    if kind.startswith("local"):
        ex = make_executor("local", int(kind[-1]))
    else:
        ex = make_executor("slurm-local", 2, folder=tmp_path / "submitit")
    with ex:
        yield ex


def collect(ex, fn, items) -> dict:
    """run() as {index: result}, checking that every index comes back exactly once."""
    pairs = list(ex.run(fn, items))
    indices = [i for i, _ in pairs]
    assert sorted(indices) == list(range(len(items))), indices
    return dict(pairs)


@pytest.mark.parametrize("executor", KINDS, indirect=True)
def test_results_match_a_plain_loop_and_an_exception_stays_with_its_item(executor):
    items = list(range(6))
    got = collect(executor, workers.square_or_raise, items)
    assert {i: r for i, r in got.items() if i != 3} == {i: i * i for i in items if i != 3}
    assert isinstance(got[3], ValueError) and str(got[3]) == "bad item 3"
    if executor.name != "local" or executor.jobs > 1:  # it crossed a process boundary
        assert isinstance(got[3].__cause__, RemoteTraceback)
        assert "square_or_raise" in str(got[3].__cause__)
    assert list(executor.run(workers.square, [])) == []


@pytest.mark.parametrize("executor", ["local-2", "ray", "slurm-local"], indirect=True)
def test_a_worker_killed_with_signal_9_fails_only_its_item(executor):
    items = list(range(6))
    got = collect(executor, workers.square_or_die, items)
    assert isinstance(got[workers.KILL], WorkerDied)
    assert isinstance(got[workers.KILL], BrokenProcessPool)
    assert {i: r for i, r in got.items() if i != workers.KILL} == {
        i: i * i for i in items if i != workers.KILL}


def test_local_pool_runs_in_two_processes_with_capped_threads_in_completion_order():
    threads = max(1, usable_cpus() // 2)
    with make_executor("local", 2) as ex:
        info = collect(ex, workers.worker_info, range(4))
        pids = {pid for _, pid, _, _ in info.values()}
        assert len(pids) == 2 and os.getpid() not in pids
        assert {(omp, n) for _, _, omp, n in info.values()} == {(str(threads), threads)}
        # the same (warm) pool again: the long item finishes last, and is yielded last
        order = [i for i, _ in ex.run(workers.nap, [1.0, 0.0, 0.0])]
        assert order[-1] == 0


def test_local_inline_runs_in_this_process_in_order():
    with make_executor("local", 1) as ex:
        assert list(ex.run(workers.square_or_raise, [3, 1]))[1] == (1, 1)
        (_, (x, pid, _, _)), = ex.run(workers.worker_info, [7])
        assert (x, pid) == (7, os.getpid())


def test_32_workers_lose_nothing():
    with make_executor("local", 32) as ex:
        assert collect(ex, workers.square, range(64)) == {i: i * i for i in range(64)}


def test_ray_leaves_a_cluster_it_did_not_start_running(ray_executor):
    ray = pytest.importorskip("ray")
    list(ray_executor.run(workers.square, [1]))  # the module's cluster is up
    assert ray_executor.log_dir and os.path.isdir(ray_executor.log_dir)  # logs, not console
    with make_executor("ray", 2) as other:
        assert dict(other.run(workers.square, [2, 3])) == {0: 4, 1: 9}
    assert ray.is_initialized()


def test_workers_import_the_executors_without_torch():
    """A spawned worker unpickles protobench.sweep.executors first: if that imported torch,
    the thread cap would come after torch had read OMP_NUM_THREADS."""
    code = "import sys, protobench.sweep.executors; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("kind", "kwargs", "message"), [
    ("nope", {}, "choose one of: local, ray, slurm, slurm-local"),
    ("local", {"jobs": 0}, "positive integer"),
    ("local", {"ray_address": "auto"}, "--executor ray"),
    ("local", {"slurm": {"partition": "gpu"}}, "--executor slurm"),
    ("slurm-local", {"slurm": {"bogus": 1}}, "unknown slurm option 'bogus'"),
    ("slurm-local", {"slurm": {"time": "soon"}}, "(minutes)"),
    ("slurm-local", {"slurm": {"mem": "lots"}}, "16G"),
    ("slurm-local", {"slurm": {"nodes": 2}}, "must be 1"),
    ("slurm-local", {"slurm": {"cluster": "pbs"}}, "cluster=local"),
])
def test_bad_options_name_the_fix(kind, kwargs, message):
    with pytest.raises(UserError) as info:
        make_executor(kind, **kwargs)
    assert message in str(info.value)


def test_slurm_without_sbatch_points_to_slurm_local():
    if any(os.access(os.path.join(d, "sbatch"), os.X_OK)
           for d in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("this machine has SLURM")
    with pytest.raises(UserError, match="slurm-local"):
        make_executor("slurm", 2, folder="unused")
    assert make_executor("slurm", 2, slurm={"cluster": "local"}).name == "slurm-local"


@pytest.mark.parametrize(("module", "kind", "extra"), [
    ("ray", "ray", "ray"), ("submitit", "slurm-local", "slurm")])
def test_a_missing_extra_names_the_install(monkeypatch, module, kind, extra):
    monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when not installed
    with pytest.raises(UserError, match=rf"pip install 'protobench\[{extra}\]'"):
        make_executor(kind, 2)


def test_slurm_options_translate_to_submitit_parameters():
    params = slurm_parameters({"partition": "gpu", "time": 90, "gpus": 1, "cpus": 4,
                               "mem": "500M", "slurm_account": "lab"}, jobs=8)
    assert params == {"slurm_partition": "gpu", "timeout_min": 90, "gpus_per_node": 1,
                      "cpus_per_task": 4, "mem_gb": 500 / 1024, "slurm_account": "lab",
                      "slurm_array_parallelism": 8, "name": "protobench-sweep"}
    assert slurm_parameters({"array_parallelism": 3}, jobs=8)["slurm_array_parallelism"] == 3
    assert slurm_parameters({}, jobs=1)["timeout_min"] == 60
