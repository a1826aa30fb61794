"""Typer callbacks for the CLI's options: numbers with an open bound (which ``min=`` /
``max=`` cannot say), through :func:`ernie_kg.checks.check_number`; names from a fixed
set; spaCy languages. A bad value stops the command before any work, with Typer's usage
error naming the option."""

from __future__ import annotations

from collections.abc import Callable

import typer

from ernie_kg.checks import check_number

__all__ = ["gate_rate_option", "one_of", "positive", "probability_or_none", "spacy_language"]


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


def probability_or_none(value: float | None) -> float | None:
    """A dropout in [0, 1), or unset."""
    return _checked(value, 0, False, 1, open_most=True)


def gate_rate_option(value: str) -> object:
    """The knowledge gates' rate (:func:`ernie_kg.training.gate_rate.parse_gate_rate`)."""
    from ernie_kg.training.gate_rate import parse_gate_rate  # torch: only when called

    try:
        return parse_gate_rate(value)
    except ValueError as problem:
        raise typer.BadParameter(str(problem)) from None


def one_of(*choices: str) -> Callable[[str | None], str | None]:
    """A callback that accepts only ``choices`` (or an unset option)."""
    def check(value: str | None) -> str | None:
        if value is not None and value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of: {', '.join(choices)}")
        return value
    return check


def spacy_language(value: str) -> str:
    """A language code spaCy has (``en``, ``zh``, ``de``, ...)."""
    import spacy

    try:
        spacy.util.get_lang_class(value)
    except ImportError:
        raise typer.BadParameter(f"{value!r} is not a spaCy language code (such as en, "
                                 "zh, de, fr)") from None
    return value
