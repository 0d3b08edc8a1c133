"""`make demo` and the tests never write a tracked file; `make boards` does, on purpose, from
the committed commands of benchmarks/boards.py into a fresh store."""

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
    assert len(commands) == 6  # two grids, show, export, two paired comparisons
    paths = [p for c in commands for p in written_paths(c)]
    assert len(paths) >= 5 and all(c.count("--store") == 1 for c in commands)
    for path in paths:
        assert ignored_and_untracked(path), f"make demo writes {path}, not a git-ignored path"


@needs_make_and_git
def test_make_boards_runs_the_committed_script_into_an_ignored_work_folder():
    (command,) = [c for c in make_n("boards") if "benchmarks.boards" in c]
    assert command[0].endswith("python")
    boards = load_boards()
    work = Path("runs/boards")
    steps = boards.plan(work, "../shared/data/omniglot")
    assert {s.part for s in steps} == set(boards.PARTS)
    for s in steps:
        assert s.argv[0] == "protobench" and s.seconds > 0
        paths = written_paths(list(s.argv))
        assert paths and str(work / "results.sqlite") in paths, s.shell
        assert all(Path(p).is_relative_to(work) and ignored_and_untracked(p) for p in paths)
    # the models the geodesic parts evaluate are trained earlier in the plan
    saved = []
    for s in steps:
        if "--checkpoint" in s.argv:
            assert s.argv[s.argv.index("--checkpoint") + 1] in saved, s.shell
        if "--save-checkpoint" in s.argv:
            saved.append(s.argv[s.argv.index("--save-checkpoint") + 1])


@needs_make_and_git
def test_committed_digits_board_comes_from_the_demo_grid():
    """The committed digits board's commands are the seed-0 cells of the demo's few-shot
    grid (same method, ways, shots, queries, episodes, preset): `make demo` reproduces it
    and adds seeds 1 and 2."""
    from protobench.sweep import load_grid, validate

    boards = load_boards()
    digits = [list(s.argv[1:]) for s in boards.plan(Path("w"), "d") if s.part == "digits"]
    demo = [c[1:] for c in make_n("demo") if c and c[0].endswith("protobench")
            and c[1] == "sweep"]
    (grid_file,) = [c[1] for c in demo if "fewshot" in c[1]]
    grid = validate(load_grid(ROOT / grid_file))
    cells = {(c.config["method"], c.config["ways"], c.config["shots"][0], c.config["queries"],
              c.config["episodes"]) for c in grid.cells
             if c.config["seed"] == 0 and not c.config.get("method_params")}
    commands = set()
    for argv in digits:
        assert argv[0] == "fewshot" and "--seed" not in argv and "--config" not in argv
        method, ways = argv[argv.index("--method") + 1], int(argv[argv.index("--ways") + 1])
        for i, a in enumerate(argv):
            if a == "--shots":
                commands.add((method, ways, int(argv[i + 1]), 15, 1000))
    assert commands == cells
    assert {c.config["seed"] for c in grid.cells} == {0, 1, 2}


def test_boards_quick_builds_a_fresh_store_and_installs_only_elsewhere(tmp_path):
    work, out = tmp_path / "work", tmp_path / "boards"
    stale = ResultRecord(task="fewshot", dataset="digits", split="test", method="stale",
                         setting={"ways": 5, "shots": 1, "queries": 15, "episodes": 10},
                         config={}, metrics={"accuracy": Metric(1.0)}, seed=0)
    ResultStore(work / "results.sqlite").add(stale)  # a row of an earlier run
    out.mkdir()
    (out / "fewshot_stale.md").write_text("stale board\n")
    script = [sys.executable, "-m", "benchmarks.boards", "--parts", "digits",
              "--quick", "--work", str(work)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([*script, "--out", str(out), "--install"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    records = ResultStore(out / "results.sqlite").records()
    assert sorted((r.method, r.setting["shots"]) for r in records) == [
        ("ncm", 1), ("ncm", 5), ("protonet", 1), ("protonet", 5)]
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "fewshot_digits.csv", "fewshot_digits.md", "results.sqlite"]
    plan = subprocess.run([*script, "--dry-run"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert plan.returncode == 0 and "installed" not in plan.stdout  # a part: not installed
    assert plan.stdout.count("protobench fewshot --dataset digits") == 2
    refused = subprocess.run([*script, "--out", str(ROOT / "leaderboards"), "--install",
                              "--dry-run"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and "never replace the committed ones" in refused.stderr
