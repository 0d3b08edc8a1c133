"""docs/adding_a_method.md: its code runs as written and its methods behave."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding_a_method.md"


def test_the_tutorial_code_runs_and_its_methods_work(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 4  # few-shot, continual, OOD, running them
    script = tmp_path / "tutorial.py"
    script.write_text("\n\n".join(blocks))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={"OMP_NUM_THREADS": "1",
                                                       "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    values = dict(re.findall(r"^(\w+) Metric\(value=([0-9.]+)", done.stdout, flags=re.M))
    assert set(values) == {"fewshot", "continual", "ood"}, done.stdout
    # pixel class means on digits: far above 5-way chance (0.2); the exemplar-free class
    # means keep every class (a mean per class, no forgetting of a mean); digits 5-9 are
    # told apart from 0-4 on raw pixels better than chance
    assert float(values["fewshot"]) > 0.6
    assert float(values["continual"]) > 0.7
    assert float(values["ood"]) > 0.6
    assert "n=3" in done.stdout.splitlines()[0]  # the mean over three seeds
