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

from .tensor import _anomaly, _StateSwitch

__all__ = ["detect_anomaly", "set_detect_anomaly", "is_anomaly_enabled", "is_anomaly_check_nan_enabled"]


def is_anomaly_enabled() -> bool:
    """Whether anomaly mode is on (``tr.autograd.is_anomaly_enabled()``)."""
    return _anomaly.enabled


def is_anomaly_check_nan_enabled() -> bool:
    """Whether anomaly mode checks gradients for NaN/Inf (on by default while it is enabled)."""
    return _anomaly.enabled and _anomaly.check_nan


class _AnomalyState(_StateSwitch):
    """Anomaly mode's three flags, ``(enabled, check_nan, check_forward)``, set for a ``with`` block
    (or a decorated function) and restored after."""

    def _get(self) -> tuple[bool, bool, bool]:
        return _anomaly.enabled, _anomaly.check_nan, _anomaly.check_forward

    def _put(self, value: tuple[bool, bool, bool]) -> None:
        enabled, _anomaly.check_nan, _anomaly.check_forward = value
        _anomaly.enabled = enabled  # last: an op checking the flag then sees the other two already set


class detect_anomaly(_AnomalyState):  # noqa: N801 - PyTorch's name
    """Context manager / decorator that turns anomaly mode on (and restores the old state after).

    ``check_nan`` (default True): a backward producing NaN/Inf raises, naming the op and where it
    was created. ``check_forward`` (default False): each op's outputs are checked in the forward
    pass too. Global (all threads), as in PyTorch; slow: use it to debug, not to train.

        >>> with tr.autograd.detect_anomaly(): loss.backward()  # doctest: +SKIP
    """

    def __init__(self, check_nan: bool = True, check_forward: bool = False):
        self.check_nan, self.check_forward = bool(check_nan), bool(check_forward)
        super().__init__((True, self.check_nan, self.check_forward))


def set_detect_anomaly(mode: bool, check_nan: bool = True, check_forward: bool = False) -> _AnomalyState:
    """Turn anomaly mode on or off globally (``tr.autograd.set_detect_anomaly(True)``); also usable
    as a context manager, which restores the previous state on exit (as in PyTorch)."""
    if not isinstance(mode, bool):
        raise TypeError(f"set_detect_anomaly: mode must be a bool, got {type(mode).__name__}")
    return _AnomalyState((mode, bool(check_nan), bool(check_forward))).apply_now()  # PyTorch's acts at once
