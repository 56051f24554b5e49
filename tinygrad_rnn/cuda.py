"""``tr.cuda``: is a CUDA GPU usable through CuPy here?

    >>> import tinygrad_rnn as tr; isinstance(tr.cuda.is_available(), bool)
    True
"""
from __future__ import annotations

from .backend.cuda import cuda_unavailable_reason

__all__ = ["is_available", "unavailable_reason"]


def is_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return cuda_unavailable_reason() is None


def unavailable_reason() -> str | None:
    """Why ``is_available()`` is False (None when it is True)."""
    return cuda_unavailable_reason()
