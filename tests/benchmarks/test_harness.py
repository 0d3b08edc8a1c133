"""The benchmark harness: one record format with provenance, --threads, the public-API rule
for every benchmark, and the ``protobench bench`` entry point."""

from __future__ import annotations

import ast
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from benchmarks._harness import Benchmark, UsageError, main
from protobench.cli import app

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
NAMES = sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))
PROVENANCE = {"versions", "git_revision", "device", "machine", "timestamp", "command",
              "wall_seconds"}


def _toy(seen: dict, **kw) -> Benchmark:
    def add_arguments(ap):
        ap.add_argument("--size", type=int, default=2)
        ap.add_argument("--tag", default="")

    def run(args, quick):
        seen.update(threads=torch.get_num_threads(), omp=os.environ.get("OMP_NUM_THREADS"),
                    quick=quick)
        if args.size < 0:
            raise UsageError("--size must be >= 0")
        return {"values": list(range(args.size))}

    def markdown(out):
        return "# Toy\n\n" + " ".join(map(str, out["values"])) + "\n"

    return Benchmark(kw.pop("name", "toy"), "Toy benchmark.\n\nMore words.", run, markdown,
                     add_arguments, **kw)


@pytest.fixture
def restore_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # restored after the test
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("restore_threads")
def test_records_are_json_and_markdown_with_provenance_first(tmp_path):
    seen: dict = {}
    assert main(_toy(seen), ["--quick", "--out", str(tmp_path), "--size", "3"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy_quick.json", "toy_quick.md"]
    rec = json.loads((tmp_path / "toy_quick.json").read_text())
    assert list(rec)[:4] == ["benchmark", "quick", "provenance", "arguments"]
    assert rec["benchmark"] == "toy" and rec["quick"] is True and seen["quick"] is True
    assert rec["values"] == [0, 1, 2] and rec["arguments"]["size"] == 3
    prov = rec["provenance"]
    assert set(prov) == PROVENANCE and prov["device"].startswith("cpu")
    assert prov["command"] == f"python -m benchmarks.toy --quick --out {tmp_path} --size 3"
    assert prov["versions"]["torch"] and prov["wall_seconds"] >= 0
    assert {"cpu", "cores", "torch_threads", "gpu"} <= set(prov["machine"])
    md = (tmp_path / "toy_quick.md").read_text()
    head, body = md.split("\n\n", 1)
    assert head.startswith("> **Provenance**: `python -m benchmarks.toy --quick")
    assert prov["timestamp"] in head and "torch threads" in head
    assert body == "# Toy\n\n0 1 2\n"


@pytest.mark.usefixtures("restore_threads")
def test_names_tags_several_records_and_nothing(tmp_path):
    assert main(_toy({}), ["--out", str(tmp_path), "--tag", "_t1"]) == 0
    assert (tmp_path / "toy_t1.json").is_file()  # a full run: no _quick suffix

    def several(args, quick):
        yield "toy_a", {"part": "a"}
        yield "toy_b", {"part": "b"}

    bench = Benchmark("toy", "Toy.", several, lambda out: f"# {out['part']}\n")
    assert main(bench, ["--quick", "--out", str(tmp_path / "many")]) == 0
    for part in "ab":  # one record per part, each with the provenance
        rec = json.loads((tmp_path / "many" / f"toy_{part}_quick.json").read_text())
        assert rec["part"] == part and set(rec["provenance"]) == PROVENANCE
    nothing = Benchmark("toy", "Toy.", lambda args, quick: None, lambda out: "")
    assert main(nothing, ["--out", str(tmp_path / "none")]) == 0
    assert not (tmp_path / "none").exists()
    clash = Benchmark("toy", "Toy.", lambda args, quick: {"provenance": 1}, lambda out: "")
    with pytest.raises(ValueError, match="provenance"):
        main(clash, ["--out", str(tmp_path / "clash")])


@pytest.mark.usefixtures("restore_threads")
def test_records_go_where_records_in_says(tmp_path):
    bench = _toy({}, records_in=lambda args: tmp_path / "work")
    assert main(bench, ["--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "work" / "toy.json").is_file() and not (tmp_path / "out").exists()


@pytest.mark.usefixtures("restore_threads")
def test_threads_are_applied_to_torch_and_children(tmp_path):
    seen: dict = {}
    torch.set_num_threads(2)
    assert main(_toy(seen), ["--threads", "1", "--out", str(tmp_path)]) == 0
    assert seen["threads"] == 1 and seen["omp"] == "1"
    rec = json.loads((tmp_path / "toy.json").read_text())
    assert rec["provenance"]["machine"]["torch_threads"] == 1
    assert rec["arguments"]["threads"] == 1 and rec["quick"] is False


def test_usage_errors_exit_2_with_the_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(_toy({}), ["--size", "-1", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "--size must be >= 0" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def _imports(path: Path) -> list[tuple[str, str | None]]:
    """``(module, name)`` of every import in ``path``, inside functions too."""
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out += [(node.module or "", a.name) for a in node.names]
    return out


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_no_sys_path_and_only_public_protobench(path):
    text = path.read_text()
    assert "sys.path" not in text, f"{path.name} edits sys.path; run it with python -m"
    private = [(m, n) for m, n in _imports(path) if m.split(".")[0] == "protobench"
               and (any(p.startswith("_") for p in m.split(".")) or (n or "").startswith("_"))]
    assert not private, f"{path.name} imports private protobench names: {private}"
    relative = [m for m, _ in _imports(path) if m.split(".")[0] in {p.stem for p in
                                                                   BENCHMARKS.glob("*.py")}]
    assert not relative, f"{path.name}: import siblings as benchmarks.<name>: {relative}"


def test_every_benchmark_is_a_harness_benchmark():
    assert (BENCHMARKS / "__init__.py").is_file()
    assert len(NAMES) >= 12
    for name in NAMES:
        module = importlib.import_module(f"benchmarks.{name}")
        bench = module.BENCHMARK
        assert isinstance(bench, Benchmark) and bench.name == name
        usage = bench.parser().format_help()
        assert all(flag in usage for flag in ("--out", "--quick", "--threads")), name
        assert "raise SystemExit(main(BENCHMARK))" in (BENCHMARKS / f"{name}.py").read_text()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_quick_records_in_the_default_folder_are_git_ignored():
    """A --quick run without --out never replaces a committed result."""
    if subprocess.run(["git", "rev-parse"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    for name in NAMES:
        path = f"benchmarks/results/{name}_t_quick.json"
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0


def test_bench_lists_names_and_refuses_an_unknown_one():
    runner = CliRunner()
    listed = runner.invoke(app, ["bench"])
    assert listed.exit_code == 0 and all(n in listed.output for n in NAMES)
    res = runner.invoke(app, ["bench", "no_such_benchmark"])
    assert res.exit_code == 2, res.output
    assert "unknown benchmark 'no_such_benchmark'" in res.output
    assert all(n in res.output for n in NAMES) and "Traceback" not in res.output


def test_bench_runs_a_benchmark_from_anywhere(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-m", "protobench.cli", "bench", "ood_knn", "--quick",
                          "--out", str(tmp_path / "out"), "--k", "5", "--threads", "1"],
                         cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads((tmp_path / "out" / "ood_knn_quick.json").read_text())
    assert rec["benchmark"] == "ood_knn" and rec["quick"] is True
    assert rec["arguments"]["k"] == 5 and rec["rows"][0]["k"] == 5  # extra flags pass through
    assert set(rec["provenance"]) == PROVENANCE
    assert (tmp_path / "out" / "ood_knn_quick.md").read_text().startswith("> **Provenance**")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing else written
