"""The one unbroadcast step every broadcasting op's backward uses."""
from __future__ import annotations

from typing import Any


def sum_to_shape(xp: Any, g: Any, shape: tuple[int, ...]) -> Any:
    """Reduce a broadcast gradient ``g`` back to ``shape`` (the one unbroadcast step of every op)."""
    if g.shape == shape or tuple(g.shape) == tuple(shape):  # the first test is the common case, without tuples
        return g
    lead = g.ndim - len(shape)
    if lead > 0:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)
