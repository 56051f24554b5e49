"""BLAS GEMM callable from inside Numba kernels, and the CPU backend's matrix product.

The recurrent layers' time loop runs in one Numba kernel per layer and direction; each step's
recurrent product goes to BLAS called directly from the compiled loop rather than through one
Python-level ``np.matmul`` and one kernel dispatch per step.

How: we look up an ILP64 CBLAS ``sgemm``/``dgemm`` in an already loaded library and register its
address under a name of our own with LLVM (``llvmlite.binding.add_symbol``). The kernels declare
that name as an external function, so their machine code references it by name and stays
cacheable (``cache=True``): each process binds the name again before any kernel loads, and a
different provider needs no recompilation.

Providers, chosen once at import by ``TINYGRAD_RNN_BLAS``:

- ``auto`` (default): ``mkl`` when Intel oneMKL's runtime library is installed (the optional
  ``mkl`` extra: ``pip install tinygrad_rnn[mkl]``), else ``numpy``.
- ``mkl``: oneMKL's ``libmkl_rt`` (``cblas_sgemm_64``). Its small-batch GEMMs -- the recurrent
  product of every step -- run 1.3-1.7x faster than OpenBLAS's on the machines measured
  (bench/results/). The CPU backend then sends its other float GEMMs (Linear, matmul, the
  recurrent layers' projections and weight gradients) to MKL too (``matmul`` below), so one
  thread pool does the GEMMs of a training step.
- ``numpy``: the BLAS NumPy itself uses (OpenBLAS in NumPy's wheels, ``scipy_cblas_sgemm64_``).
- ``none``: never call BLAS from kernels: layers above the small-layer size run the time loop per
  step in Python (recurrence.py), one NumPy matmul and one pointwise kernel per step.

When no ILP64 CBLAS is found (a NumPy built against another BLAS), ``PROVIDER`` is None, the
per-step fallback is used, and the names are bound to a stub that raises if ever called.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any

import llvmlite.binding as llb
import numba
import numpy as np
from numba import types
from numba.extending import overload

__all__ = ["PROVIDER", "available", "gemm", "gemm_f", "matmul"]

_SGEMM = "tinygrad_rnn_cblas_sgemm64"
_DGEMM = "tinygrad_rnn_cblas_dgemm64"
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112

# cblas_?gemm(order, transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) with 64-bit
# integers (ILP64); the enums stay C ints
_i32, _i64, _p = types.int32, types.int64, types.intp
_sgemm = types.ExternalFunction(_SGEMM, types.void(_i32, _i32, _i32, _i64, _i64, _i64, types.float32, _p, _i64,
                                                   _p, _i64, types.float32, _p, _i64))
_dgemm = types.ExternalFunction(_DGEMM, types.void(_i32, _i32, _i32, _i64, _i64, _i64, types.float64, _p, _i64,
                                                   _p, _i64, types.float64, _p, _i64))
_CTYPES_ARGS = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64]

# candidate exported names of an ILP64 CBLAS, per precision, most specific first
_CANDIDATES = {
    "s": ("scipy_cblas_sgemm64_", "cblas_sgemm64_", "cblas_sgemm_64"),
    "d": ("scipy_cblas_dgemm64_", "cblas_dgemm64_", "cblas_dgemm_64"),
}


def _numpy_blas_handle() -> Any:
    """A handle on NumPy's core extension: symbol lookups through it also search the libraries it
    was linked against (its BLAS among them)."""
    try:
        from numpy._core import _multiarray_umath as mu  # NumPy 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core import _multiarray_umath as mu  # type: ignore[no-redef]
    return ctypes.CDLL(mu.__file__)


def _mkl_handle() -> Any:
    """oneMKL's single dynamic library, as the ``mkl`` wheel installs it (``<prefix>/lib``) or as
    the system finds it; None when absent. It loads its own OpenMP runtime (``libiomp5``)."""
    names = ["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so", "libmkl_rt.3.dylib", "libmkl_rt.2.dylib"]
    paths = [os.path.join(sys.prefix, "lib", n) for n in names]
    found = ctypes.util.find_library("mkl_rt")
    for path in [p for p in paths if os.path.exists(p)] + ([found] if found else []):
        try:
            return ctypes.CDLL(path)
        except OSError:  # pragma: no cover - a broken install: fall through to the next candidate
            continue
    return None


def _find(handle: Any, prec: str) -> tuple[str, int] | None:
    for name in _CANDIDATES[prec]:
        try:
            fn = getattr(handle, name)
        except AttributeError:
            continue
        return name, ctypes.cast(fn, ctypes.c_void_p).value
    return None


def _stub_factory(ctype: Any) -> Any:
    proto = ctypes.CFUNCTYPE(None, *_CTYPES_ARGS, ctype, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                             ctypes.c_int64, ctype, ctypes.c_void_p, ctypes.c_int64)

    def stub(*_args: Any) -> None:  # pragma: no cover - only reached if a caller ignores `available()`
        raise RuntimeError("tinygrad_rnn: a kernel called BLAS, but no ILP64 CBLAS was bound (see backend/blas.py)")

    return proto(stub)


_STUBS: list[Any] = []  # keep the ctypes callbacks alive for the life of the process
_MKL: Any = None  # the loaded oneMKL library when it is the provider


def _bind() -> str | None:
    """Register the two symbols; return the provider's name (``"mkl"`` or ``"numpy"``), or None
    when only stubs could be bound."""
    global _MKL
    choice = os.environ.get("TINYGRAD_RNN_BLAS", "auto").strip().lower() or "auto"
    if choice not in ("auto", "mkl", "numpy", "none"):
        raise ValueError(f"TINYGRAD_RNN_BLAS must be 'auto', 'mkl', 'numpy' or 'none', got {choice!r}")
    found = provider = None
    if choice in ("auto", "mkl"):
        mkl = _mkl_handle()
        if mkl is not None:
            s, d = _find(mkl, "s"), _find(mkl, "d")
            if s is not None and d is not None:
                found, provider, _MKL = (s, d), "mkl", mkl
        if found is None and choice == "mkl":
            raise ValueError("TINYGRAD_RNN_BLAS=mkl, but oneMKL's libmkl_rt (with ILP64 cblas_sgemm_64) was not "
                             "found: pip install 'tinygrad_rnn[mkl]', or unset TINYGRAD_RNN_BLAS")
    if found is None and choice in ("auto", "numpy"):
        try:
            handle = _numpy_blas_handle()
            s, d = _find(handle, "s"), _find(handle, "d")
            if s is not None and d is not None:
                found, provider = (s, d), "numpy"
        except OSError:  # pragma: no cover - an unusual NumPy install
            found = None
    if found is None:
        for sym, ct in ((_SGEMM, ctypes.c_float), (_DGEMM, ctypes.c_double)):
            cb = _stub_factory(ct)
            _STUBS.append(cb)
            llb.add_symbol(sym, ctypes.cast(cb, ctypes.c_void_p).value)
        return None
    (_s_name, s_addr), (_d_name, d_addr) = found
    llb.add_symbol(_SGEMM, s_addr)
    llb.add_symbol(_DGEMM, d_addr)
    return provider


PROVIDER: str | None = _bind()


def available() -> bool:
    """True when kernels may call BLAS (a real ILP64 CBLAS is bound)."""
    return PROVIDER is not None


# ---------------------------------------------------------------------------------------------
# the kernel-side call: gemm(a, b, c, trans_a, trans_b, beta) sets c = op(a) @ op(b) + beta * c for
# 2-D C-contiguous float32 or float64 arrays (op(x) = x.T when its flag is set); a no-op on empty c


def gemm(a, b, c, trans_a, trans_b, beta):  # pragma: no cover - dispatched by the overload below
    raise NotImplementedError


@numba.njit(cache=True, inline="always")
def _gemm32(a, b, c, trans_a, trans_b, beta):  # pragma: no cover - jit
    m, n = c.shape[0], c.shape[1]
    k = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return
    _sgemm(_ROW_MAJOR, _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS, m, n, k,
           np.float32(1.0), a.ctypes.data, max(a.shape[1], 1), b.ctypes.data, max(b.shape[1], 1), np.float32(beta),
           c.ctypes.data, max(n, 1))


@numba.njit(cache=True, inline="always")
def _gemm64(a, b, c, trans_a, trans_b, beta):  # pragma: no cover - jit
    m, n = c.shape[0], c.shape[1]
    k = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return
    _dgemm(_ROW_MAJOR, _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS, m, n, k,
           1.0, a.ctypes.data, max(a.shape[1], 1), b.ctypes.data, max(b.shape[1], 1), float(beta),
           c.ctypes.data, max(n, 1))


@overload(gemm, inline="always")
def _gemm_impl(a, b, c, trans_a, trans_b, beta):
    if not all(isinstance(x, types.Array) and x.ndim == 2 and x.layout == "C" for x in (a, b, c)):
        return None
    if a.dtype == b.dtype == c.dtype == types.float32:
        return lambda a, b, c, trans_a, trans_b, beta: _gemm32(a, b, c, trans_a, trans_b, beta)
    if a.dtype == b.dtype == c.dtype == types.float64:
        return lambda a, b, c, trans_a, trans_b, beta: _gemm64(a, b, c, trans_a, trans_b, beta)
    return None


@numba.njit(cache=True, nogil=True)
def gemm_f(a, b, c, trans_a, trans_b, beta):  # pragma: no cover - jit
    """``gemm`` callable from Python."""
    gemm(a, b, c, trans_a, trans_b, beta)


# ---------------------------------------------------------------------------------------------
# the CPU backend's 2-D matrix product

# below this many multiply-adds NumPy's matmul is as fast (and its call is cheaper than ours)
MATMUL_MIN_MACS = 1 << 15


def _operand(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(array, transposed)`` with ``array`` C-contiguous and ``x == array.T if transposed``."""
    if x.flags.c_contiguous:
        return x, False
    if x.flags.f_contiguous:
        return x.T, True
    return np.ascontiguousarray(x), False


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for 2-D arrays. With oneMKL as the provider, float32/float64 products of some size
    go to MKL (transposed views are passed as transposes, not copied); otherwise NumPy's matmul."""
    if (PROVIDER != "mkl" or a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype
            or a.dtype not in (np.float32, np.float64) or a.shape[0] * a.shape[1] * b.shape[1] < MATMUL_MIN_MACS):
        return a @ b
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied")
    a_, ta = _operand(a)
    b_, tb = _operand(b)
    out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    gemm_f(a_, b_, out, ta, tb, 0.0)
    return out
