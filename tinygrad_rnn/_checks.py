"""Argument checks, one wording per kind of mistake: TypeError for the wrong type, ValueError for the wrong value.

Every message names the argument and what it must be, then what it got:

    >>> finite_number("lr", float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: lr must be a finite number, got nan

A bool is never a number here (``True`` as a learning rate is a mistake, not 1.0). Each check returns
the value as a plain Python ``int``/``float``, so NumPy scalars go no further than the check.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

__all__ = ["finite_number", "nonneg_number", "positive_number", "probability", "unit_interval", "integer", "positive_int",
           "nonneg_int", "int_at_least", "one_of"]

_REALS = (int, float, np.integer, np.floating)
_INTS = (int, np.integer)


def _type_error(name: str, what: str, v: Any) -> TypeError:
    return TypeError(f"{name} must be {what}, got {type(v).__name__} {v!r}")


def _value_error(name: str, what: str, v: Any) -> ValueError:
    return ValueError(f"{name} must be {what}, got {v!r}")


def _real(name: str, v: Any, what: str, ok: Any) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, _REALS):
        raise _type_error(name, what, v)
    x = float(v)
    if not (math.isfinite(x) and ok(x)):
        raise _value_error(name, what, v)
    return x


def finite_number(name: str, v: Any) -> float:
    """A finite, non-bool real number (int or float, NumPy's too)."""
    return _real(name, v, "a finite number", lambda x: True)


def nonneg_number(name: str, v: Any) -> float:
    """A finite number >= 0 (learning rates, weight decay, eps)."""
    return _real(name, v, "a finite number >= 0", lambda x: x >= 0)


def positive_number(name: str, v: Any) -> float:
    """A finite number > 0 (bucket sizes, clip norms)."""
    return _real(name, v, "a finite number > 0", lambda x: x > 0)


def probability(name: str, v: Any) -> float:
    """A number in [0, 1) (dropout, Adam's betas)."""
    return _real(name, v, "a number in [0, 1)", lambda x: 0 <= x < 1)


def unit_interval(name: str, v: Any) -> float:
    """A number in [0, 1], both ends included (a dropout ``p``: 1 zeroes everything, as in PyTorch)."""
    return _real(name, v, "a number in [0, 1]", lambda x: 0 <= x <= 1)


def _int(name: str, v: Any, what: str, low: int | None) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, _INTS):
        raise _type_error(name, what, v)
    if low is not None and v < low:
        raise _value_error(name, what, v)
    return int(v)


def integer(name: str, v: Any) -> int:
    """A non-bool integer (Python's or NumPy's)."""
    return _int(name, v, "an integer", None)


def positive_int(name: str, v: Any) -> int:
    """An integer >= 1."""
    return _int(name, v, "a positive integer", 1)


def nonneg_int(name: str, v: Any) -> int:
    """An integer >= 0."""
    return _int(name, v, "an integer >= 0", 0)


def int_at_least(name: str, v: Any, low: int) -> int:
    """An integer >= ``low``."""
    return _int(name, v, f"an integer >= {low}", low)


def one_of(name: str, v: Any, choices: Iterable[Any]) -> Any:
    """One of ``choices`` (a ValueError whatever the type: the choices say what is allowed)."""
    options = tuple(choices)
    try:
        found = v in options
    except TypeError:  # an unhashable value against a set/dict of choices
        found = False
    if not found:
        raise _value_error(name, f"one of {', '.join(map(repr, options))}", v)
    return v
