"""Anomaly detection, PyTorch's ``torch.autograd`` switches: find the op that made a NaN.

While anomaly mode is on, every recorded node keeps the stack of the user code that created it
(the library's own frames trimmed off), and a backward pass that produces a NaN or an infinity
raises ``RuntimeError`` naming the op (``Sqrt``, ``FusedRecurrence[lstm]``, ...), which of its
gradients it was, and the file:line where the op was created. ``check_forward=True`` also checks
every op's outputs in the forward pass (generic in ``Function.apply``, so fused layers are covered).
Off, it costs one flag check per op.

    >>> import tinygrad_rnn as tr
    >>> x = tr.tensor([0.0], requires_grad=True)
    >>> with tr.autograd.detect_anomaly():
    ...     try:
    ...         x.sqrt().sum().backward()
    ...     except RuntimeError as e:
    ...         print(str(e).split(" (")[0])
    Function 'Sqrt' returned inf values in its 0th output
"""
from __future__ import annotations

import contextlib
from typing import Any

from .tensor import _anomaly

__all__ = ["detect_anomaly", "set_detect_anomaly", "is_anomaly_enabled", "is_anomaly_check_nan_enabled"]


def is_anomaly_enabled() -> bool:
    """Whether anomaly mode is on (``tr.autograd.is_anomaly_enabled()``)."""
    return _anomaly.enabled


def is_anomaly_check_nan_enabled() -> bool:
    """Whether anomaly mode checks gradients for NaN/Inf (on by default while it is enabled)."""
    return _anomaly.enabled and _anomaly.check_nan


class _AnomalyState(contextlib.ContextDecorator):
    """Sets anomaly mode for a ``with`` block (or a decorated function) and restores it after."""

    def __init__(self, mode: bool, check_nan: bool = True, check_forward: bool = False):
        self.mode, self.check_nan, self.check_forward = bool(mode), bool(check_nan), bool(check_forward)
        self.prev = (_anomaly.enabled, _anomaly.check_nan, _anomaly.check_forward)
        _set(self.mode, self.check_nan, self.check_forward)  # PyTorch's set_detect_anomaly acts at once

    def __enter__(self) -> _AnomalyState:
        return self

    def __exit__(self, *exc: Any) -> bool:
        _set(*self.prev)
        return False


def _set(mode: bool, check_nan: bool, check_forward: bool) -> None:
    _anomaly.check_nan = check_nan
    _anomaly.check_forward = check_forward
    _anomaly.enabled = mode


class detect_anomaly(contextlib.ContextDecorator):  # noqa: N801 - PyTorch's name
    """Context manager / decorator that turns anomaly mode on (and restores the old state after).

    ``check_nan`` (default True): a backward producing NaN/Inf raises, naming the op and where it
    was created. ``check_forward`` (default False): each op's outputs are checked in the forward
    pass too. Global (all threads), as in PyTorch; slow: use it to debug, not to train.

        >>> with tr.autograd.detect_anomaly(): loss.backward()  # doctest: +SKIP
    """

    def __init__(self, check_nan: bool = True, check_forward: bool = False):
        self.check_nan, self.check_forward = bool(check_nan), bool(check_forward)

    def _recreate_cm(self) -> detect_anomaly:
        return type(self)(self.check_nan, self.check_forward)

    def __enter__(self) -> detect_anomaly:
        self.prev = (_anomaly.enabled, _anomaly.check_nan, _anomaly.check_forward)
        _set(True, self.check_nan, self.check_forward)
        return self

    def __exit__(self, *exc: Any) -> bool:
        _set(*self.prev)
        return False


def set_detect_anomaly(mode: bool, check_nan: bool = True, check_forward: bool = False) -> _AnomalyState:
    """Turn anomaly mode on or off globally (``tr.autograd.set_detect_anomaly(True)``); also usable
    as a context manager, which restores the previous state on exit (as in PyTorch)."""
    if not isinstance(mode, bool):
        raise TypeError(f"set_detect_anomaly: mode must be a bool, got {type(mode).__name__}")
    return _AnomalyState(mode, check_nan, check_forward)
