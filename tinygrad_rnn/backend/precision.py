"""The GEMM precision in force on this thread: float32 products, or bfloat16 products with float32
accumulation while ``tr.autocast("cpu", dtype=tr.bfloat16)`` is active (amp.py sets it; bf16.py
multiplies). Per thread, as PyTorch's autocast state is. The Functions whose forward multiplies
(Linear, MatMul, the fused recurrent layers and cells) record it and run their backward under it,
so a ``backward()`` called after the ``with`` block multiplies as the forward did."""
from __future__ import annotations

import threading
from typing import Any

__all__ = ["AUTOCAST_DEVICES", "bf16_active", "check_device", "using"]

# the device types whose backend multiplies in bfloat16 under autocast (the CPU backend: bf16.py)
AUTOCAST_DEVICES = ("cpu",)


class _State(threading.local):
    bf16 = False


_state = _State()


def bf16_active() -> bool:
    return _state.bf16


def check_device(device_type: Any, what: str = "autocast") -> str:
    """``device_type`` if autocast exists for it; TypeError / ValueError naming it otherwise."""
    if not isinstance(device_type, str):
        raise TypeError(f"{what}: device_type must be a string such as 'cpu', got {type(device_type).__name__}")
    if device_type not in AUTOCAST_DEVICES:
        raise ValueError(f"{what}: device_type {device_type!r} is not supported; bfloat16 products exist for the "
                         f"CPU backend only (device_type='cpu')")
    return device_type


class using:
    """``with using(flag):`` bfloat16 products on (True) or off (False) inside the block, restored after."""

    __slots__ = ("flag", "prev")

    def __init__(self, flag: bool) -> None:
        self.flag = bool(flag)

    def __enter__(self) -> using:
        self.prev = _state.bf16
        _state.bf16 = self.flag
        return self

    def __exit__(self, *exc: Any) -> bool:
        _state.bf16 = self.prev
        return False
