"""Keep the training step's large arrays off fresh pages: glibc's malloc thresholds, set once at import.

A training step allocates and frees the same large arrays every step (a recurrent layer's states and
gates, the GEMMs' outputs, the gradients: 0.5-10 MB each). glibc serves every block over its mmap
threshold with a fresh ``mmap`` and returns it with ``munmap``, and trims the heap's free top back to
the OS; its dynamic threshold only partly follows. Each step then pays a minor page fault (a kernel
entry and a zeroed page) for every 4 KiB it touches: 1,300-1,700 faults per step of the char LM
(Embedding -> LSTM 256 -> Linear, B32 T64), 4-7 ms of its 22-44 ms on an Intel Xeon, 1 and 2 threads.
PyTorch's CPU tuning guide answers the same cost with jemalloc or tcmalloc preloaded; glibc has the
knobs itself: a fixed mmap threshold of 64 MiB (blocks below it come from the heap and are reused)
and a trim threshold of 256 MiB (at most that much free heap top is kept, not returned). Measured
there: 0.2 faults per step and the char LM step 43.7 -> 36.7 ms (1 thread), 26.3 -> 22.0 ms (2).

The cost is memory a process keeps after freeing it: up to the trim threshold at the heap's top.
``TINYGRAD_RNN_MALLOC=default`` (read at import) leaves glibc's own settings; non-glibc C libraries are
left alone.

    >>> from tinygrad_rnn.backend import memory
    >>> memory.MMAP_THRESHOLD <= memory.TRIM_THRESHOLD
    True
"""
from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "TUNED", "tune_malloc"]

MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
ENV = "TINYGRAD_RNN_MALLOC"

TUNED = False  # whether tune_malloc set the thresholds in this process


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds (see the module's docstring) unless ``TINYGRAD_RNN_MALLOC=default``
    or the C library is not glibc. Returns whether they were set; a bad value of the variable is a ValueError."""
    global TUNED
    choice = os.environ.get(ENV, "tuned").strip().lower() or "tuned"
    if choice not in ("tuned", "default"):
        raise ValueError(f"{ENV} must be 'tuned' or 'default', got {choice!r}")
    if choice == "default" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return TUNED
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - a glibc without mallopt
        return TUNED
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # the mmap threshold first: setting the trim threshold alone would also end glibc's dynamic mmap
    # threshold at its 128 KiB start, and every block above that would be mmapped (measured 4x the faults)
    TUNED = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return TUNED
