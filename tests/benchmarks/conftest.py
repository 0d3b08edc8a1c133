"""Run a benchmark as ``python -m benchmarks.<name>`` in a temporary folder, one thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
OMNIGLOT = ROOT.parent / "shared" / "data" / "omniglot"


def module_env() -> dict[str, str]:
    """The environment of a child that runs ``-m benchmarks.<name>`` outside the checkout."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}


@pytest.fixture
def quick(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """``quick(name, *flags, stem=name)`` runs ``python -m benchmarks.<name> --quick
    --threads 1 --out <tmp> *flags`` with ``<tmp>`` as its working directory (so nothing
    lands in the checkout) and returns the record ``<tmp>/<stem>_quick.json``."""

    def run(name: str, *flags: str, stem: str | None = None, timeout: int = 600
            ) -> dict[str, Any]:
        res = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--quick",
                              "--threads", "1", "--out", str(tmp_path), *flags],
                             cwd=tmp_path, env=module_env(), capture_output=True, text=True,
                             timeout=timeout)
        assert res.returncode == 0, res.stderr[-3000:]
        rec = json.loads((tmp_path / f"{stem or name}_quick.json").read_text())
        assert rec["benchmark"] == name and rec["quick"] is True
        assert rec["provenance"]["machine"]["torch_threads"] == 1
        return rec

    return run
