"""The CPU backend's own thread pool and thread count.

With oneMKL (run sequential, see blas.py) every GEMM call is one thread and we spread work over
cores ourselves: a GEMM by blocks of rows or columns (``blas.matmul``), a recurrent layer by blocks
of batch rows and row-wise work by ranges (cpu.py), all on one pool whose idle threads block instead
of spinning. With NumPy's OpenBLAS its own threads do the GEMMs (blas.set_num_threads keeps its
count in step with ours).

Handing work to a blocked pool thread costs a wake-up (60-100 us measured on a 2-core VM), more than
a small GEMM takes: split that way a (32, 256) x (256, 1024) product took 158 us against 90 us on one
thread. Kernels whose parts are all native code (``blas.matmul``'s blocks) therefore run through
Numba's ``prange`` on its TBB threading layer where that loads (``native_parallel``): its workers
wait briefly before they sleep, and the same product takes 51-62 us on two threads. Only TBB: it is
the layer Numba documents as both thread-safe and fork-safe (GNU OpenMP's is not fork-safe, the
workqueue layer not thread-safe); TBB comes with oneMKL (the ``mkl`` extra), whose GEMMs these are.
``TINYGRAD_RNN_NATIVE_THREADS=0`` keeps everything on the pool.

    >>> from tinygrad_rnn.backend import threads
    >>> threads.even_bounds(10, 3)
    [0, 3, 6, 10]
"""
from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np

__all__ = ["even_bounds", "get_num_threads", "native_parallel", "run_parallel", "run_ranges", "set_num_threads"]

_THREADS = max(1, os.cpu_count() or 1)
_POOL: Any = None
_POOL_LOCK = threading.Lock()


def set_num_threads(n: int) -> None:
    """How many threads the pool's users split work into (default: one per logical core)."""
    global _THREADS
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_num_threads: need a positive integer, got {n!r}")
    _THREADS = int(n)


def get_num_threads() -> int:
    """The count ``set_num_threads`` set."""
    return _THREADS


def _forget_pool() -> None:
    """In a forked child: the parent's pool threads do not exist there, and an executor that believes
    it has its workers would queue work nobody runs (a hang); the child makes its own on first use."""
    global _POOL, _POOL_LOCK
    _POOL = None
    _POOL_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=max(2, 2 * (os.cpu_count() or 1)),
                                           thread_name_prefix="tinygrad_rnn")
    return _POOL


def even_bounds(n: int, parts: int) -> list[int]:
    """``parts + 1`` edges splitting ``range(n)`` into contiguous parts whose sizes differ by at most one."""
    return [n * i // parts for i in range(parts + 1)]


def run_ranges(fn: Any, n: int, parts: int) -> None:
    """``fn(lo, hi)`` over ``range(n)`` split into ``parts`` even ranges, in parallel when more than one."""
    edges = even_bounds(n, parts)
    if parts <= 1:
        fn(0, n)
    else:
        run_parallel([functools.partial(fn, edges[i], edges[i + 1]) for i in range(parts)])


def run_parallel(tasks: list[Any]) -> None:
    """Run the callables in ``tasks``: the first in this thread, the others on the pool; return when
    all are done, re-raising the first error."""
    futures = [_pool().submit(t) for t in tasks[1:]]
    try:
        if tasks:
            tasks[0]()
    finally:
        errors = []
        for f in futures:
            try:
                f.result()
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)
    if errors:
        raise errors[0]


_NATIVE: list[bool | None] = [None]  # native_parallel's answer, found once per process
_NATIVE_LOCK = threading.Lock()


@numba.njit(cache=True, parallel=True)
def _probe(a):  # pragma: no cover - jit
    """A parallel kernel that does nothing of note: launching it loads Numba's threading layer."""
    for i in numba.prange(a.size):
        a[i] = i


def native_parallel() -> bool:
    """Whether native kernels may split work with ``prange`` (see the module's docstring): Numba's TBB
    threading layer is the one loaded (loaded now, if no parallel kernel has run in this process yet)."""
    if _NATIVE[0] is None:
        with _NATIVE_LOCK:
            if _NATIVE[0] is None:
                _NATIVE[0] = _load_tbb()
    return bool(_NATIVE[0])


def _load_tbb() -> bool:
    choice = os.environ.get("TINYGRAD_RNN_NATIVE_THREADS", "1").strip() or "1"
    if choice not in ("0", "1"):
        raise ValueError(f"TINYGRAD_RNN_NATIVE_THREADS must be '0' or '1', got {choice!r}")
    if choice == "0":
        return False
    try:
        return numba.threading_layer() == "tbb"  # a layer is loaded already (the user's parallel code)
    except ValueError:  # none loaded yet: ask for TBB only, and leave Numba's setting as it was
        pass
    before = numba.config.THREADING_LAYER
    numba.config.THREADING_LAYER = "tbb"
    try:
        _probe(np.zeros(2))
    except Exception:  # noqa: BLE001 - TBB missing or unloadable: the pool does the splitting
        return False
    finally:
        numba.config.THREADING_LAYER = before
    try:
        return numba.threading_layer() == "tbb"
    except ValueError:  # pragma: no cover - launched, yet no layer reported
        return False
