"""Errors that reach the user.

Every error caused by bad input derives from :class:`UserError`; its message
names the problem and the fix in one line. The CLI prints it and exits with
code 2, before anything is written to the leaderboard.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: a one-line message that names the problem and how to fix it."""


class DataError(UserError):
    """A dataset that cannot be found, read or downloaded."""


class SpecError(UserError):
    """An episode or stream specification that the data cannot satisfy."""


class RegistryError(UserError):
    """An unknown dataset, method, metric or backbone name."""


def unknown_name(kind: str, name: str, known: list[str]) -> RegistryError:
    """The error for a name that is not in a registry, listing the valid ones."""
    return RegistryError(
        f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(known))}"
    )
