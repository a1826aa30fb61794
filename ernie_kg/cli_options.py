"""Typer callbacks for the CLI's numeric options with an open bound (which ``min=`` /
``max=`` cannot say), through :func:`ernie_kg.checks.check_number`: a bad value stops
the command with Typer's usage error naming the option."""

from __future__ import annotations

import typer

from ernie_kg.checks import check_number

__all__ = ["positive", "positive_or_none", "probability_or_none"]


def _checked(value: float | None, least: float, open_least: bool, most: float | None,
             open_most: bool = False) -> float | None:
    if value is None:
        return None
    try:
        check_number("it", value, least, open_least, most)
        if open_most and most is not None and value >= most:
            raise ValueError(f"it must be < {most:g}, not {value!r}")
    except ValueError as problem:
        raise typer.BadParameter(str(problem)) from None
    return value


def positive(value: float) -> float:
    """A rate, epoch count or duration: greater than 0."""
    return _checked(value, 0, True, None)


def positive_or_none(value: float | None) -> float | None:
    """:func:`positive`, or unset."""
    return _checked(value, 0, True, None)


def probability_or_none(value: float | None) -> float | None:
    """A dropout in [0, 1), or unset."""
    return _checked(value, 0, False, 1, open_most=True)
