"""The layer order and the absence of import cycles hold (import-linter's contracts in
pyproject.toml, which also read imports inside functions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    kinds = {c["type"] for c in contracts["contracts"]}
    assert kinds == {"layers", "acyclic_siblings"}
    exe = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_back_edge_inside_a_function_breaks_the_contract(tmp_path):
    """The check is real: a lazy import of the CLI from the datasets layer is caught."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "protobench", copy / "protobench")
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    bad = copy / "protobench" / "datasets" / "digits.py"
    bad.write_text(bad.read_text() + "\n\ndef _back_edge():\n    from protobench import cli\n"
                   "    return cli\n")
    exe = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(exe)], cwd=copy, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert done.returncode != 0
    assert "protobench.datasets is not allowed to import protobench.cli" in done.stdout
