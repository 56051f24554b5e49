"""The dtypes a tensor may hold (``tr.float32``, ...) and PyTorch's rules for picking one."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["float32", "float64", "int32", "int64", "bool_", "bfloat16"]

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
bool_ = np.dtype(np.bool_)
half = float16 = np.dtype(np.float16)  # PyTorch's name; refused with a clear error by every factory


class _BFloat16:
    """``tr.bfloat16``: PyTorch's name, for ``tr.autocast("cpu", dtype=tr.bfloat16)`` (bfloat16 products,
    float32 accumulation). No tensor holds bfloat16: every factory refuses it with a TypeError."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "tinygrad_rnn.bfloat16"

    def __reduce__(self) -> str:
        return "bfloat16"


bfloat16 = _BFloat16()
_FLOATS = (float32, float64)
_ALLOWED = (float32, float64, int32, int64, bool_)


def _as_dtype(dtype: Any) -> np.dtype | None:
    if dtype is None:
        return None
    if dtype is bfloat16:
        raise TypeError("bfloat16 tensors are not supported: tensors are float32 or float64; for bfloat16 "
                        "products use tr.autocast('cpu', dtype=tr.bfloat16)")
    # the aliases only for non-dtypes: np.dtype("float64") == float, so it would map to float32
    if not isinstance(dtype, np.dtype):
        if dtype in ("float", float):
            return float32
        if dtype in ("double",):
            return float64
        if dtype in ("long", int):
            return int64
    try:
        d = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"unknown dtype {dtype!r}") from e
    if d == np.float16:
        raise TypeError("float16 (tr.half) is not supported: tensors are float32 or float64 (use tr.float32)")
    if d not in _ALLOWED:
        raise TypeError(f"unsupported dtype {d}: use float32, float64, int32, int64 or bool")
    return d


def _default_dtype_for(data: Any) -> np.dtype | None:
    """PyTorch's rule: Python floats become float32, Python ints int64; arrays keep theirs."""
    if isinstance(data, np.generic):  # NumPy scalars keep their dtype too (np.float64 is a float subclass)
        return None
    if isinstance(data, (bool, np.bool_)):
        return bool_
    if isinstance(data, (int, np.integer)) and not isinstance(data, np.ndarray):
        return int64
    if isinstance(data, float):
        return float32
    if isinstance(data, (list, tuple)):
        arr = np.asarray(data)
        if arr.dtype.kind == "f":
            return float32
        if arr.dtype.kind in "iu":
            return int64
        if arr.dtype.kind == "b":
            return bool_
        if arr.dtype == object and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                       for v in arr.reshape(-1).tolist()):
            return int64  # ints beyond 64 bits: the range check in Tensor names the value
        raise TypeError(f"cannot make a tensor from a sequence of {arr.dtype}")
    return None

