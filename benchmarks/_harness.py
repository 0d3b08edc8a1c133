"""One harness for every benchmark: flags, threads, provenance and the result files.

A benchmark module defines one :class:`Benchmark` and ends with
``if __name__ == "__main__": raise SystemExit(main(BENCHMARK))``; ``python -m
benchmarks.<name>`` and ``protobench bench <name>`` then share:

- ``--out DIR`` (default ``benchmarks/results``), ``--quick`` (a smoke run) and
  ``--threads N`` (torch threads, and ``OMP_NUM_THREADS`` for child processes);
- the provenance of the run: :meth:`Provenance.capture` (versions, git revision, device,
  machine, start time) plus the command line and the wall time (of the run, or of the
  part for benchmarks with several records);
- the records: ``<out>/<stem>.json`` (``{"benchmark", "quick", "provenance", "arguments",
  **result}``) and ``<out>/<stem>.md`` (the provenance block, then the benchmark's
  Markdown). ``<stem>`` is the benchmark's name (plus its ``--tag`` where it has one), with
  ``_quick`` last after a smoke run, so a smoke run never replaces a committed result
  (``benchmarks/results/*_quick.*`` is git-ignored).

``run(args, quick)`` returns one result dict; a benchmark with one record per part (a
dataset, a target) yields ``(stem, result)`` pairs instead, each written when it is done;
``None`` records nothing (a dry run, a helper process).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from protobench.tasks.provenance import Provenance

RESULTS = Path(__file__).parent / "results"
Result = dict[str, Any]
Outcome = Result | Iterable[tuple[str, Result]] | None
OWNED = ("benchmark", "quick", "provenance", "arguments")  # record keys the harness writes


class UsageError(Exception):
    """Bad flags found while running: reported like argparse's errors (exit code 2)."""


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    return None


@dataclass(frozen=True)
class Benchmark:
    """What a benchmark measures and how it is shown; the harness does the rest.

    ``description`` is the module docstring (``--help``); ``stem(args)`` names the record
    (default: ``name`` plus ``args.tag`` where the script has a ``--tag``). The device in
    the provenance is the script's ``--device`` where it has one, else ``cpu``.
    ``out``/``out_help`` are the default and help of ``--out``; ``records_in(args)`` is
    where the records go when that is not ``--out`` (``boards``: its ``--out`` is the
    committed boards folder, its records go to ``--work``)."""

    name: str
    description: str
    run: Callable[[argparse.Namespace, bool], Outcome]
    markdown: Callable[[Result], str]
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    stem: Callable[[argparse.Namespace], str] | None = None
    out: Path = RESULTS
    out_help: str = "folder for the JSON + Markdown records"
    records_in: Callable[[argparse.Namespace], Path] | None = None

    @property
    def summary(self) -> str:
        return " ".join(self.description.strip().split("\n\n")[0].split())

    def parser(self) -> argparse.ArgumentParser:
        ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{self.name}",
                                     description=self.description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        ap.add_argument("--out", type=Path, default=self.out, help=self.out_help)
        ap.add_argument("--quick", action="store_true",
                        help="smoke run: tiny sizes, records named *_quick")
        ap.add_argument("--threads", type=int, default=None,
                        help="torch threads and OMP_NUM_THREADS (default: torch's)")
        self.add_arguments(ap)
        return ap

    def base(self, args: argparse.Namespace) -> str:
        """The record's file name before ``_quick``."""
        return self.stem(args) if self.stem else self.name + getattr(args, "tag", "")


def set_threads(n: int | None) -> None:
    """``n`` torch threads here, and ``OMP_NUM_THREADS`` for every child process."""
    if n:
        os.environ["OMP_NUM_THREADS"] = str(n)
        torch.set_num_threads(n)


def machine_line(m: dict[str, Any]) -> str:
    gpu = f"GPU {m['gpu']}" if m.get("gpu") else "no GPU"
    return f"{m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads), {gpu}"


def provenance_markdown(record: Result) -> str:
    p = record["provenance"]
    versions = ", ".join(f"{k} {v}" for k, v in p["versions"].items())
    return "\n".join([
        f"> **Provenance**: `{p['command']}`{' (quick smoke run)' if record['quick'] else ''}",
        f"> started {p['timestamp']}, {p['wall_seconds']:.1f} s; git {p['git_revision'] or '-'}",
        f"> {machine_line(p['machine'])}; device {p['device']}",
        f"> {versions}"]) + "\n"


def record(benchmark: Benchmark, args: argparse.Namespace, quick: bool, provenance: Result,
           result: Result) -> Result:
    clash = sorted(set(OWNED) & set(result))
    if clash:
        raise ValueError(f"{benchmark.name}: the harness writes {clash}; rename them")
    arguments = json.loads(json.dumps(vars(args), default=str))
    return {"benchmark": benchmark.name, "quick": quick, "provenance": provenance,
            "arguments": arguments, **result}


def write(benchmark: Benchmark, rec: Result, folder: Path, stem: str) -> list[Path]:
    """``<folder>/<stem>.json`` and ``.md``, provenance first in both."""
    folder.mkdir(parents=True, exist_ok=True)
    text = provenance_markdown(rec) + "\n" + benchmark.markdown(rec)
    paths = [folder / f"{stem}.json", folder / f"{stem}.md"]
    paths[0].write_text(json.dumps(rec, indent=1, default=str) + "\n")
    paths[1].write_text(text)
    print(text, flush=True)
    for path in paths:
        print(f"wrote {path}", flush=True)
    return paths


def main(benchmark: Benchmark, argv: list[str] | None = None) -> int:
    """Parse the flags, run the benchmark, write its records; returns the exit code."""
    ap = benchmark.parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    prov = Provenance.capture(str(getattr(args, "device", "cpu"))).to_dict()
    prov["command"] = f"python -m benchmarks.{benchmark.name} {shlex.join(argv)}".strip()
    folder = benchmark.records_in(args) if benchmark.records_in else args.out
    suffix = "_quick" if args.quick else ""
    t0 = time.perf_counter()
    try:
        outcome = benchmark.run(args, args.quick)
        if outcome is None:
            return 0
        parts = [(benchmark.base(args), outcome)] if isinstance(outcome, dict) else outcome
        for stem, result in parts:
            now = time.perf_counter()
            rec = record(benchmark, args, args.quick,
                         {**prov, "wall_seconds": round(now - t0, 3)}, result)
            write(benchmark, rec, folder, stem + suffix)
            t0 = now
    except UsageError as exc:
        ap.error(str(exc))
    return 0
