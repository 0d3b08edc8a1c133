"""Progress for training loops (loss, accuracy, ETA): a rich bar on a terminal, and a plain
line every tenth of the run otherwise (logs, CI)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


@contextmanager
def training_bar(total: int, description: str, enabled: bool = True
                 ) -> Iterator[Callable[..., None]]:
    """Yields ``advance(**stats)``: one step forward, stats shown next to the bar."""
    if not enabled:
        yield lambda **stats: None
        return
    if not console.is_terminal:
        yield _plain_lines(total, description)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"),
        TimeRemainingColumn(), console=console, transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, stats="")

        def advance(**stats: float) -> None:
            text = " ".join(f"{k} {v:.4f}" for k, v in stats.items())
            progress.update(task, advance=1, stats=text)

        yield advance


def _plain_lines(total: int, description: str) -> Callable[..., None]:
    start, done = time.perf_counter(), 0
    every = max(1, total // 10)

    def advance(**stats: float) -> None:
        nonlocal done
        done += 1
        if done % every == 0 or done == total:
            elapsed = time.perf_counter() - start
            eta = elapsed / done * (total - done)
            text = " ".join(f"{k} {v:.4f}" for k, v in stats.items())
            console.print(f"{description} {done}/{total} {text} elapsed {elapsed:.0f}s "
                          f"eta {eta:.0f}s", highlight=False)

    return advance
