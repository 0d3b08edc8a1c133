"""Rich progress bars for training loops (loss, accuracy, ETA)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

console = Console(stderr=True)


@contextmanager
def training_bar(total: int, description: str, enabled: bool = True
                 ) -> Iterator[Callable[..., None]]:
    """Yields ``advance(**stats)``: one step forward, stats shown next to the bar."""
    if not enabled:
        yield lambda **stats: None
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
