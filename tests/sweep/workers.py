"""Top-level functions the executor tests run in workers (importable by spawned processes).

Nothing here imports torch at module level: a spawned worker pays for torch only in the
one function that needs it.
"""

from __future__ import annotations

import os
import time

KILL = 2  # the item square_or_die kills its own process on


def square(x: int) -> int:
    return x * x


def square_or_raise(x: int) -> int:
    """x * x, except item 3, which raises ValueError."""
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x * x


def nap(seconds: float) -> float:
    """Sleep, then return how long: items finish in a known order."""
    time.sleep(seconds)
    return seconds


def square_or_die(x: int) -> int:
    """x * x, except item KILL, whose worker kills itself with signal 9 (like the OOM killer)."""
    if x == KILL:
        os.kill(os.getpid(), 9)
    time.sleep(0.2)  # keep a few items in flight together when the worker dies
    return x * x


def worker_info(x: int) -> tuple[int, int, str | None, int]:
    """(x, pid, OMP_NUM_THREADS, torch's intra-op threads) as seen by the worker."""
    import torch

    time.sleep(0.5)  # long enough that two workers share the items
    return x, os.getpid(), os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
