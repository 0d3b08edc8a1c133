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


def check_input_shape(method: str, trained: tuple[int, ...] | list[int] | None,
                      given: tuple[int, ...] | list[int]) -> None:
    """Refuse inputs of another shape than the ones an encoder was built or trained for.

    A method never swaps a fresh encoder in behind the user's back: when its encoder
    exists for ``trained`` and the data are ``given``, the run stops with one line that
    names both shapes and the fix. ``trained=None`` (no encoder yet) accepts anything.
    """
    if trained is None or tuple(trained) == tuple(given):
        return
    raise ShapeError(
        f"{method}: the encoder was built for inputs of shape {list(trained)} but the data "
        f"have shape {list(given)}; load the data with the options the encoder was trained "
        "with (e.g. the same -o image_size=...), or train a new model on data of this shape")


class ShapeError(UserError):
    """Data whose shape differs from the one a trained encoder expects."""
