"""`make demo` and the tests never write a tracked file; `make boards` does, on purpose, from
the committed grids of benchmarks/boards.py into a fresh store."""

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from protobench.tasks import Metric, ResultRecord, ResultStore

ROOT = Path(__file__).resolve().parents[2]
WRITES = ("--store", "--out", "--save-checkpoint", "--save-episodes", "--run-dir")


def _git_tree() -> bool:
    return shutil.which("git") is not None and subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT,
        capture_output=True).returncode == 0


needs_make_and_git = pytest.mark.skipif(
    shutil.which("make") is None or not _git_tree(), reason="needs make and a git checkout")


def make_n(target: str) -> list[list[str]]:
    """The command lines ``make -n target`` would run (continuations joined)."""
    out = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return [shlex.split(line) for line in out.replace("\\\n", " ").splitlines() if line.strip()]


def written_paths(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in WRITES]


def ignored_and_untracked(path: str) -> bool:
    ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0
    tracked = subprocess.run(["git", "ls-files", "--", path], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
    return ignored and not tracked


def load_boards():
    spec = importlib.util.spec_from_file_location("boards", ROOT / "benchmarks" / "boards.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["boards"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@needs_make_and_git
def test_make_demo_writes_only_ignored_paths():
    commands = [c for c in make_n("demo") if c and c[0].endswith("protobench")]
    assert len(commands) == 7  # two grids, show, export, site, two paired comparisons
    paths = [p for c in commands for p in written_paths(c)]
    assert len(paths) >= 5 and all(c.count("--store") == 1 for c in commands)
    for path in paths:
        assert ignored_and_untracked(path), f"make demo writes {path}, not a git-ignored path"


@needs_make_and_git
def test_make_boards_runs_the_committed_grids_into_an_ignored_work_folder():
    from protobench.sweep import load_grid
    from protobench.sweep.grid import NOT_IN_KEY

    (command,) = [c for c in make_n("boards") if "benchmarks.boards" in c]
    assert command[0].endswith("python")
    boards = load_boards()
    work = Path("runs/boards")
    steps = boards.plan(work)
    assert [s.part for s in steps] == list(boards.PART_NAMES)
    saved: list[str] = []
    for s in steps:
        assert s.argv[:2] == ("protobench", "sweep") and s.seconds > 0
        grid_file = Path(s.argv[2])
        assert grid_file.parent == Path("benchmarks/grids") and (ROOT / grid_file).is_file()
        paths = written_paths(list(s.argv))
        assert paths == [str(work / "results.sqlite")], s.shell
        assert ignored_and_untracked(paths[0])
        grid = load_grid(ROOT / grid_file)
        assert grid.cells and "save_checkpoint" in NOT_IN_KEY
        for cell in grid.cells:
            c = cell.config
            for ck in (c.get("checkpoint"), (c.get("method_params") or {}).get("checkpoint")):
                if ck:  # a model the grid evaluates is saved by an earlier part
                    assert ck in saved, f"{grid_file}: {ck} is not trained before"
            if c.get("save_checkpoint"):  # models land in the runs folder, never tracked
                assert c["save_checkpoint"].startswith("{runs}/boards/checkpoints/")
                assert ignored_and_untracked(c["save_checkpoint"].replace("{runs}", "runs"))
                saved.append(c["save_checkpoint"])
    assert len(saved) == 3


@needs_make_and_git
def test_committed_digits_board_comes_from_the_demo_grid():
    """The digits part of `make boards` is the demo's few-shot grid file itself: `make demo`
    writes the committed fewshot/digits rows."""
    boards = load_boards()
    (digits,) = [s for s in boards.plan(Path("w")) if s.part == "digits-fewshot"]
    demo = [c[1:] for c in make_n("demo") if c and c[0].endswith("protobench")
            and c[1] == "sweep"]
    assert digits.argv[2] in [c[1] for c in demo]


def test_every_committed_row_is_a_done_cell_of_a_committed_grid():
    """Each row of leaderboards/results.sqlite was written by `protobench sweep` for a cell
    of a grid in benchmarks/grids/, and each grid on the boards has all its cells there;
    for the digits grids the keys are recomputed from the grid files."""
    from protobench.sweep import load_grid, validate

    boards = load_boards()
    store = ResultStore(ROOT / "leaderboards" / "results.sqlite")
    records = store.records()
    assert records
    grids = {s.part: load_grid(ROOT / s.argv[2]) for s in boards.plan(Path("w"))}
    by_name = {g.name: g for g in grids.values()}
    for r in records:
        sweep = r.config.get("sweep") or {}
        assert sweep.get("grid") in by_name, (r.board, r.method, "not from a committed grid")
        cells = store.cells(sweep["grid"])
        assert cells[sweep["cell"]]["status"] == "done" and r.id in cells[sweep["cell"]][
            "row_ids"]
    present = [g for g in by_name.values() if store.cells(g.name)]
    for grid in present:  # a grid on the boards is there whole: no partial grid
        done = {k for k, v in store.cells(grid.name).items() if v["status"] == "done"}
        assert len(done) == len(grid.cells) == len(store.cells(grid.name)), grid.name
    assert {g.name for g in present} == set(by_name)  # every grid of `make boards` is there
    for part in ("digits-fewshot", "continual-digits"):
        keys = {c.key for c in validate(grids[part]).cells}
        assert keys == set(store.cells(grids[part].name)), part


def test_boards_quick_builds_a_fresh_store_and_installs_only_elsewhere(tmp_path):
    work, out = tmp_path / "work", tmp_path / "boards"
    stale = ResultRecord(task="fewshot", dataset="digits", split="test", method="stale",
                         setting={"ways": 5, "shots": 1, "queries": 15, "episodes": 10},
                         config={}, metrics={"accuracy": Metric(1.0)}, seed=0)
    ResultStore(work / "results.sqlite").add(stale)  # a row of an earlier run
    out.mkdir()
    (out / "fewshot_stale.md").write_text("stale board\n")
    script = [sys.executable, "-m", "benchmarks.boards", "--parts", "digits-fewshot",
              "--quick", "--work", str(work)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([*script, "--out", str(out), "--install"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    records = ResultStore(out / "results.sqlite").records()
    assert sorted((r.method, r.setting["shots"], r.seed) for r in records) == [
        (m, k, s) for m in ("ncm", "protonet") for k in (1, 5) for s in (0, 1, 2)]
    assert {r.setting["episodes"] for r in records} == {20}  # the --quick overrides
    assert all(r.config["sweep"]["grid"] == "digits-demo-fewshot" for r in records)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "fewshot_digits.csv", "fewshot_digits.md", "results.sqlite", "site"]
    page = (out / "site" / "boards" / "fewshot-digits.html").read_text()
    assert page.count('<tr class="row"') == 4  # 2 methods x 2 shots, over 3 seeds each
    assert f"--store {out / 'results.sqlite'}" in page  # the installed store, not the work one
    plan = subprocess.run([*script, "--dry-run"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert plan.returncode == 0 and "installed" not in plan.stdout  # a part: not installed
    assert plan.stdout.count("protobench sweep benchmarks/grids/") == 1
    assert "--set episodes=20 --set train_steps=2" in plan.stdout
    refused = subprocess.run([*script, "--out", str(ROOT / "leaderboards"), "--install",
                              "--dry-run"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and "never replace the committed ones" in refused.stderr
    # --resume keeps the store and reruns nothing that is done; a row no grid names is
    # refused before anything is installed
    before = (out / "results.sqlite").read_bytes()
    ResultStore(work / "results.sqlite").add(stale)
    resumed = subprocess.run([*script, "--resume", "--out", str(out), "--install"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode != 0 and "nothing installed" in resumed.stderr
    assert "is not a cell of these grids" in resumed.stderr
    assert "12 skipped" in resumed.stdout  # every cell was done: none ran again
    assert (out / "results.sqlite").read_bytes() == before


def test_resume_drops_the_cells_a_grid_no_longer_has(tmp_path):
    """A --resume after a grid changed: the stale cells and their rows go, the grid's own
    cells stay and are continued."""
    from protobench.sweep import load_grid, validate
    from protobench.tasks.store import Cell

    boards = load_boards()
    (step,) = [s for s in boards.plan(tmp_path) if s.part == "digits-fewshot"]
    store = ResultStore(tmp_path / "results.sqlite")
    grid = validate(load_grid(ROOT / step.argv[2]))
    row = ResultRecord(task="fewshot", dataset="digits", split="test", method="m",
                       setting={"ways": 5, "shots": 1, "queries": 15, "episodes": 10},
                       config={}, metrics={"accuracy": Metric(0.5)}, seed=0)
    store.add_all([row], Cell("stale-key", grid.name))
    assert boards._continue(step, store.path, resume=True) == []  # nothing of it is left
    assert store.cells(grid.name) == {} and store.records() == []
    store.add_all([row], Cell(grid.cells[0].key, grid.name))
    store.add_all([row], Cell("stale-key", grid.name))
    assert boards._continue(step, store.path, resume=True) == ["--resume", "--retry-failed"]
    assert set(store.cells(grid.name)) == {grid.cells[0].key} and len(store.records()) == 1
