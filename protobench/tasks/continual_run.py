"""The continual run loop: train on each experience, evaluate every seen one, checkpoint.

``run_stream(method, stream, device)`` is a plain loop: for experience ``t`` it seeds
torch with :func:`experience_seed` (so any experience can be replayed alone), calls
``method.train_experience`` with the experience's training tensors, then scores the test
data of experiences ``0..t`` with ``method.predict`` and fills row ``t`` of the
class-incremental matrix (argmax over every seen class) and of the task-incremental one
(argmax over the classes of the sample's own experience).

With a ``run_dir``, the state after every experience (method state, both matrices, the
statistics so far, the RNG states) is written atomically to ``run_dir/checkpoint.pt``;
``resume=True`` loads it and continues from the first unfinished experience, giving the
same final matrices as an uninterrupted run.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protobench.continual.metrics import AccuracyMatrix, summarize
from protobench.continual.stream import ClassIncrementalStream
from protobench.errors import UserError
from protobench.methods.continual_base import ContinualMethod, ExperienceInfo
from protobench.utils import counter_seed

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "protobench.continual-run/1"


def experience_seed(seed: int, t: int) -> int:
    """Counter-based seed of experience ``t`` of a run seeded ``seed``."""
    return counter_seed(seed, t) % (2**63)


@dataclass(frozen=True)
class ContinualResult:
    """A finished run: ``[T, T]`` matrices (NaN above the diagonal) and their metrics."""

    accuracy: torch.Tensor
    til_accuracy: torch.Tensor
    test_counts: tuple[int, ...]
    metrics: dict[str, float]
    fit_stats: tuple[dict[str, Any], ...]
    stream_hash: str
    wall_time_s: float
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def evaluate_seen(method: ContinualMethod, stream: ClassIncrementalStream, t: int,
                  device: torch.device, cil: AccuracyMatrix, til: AccuracyMatrix,
                  batch_size: int = 512) -> None:
    """Fill row ``t`` of both matrices: test data of experiences ``0..t``."""
    num_seen = stream.offsets[t + 1]
    for j in range(t + 1):
        exp = stream.experience(j)
        x, y = stream.inputs(stream.test, exp.test_indices)
        lo, hi = stream.offsets[j], stream.offsets[j + 1]
        for start in range(0, len(y), batch_size):
            idx = torch.arange(start, min(len(y), start + batch_size))
            yb = y[idx]
            scores = method.predict(x[idx], device)
            if tuple(scores.shape) != (len(idx), num_seen):
                raise RuntimeError(f"{method.name}.predict returned scores of shape "
                                   f"{tuple(scores.shape)}, expected {(len(idx), num_seen)}")
            cil.update(t, j, (scores.argmax(1) == yb).sum(), len(idx))
            til.update(t, j, (scores[:, lo:hi].argmax(1) + lo == yb).sum(), len(idx))


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_checkpoint(run_dir: str | Path) -> dict[str, Any] | None:
    """The checkpoint in ``run_dir``, or ``None`` when there is none."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise UserError(f"cannot read {path} ({exc}); delete it or use another --run-dir") from exc
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a continual run checkpoint; use another --run-dir")
    return blob


def _write_checkpoint(run_dir: Path, blob: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / (CHECKPOINT + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, run_dir / CHECKPOINT)


def _set(params: Any) -> Any:
    """Parameters without the unset (``None``) ones: a checkpoint written before a method
    gained an option (off = ``None``) still resumes, as a row's identity also drops them."""
    return {k: v for k, v in params.items() if v is not None} if isinstance(params, dict) \
        else params


def _check_identity(saved: dict[str, Any], now: dict[str, Any], run_dir: Path) -> None:
    saved, now = {**saved, "params": _set(saved.get("params"))}, \
        {**now, "params": _set(now.get("params"))}
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        shown = ", ".join(f"{k}={saved.get(k)!r}" for k in diff[:4])
        raise UserError(f"the run in {run_dir} was started with {shown}; resume it with the "
                        "same options, or start a new run with another --run-dir")


def run_stream(method: ContinualMethod, stream: ClassIncrementalStream, device: torch.device,
               *, seed: int = 0, run_dir: str | Path | None = None, resume: bool = False,
               progress: bool = True, eval_batch_size: int = 512,
               identity: dict[str, Any] | None = None,
               on_experience_end: Callable[[int, torch.Tensor], None] | None = None,
               open_world: Callable[[ContinualMethod, int], dict[str, Any] | None] | None = None,
               ) -> ContinualResult:
    """Train ``method`` on every experience of ``stream`` and evaluate (see module doc).

    ``identity``: what must match for a resume (the method's name and parameters, the
    stream hash and the seed are always included). ``on_experience_end(t, A)`` is called
    after the checkpoint of experience ``t`` with the class-incremental matrix so far.
    ``open_world(method, t)`` (optional) runs after the evaluation of experience ``t``; its
    results (e.g. OOD metrics of unseen classes) go to ``result.extra["open_world"]``.
    """
    n = len(stream)
    ident = {"method": method.name, "params": method.get_params(), "stream": stream.hash,
             "seed": int(seed), **(identity or {})}
    cil, til = AccuracyMatrix(n), AccuracyMatrix(n)
    fit_stats: list[dict[str, Any]] = []
    open_rows: list[dict[str, Any] | None] = []
    start_t, elapsed = 0, 0.0
    folder = Path(run_dir) if run_dir is not None else None
    if resume:
        if folder is None:
            raise UserError("resuming needs the run's folder; pass --run-dir")
        blob = read_checkpoint(folder)
        if blob is None:
            raise UserError(f"no checkpoint in {folder} to resume; run without --resume first")
        _check_identity(blob["identity"], ident, folder)
        method.load_state_dict(blob["method_state"])
        cil, til = AccuracyMatrix.from_state(blob["cil"]), AccuracyMatrix.from_state(blob["til"])
        fit_stats = list(blob["fit_stats"])
        open_rows = list(blob.get("open_world", []))
        start_t, elapsed = int(blob["completed"]), float(blob["wall_time_s"])
        _set_rng_state(blob["rng"])
    for t in range(start_t, n):
        t0 = time.perf_counter()
        exp = stream.experience(t)
        info = ExperienceInfo(t, exp.classes, n, experience_seed(seed, t))
        torch.manual_seed(info.seed)
        x, y = stream.inputs(stream.train, exp.train_indices)
        stats = method.train_experience(x, y, info, device, progress=progress)
        evaluate_seen(method, stream, t, device, cil, til, eval_batch_size)
        if open_world is not None:
            open_rows.append(open_world(method, t))
        fit_stats.append(dict(stats))
        elapsed += time.perf_counter() - t0
        if folder is not None:
            _write_checkpoint(folder, {
                "format": CHECKPOINT_FORMAT, "identity": ident, "completed": t + 1,
                "experiences": n, "method_state": method.state_dict(),
                "cil": cil.state_dict(), "til": til.state_dict(), "fit_stats": fit_stats,
                "rng": _rng_state(), "wall_time_s": elapsed, "open_world": open_rows})
        if on_experience_end is not None:
            on_experience_end(t, cil.compute())
    acc, til_acc = cil.compute(), til.compute()
    counts = tuple(len(e.test_indices) for e in stream)
    return ContinualResult(acc, til_acc, counts, summarize(acc, til_acc, counts),
                           tuple(fit_stats), stream.hash, elapsed, start_t,
                           {"open_world": open_rows} if open_world is not None else {})


MIN_STEPS_PER_EPOCH = 4


def few_steps_warning(method: ContinualMethod, stream: ClassIncrementalStream) -> str | None:
    """A warning when the smallest experience gives a batch-trained method fewer than
    :data:`MIN_STEPS_PER_EPOCH` SGD steps per epoch (e.g. PRD's batch 128 on an Omniglot
    experience of 80 images: one step per epoch, and the method stays near chance)."""
    batch = method.get_params().get("batch_size")
    if not isinstance(batch, int) or batch < 1 or not len(stream):
        return None
    smallest = min(len(e.train_indices) for e in stream)
    steps = -(-smallest // batch)
    if steps >= MIN_STEPS_PER_EPOCH:
        return None
    fit = max(1, smallest // MIN_STEPS_PER_EPOCH)
    return (f"{method.name}: the smallest experience has {smallest} training samples, so "
            f"batch_size={batch} gives {steps} SGD step(s) per epoch; consider "
            f"-p batch_size={fit} or more --epochs")
