"""Automatic mixed precision on the CPU: ``tr.autocast("cpu", dtype=tr.bfloat16)``, PyTorch's name and use.

Inside the block the float32 matrix products of ``nn.Linear`` / ``F.linear``, ``matmul`` / ``@`` with a
2-D right operand, and the fused ``nn.LSTM`` / ``GRU`` / ``RNN`` layers and cells (input projection,
every step's recurrent product, and in backward the state gradient's product and the weight and input
gradients) multiply bfloat16-rounded operands with float32 accumulation -- on oneMKL's AMX / AVX512_BF16
kernels where the CPU has them (backend/bf16.py). A ``backward()`` run after the block multiplies as its
forward did. Everything else stays float32: parameters (the master weights), gradients, the optimizer,
the gate nonlinearities, reductions, losses.

Differences from PyTorch, on purpose: outputs stay float32 tensors (PyTorch's autocast returns bfloat16
ones; here no tensor holds bfloat16, so nothing downstream changes dtype); only ``device_type="cpu"``
and ``dtype=tr.bfloat16`` are accepted; a compiled custom cell (``tr.scan(..., compile=True)``,
``nn.compile_cell``) runs float32 inside the block; batched (3-D and up) right operands of ``matmul``
stay float32.

    >>> import tinygrad_rnn as tr
    >>> lin = tr.nn.Linear(4, 3, seed=0)
    >>> with tr.autocast("cpu", dtype=tr.bfloat16):
    ...     y = lin(tr.ones(2, 4))
    >>> y.dtype, tr.is_autocast_enabled("cpu")
    (dtype('float32'), False)
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from .backend import precision
from .dtypes import bfloat16

__all__ = ["autocast", "is_autocast_enabled", "get_autocast_dtype", "native_bf16"]


class autocast:
    """``with tr.autocast("cpu", dtype=tr.bfloat16):`` (or as a decorator): bfloat16 products with float32
    accumulation for the matrix products of Linear, matmul and the recurrent layers inside the block (see
    the module docstring). ``enabled=False`` turns it off inside the block (also inside an outer one)."""

    def __init__(self, device_type: str = "cpu", dtype: Any = None, enabled: bool = True,
                 cache_enabled: bool | None = None) -> None:
        precision.check_device(device_type)
        if dtype is not None and dtype is not bfloat16:
            raise ValueError(f"autocast: CPU autocast supports dtype=tr.bfloat16 only, got {dtype!r}")
        if not isinstance(enabled, bool):
            raise TypeError(f"autocast: enabled must be a bool, got {type(enabled).__name__}")
        self.device_type, self.fast_dtype, self.enabled = device_type, bfloat16, enabled
        self._stack: list[precision.using] = []

    def __enter__(self) -> autocast:
        sw = precision.using(self.enabled)
        sw.__enter__()
        self._stack.append(sw)  # a stack: the same object may be entered again (re-entrant, as a decorator)
        return self

    def __exit__(self, *exc: Any) -> bool:
        return self._stack.pop().__exit__(*exc)

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with autocast(self.device_type, self.fast_dtype, self.enabled):
                return fn(*args, **kwargs)
        return wrapper


def is_autocast_enabled(device_type: str = "cpu") -> bool:
    """Whether autocast is on for ``device_type`` on this thread (only ``"cpu"`` can be)."""
    precision.check_device(device_type)
    return precision.bf16_active()


def get_autocast_dtype(device_type: str = "cpu") -> Any:
    """The dtype autocast multiplies in for ``device_type``: ``tr.bfloat16``."""
    precision.check_device(device_type)
    return bfloat16


def native_bf16() -> bool:
    """Whether autocast's bfloat16 products run on oneMKL's bf16 GEMM (the ``mkl`` extra; AMX or AVX512_BF16
    make it fast). False: the same numbers come from float32 GEMMs of rounded operands, slower than float32."""
    from .backend import bf16

    return bf16.NATIVE
