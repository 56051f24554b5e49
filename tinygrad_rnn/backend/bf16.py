"""bfloat16 products on the CPU, for ``tr.autocast("cpu", dtype=tr.bfloat16)`` (amp.py).

Under autocast the float32 GEMMs of ``Linear``, ``matmul`` and the recurrent layers (input projection,
the per-step recurrent product forward and backward, the weight gradients) take their operands rounded
to bfloat16 (round to nearest even; NaN stays NaN, inf stays inf) and accumulate in float32; results,
weights and everything else stay float32. oneMKL's ``cblas_gemm_bf16bf16f32`` multiplies them (AMX or
AVX512_BF16 where the CPU has them, an exact emulation elsewhere). Without oneMKL the same numbers come
from a float32 GEMM of the rounded operands (bf16 x bf16 products are exact in float32), only slower.

Kernels: ``to_bf16`` (the rounding, uint16 bit patterns), ``gemm_bf16_packed`` (callable from other
Numba kernels: the recurrent sequence kernels' products over ``pack_b``'s packed weights), ``matmul`` /
``gemm_into`` (the backend's ``mm`` / ``gemm`` under autocast).
"""
from __future__ import annotations

import ctypes
import threading
from typing import Any

import llvmlite.binding as llb
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from . import blas

__all__ = ["NATIVE", "to_bf16", "to_bf16_operand", "from_bf16", "round_bf16", "pack_b", "thread_ready",
           "gemm_bf16_packed", "matmul", "gemm_into"]

_SYM = "tinygrad_rnn_mkl_gemm_bf16bf16f32_64"
_SYM_COMPUTE = "tinygrad_rnn_mkl_gemm_bf16bf16f32_compute_64"
_i32, _i64, _p = types.int32, types.int64, types.intp
# oneMKL (ILP64): cblas_gemm_bf16bf16f32_64(order, transa, transb, M, N, K, alpha, A (bf16), lda, B (bf16), ldb,
# beta, C (float32), ldc); its _compute_64 form takes B packed once by cblas_gemm_bf16bf16f32_pack_64 (transb =
# CblasPacked), and its transa/transb are MKL_INTs (64-bit here), not C enums
_bgemm = types.ExternalFunction(_SYM, types.void(_i32, _i32, _i32, _i64, _i64, _i64, types.float32, _p, _i64, _p,
                                                 _i64, types.float32, _p, _i64))
_bcompute = types.ExternalFunction(_SYM_COMPUTE, types.void(_i32, _i64, _i64, _i64, _i64, _i64, types.float32, _p,
                                                            _i64, _p, _i64, types.float32, _p, _i64))
_ROW_MAJOR, _NO_TRANS, _TRANS, _PACKED, _B_MATRIX = 101, 111, 112, 151, 162
_KEEP: list[Any] = []
_MKL: Any = None


def _stub(*ctypes_args: Any) -> int:
    def stub(*_args: Any) -> None:  # pragma: no cover - kernels only call it when NATIVE is True
        raise RuntimeError("oneMKL's cblas_gemm_bf16bf16f32 is not available")

    cb = ctypes.CFUNCTYPE(None, *ctypes_args)(stub)
    _KEEP.append(cb)
    return ctypes.cast(cb, ctypes.c_void_p).value


def _bind() -> bool:
    """Bind the kernels' names to oneMKL's bf16 GEMMs (True), or to stubs that raise (False)."""
    global _MKL
    mkl = blas._mkl_handle() if "mkl" in blas.PROVIDERS else None
    names = ("cblas_gemm_bf16bf16f32_64", "cblas_gemm_bf16bf16f32_compute_64", "cblas_gemm_bf16bf16f32_pack_64",
             "cblas_gemm_bf16bf16f32_pack_get_size_64")
    if mkl is not None and all(hasattr(mkl, n) for n in names):
        _MKL = mkl
        llb.add_symbol(_SYM, ctypes.cast(mkl.cblas_gemm_bf16bf16f32_64, ctypes.c_void_p).value)
        llb.add_symbol(_SYM_COMPUTE, ctypes.cast(mkl.cblas_gemm_bf16bf16f32_compute_64, ctypes.c_void_p).value)
        get_size, pack = mkl.cblas_gemm_bf16bf16f32_pack_get_size_64, mkl.cblas_gemm_bf16bf16f32_pack_64
        get_size.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64]
        get_size.restype = ctypes.c_size_t
        pack.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                         ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
        pack.restype = None
        return True
    i, l_, f, p = ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    llb.add_symbol(_SYM, _stub(i, i, i, l_, l_, l_, f, p, l_, p, l_, f, p, l_))
    llb.add_symbol(_SYM_COMPUTE, _stub(i, l_, l_, l_, l_, l_, f, p, l_, p, l_, f, p, l_))
    return False


NATIVE: bool = _bind()  # oneMKL multiplies bf16 operands; False: float32 GEMMs of rounded operands


class _Thread(threading.local):
    ready = False


_thread = _Thread()


def thread_ready() -> None:
    """Make this thread's first packed bf16 product a tiny one. oneMKL 2026.2 (AMX, Sapphire Rapids class)
    returned wrong values from the first ``cblas_gemm_bf16bf16f32_compute`` of a thread that had not packed
    anything itself (2 of 3 fresh threads, alone or beside others; measured in a 2-thread LSTM as wrong rows
    in the second row block); after one packed product, none in thousands. Every thread that runs the
    recurrent kernels under autocast calls this first (cheap after the first time: one thread-local read)."""
    if _thread.ready or not NATIVE:
        return
    one = np.ones((1, 1), dtype=np.float32)
    out = np.zeros((1, 1), dtype=np.float32)
    _warm_packed(one, _pack(one, 1, True), out)
    _thread.ready = True


def _pack(b: np.ndarray, m: int, trans: bool) -> np.ndarray:
    b16 = to_bf16(b)
    n, k = b.shape if trans else b.shape[::-1]
    nbytes = int(_MKL.cblas_gemm_bf16bf16f32_pack_get_size_64(_B_MATRIX, max(m, 1), n, k))
    raw = np.empty((nbytes + 64 + 1) // 2 * 2, dtype=np.uint8)
    off = (-raw.ctypes.data) % 64
    dest = raw[off: off + (nbytes + 1) // 2 * 2].view(np.uint16)
    _MKL.cblas_gemm_bf16bf16f32_pack_64(_ROW_MAJOR, _B_MATRIX, _TRANS if trans else _NO_TRANS, max(m, 1), n, k,
                                        b16.ctypes.data, max(b16.shape[1], 1), dest.ctypes.data)
    return dest


def pack_b(b: np.ndarray, m: int, trans: bool = False) -> np.ndarray:
    """float32 ``b`` (K, N) -- or with ``trans`` ``b.T`` for a stored (N, K) ``b`` -- rounded to bfloat16 and
    packed by oneMKL for products with ``m``-row left operands (``gemm_bf16_packed``): a recurrent weight,
    packed once per pass. A uint16 array (its bytes are oneMKL's layout, aligned to 64). ``NATIVE`` only."""
    if not NATIVE:
        raise RuntimeError("bf16.pack_b needs oneMKL's bf16 GEMM (NATIVE is False)")
    if b.ndim != 2 or b.dtype != np.float32:
        raise TypeError(f"bf16.pack_b: b must be a 2-D float32 array, got {b.dtype} {b.shape}")
    return _pack(b, m, trans)


@intrinsic
def _bits(typingctx, x):
    """The bits of a float32 as a uint32 (a bitcast, no conversion)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(x), codegen


@numba.njit(cache=True, inline="always")
def _round_bits(u):  # pragma: no cover - jit
    """The bfloat16 bit pattern (in the low 16 bits of a uint32) nearest to float32 bits ``u``, ties to
    even; a NaN stays a (quiet) NaN instead of rounding into inf. Branch-free, so loops vectorise."""
    r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    q = (u >> np.uint32(16)) | np.uint32(0x40)
    nan = np.uint32(0) - np.uint32((u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000))
    return r ^ ((r ^ q) & nan)


@numba.njit(cache=True, nogil=True)
def _to_bf16_flat(src, dst):  # pragma: no cover - jit
    for i in range(src.shape[0]):
        dst[i] = np.uint16(_round_bits(src[i]))


@numba.njit(cache=True, inline="always")
def _rows_to_bf16(a, out):  # pragma: no cover - jit
    """out (uint16, a's shape) = a (2-D float32) rounded to bfloat16, inside other kernels."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = np.uint16(_round_bits(_bits(a[i, j])))


@numba.njit(cache=True, nogil=True, parallel=True)
def _to_bf16_par(src, dst, parts):  # pragma: no cover - jit
    """``_to_bf16_flat`` in ``parts`` chunks run by ``prange`` (Numba's TBB layer, threads.native_parallel)."""
    n = src.shape[0]
    for i in numba.prange(parts):
        _to_bf16_flat(src[n * i // parts: n * (i + 1) // parts], dst[n * i // parts: n * (i + 1) // parts])


# split a rounding pass over the threads from this many elements (a 2M-element pass: 0.45 ms on one core)
PARALLEL_MIN_ELEMENTS = 1 << 18
# split a product by prange from this many multiply-adds per block: 4x blas.NATIVE_PARALLEL_MIN_MACS, the
# bf16 products being ~4x faster than float32's
NATIVE_PARALLEL_MIN_MACS = 4 * blas.NATIVE_PARALLEL_MIN_MACS
NATIVE_SPLITS = [0]  # products and rounding passes split by prange in this process (tests: the fast path is taken)


def to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 ``a`` rounded to bfloat16: a C-contiguous uint16 array of a's shape holding the bit patterns."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    out = np.empty(a.shape, dtype=np.uint16)
    src, dst = a.reshape(-1).view(np.uint32), out.reshape(-1)
    parts = blas.native_parts(a.size, PARALLEL_MIN_ELEMENTS, a.size)
    if parts > 1:
        _to_bf16_par(src, dst, parts)
        NATIVE_SPLITS[0] += 1
    else:
        _to_bf16_flat(src, dst)
    return out


def from_bf16(b: np.ndarray) -> np.ndarray:
    """The float32 values of bfloat16 bit patterns (exact)."""
    return (np.ascontiguousarray(b, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def round_bf16(a: np.ndarray) -> np.ndarray:
    """float32 ``a`` rounded to the nearest bfloat16 value, as float32 (what autocast's products see)."""
    return from_bf16(to_bf16(a))


@numba.njit(cache=True, inline="always")
def _call(a16, b16, c, trans_a, trans_b, beta, m0, m1, n0, n1):  # pragma: no cover - jit
    """c[m0:m1, n0:n1] = (op(a16) @ op(b16))[m0:m1, n0:n1] + beta * c[...]: one oneMKL call, bf16 operands
    (uint16 bit patterns, C-contiguous), float32 c."""
    if m1 <= m0 or n1 <= n0:
        return
    k = a16.shape[0] if trans_a else a16.shape[1]
    lda, ldb, ldc = max(a16.shape[1], 1), max(b16.shape[1], 1), max(c.shape[1], 1)
    pa = a16.ctypes.data + (m0 if trans_a else m0 * lda) * 2
    pb = b16.ctypes.data + (n0 * ldb if trans_b else n0) * 2
    pc = c.ctypes.data + (m0 * ldc + n0) * 4
    _bgemm(_ROW_MAJOR, _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS, m1 - m0, n1 - n0, k,
           np.float32(1.0), pa, lda, pb, ldb, np.float32(beta), pc, ldc)


@numba.njit(cache=True, inline="always")
def gemm_bf16_packed(a, packed, c, beta):  # pragma: no cover - jit
    """c = a @ B + beta * c inside a kernel: float32 ``a`` (a step's rows) rounded here, B a weight rounded and
    packed once by ``pack_b`` for a's row count, float32 accumulation into c. oneMKL only (``NATIVE``)."""
    m, n, k = c.shape[0], c.shape[1], a.shape[1]
    if m == 0 or n == 0:
        return
    a16 = np.empty(a.shape, dtype=np.uint16)
    _rows_to_bf16(a, a16)
    _bcompute(_ROW_MAJOR, _NO_TRANS, _PACKED, m, n, k, np.float32(1.0), a16.ctypes.data, max(k, 1),
              packed.ctypes.data, max(n, 1), np.float32(beta), c.ctypes.data, max(n, 1))


@numba.njit(cache=True, nogil=True)
def _warm_packed(a, packed, c):  # pragma: no cover - jit
    gemm_bf16_packed(a, packed, c, 0.0)


@numba.njit(cache=True, nogil=True)
def block_f(a16, b16, c, trans_a, trans_b, beta, m0, m1, n0, n1):  # pragma: no cover - jit
    """One block of ``matmul``'s product (without the GIL: blocks run in parallel threads)."""
    _call(a16, b16, c, trans_a, trans_b, beta, m0, m1, n0, n1)


@numba.njit(cache=True, nogil=True)
def block_bias_f(a16, b16, c, trans_a, trans_b, bias, m0, m1, n0, n1):  # pragma: no cover - jit
    """One block of ``matmul``'s product started from the bias row (beta = 1 onto it)."""
    blas._fill_bias(c, bias, m0, m1, n0, n1)
    _call(a16, b16, c, trans_a, trans_b, 1.0, m0, m1, n0, n1)


def to_bf16_operand(a: np.ndarray) -> np.ndarray:
    """2-D float32 ``a`` rounded once for several ``matmul`` calls (the backend's ``mm_operand``): its
    bfloat16 bits as uint16, of a's shape; a transposed view stays a transposed view (no copy)."""
    base, trans = blas._operand(a)
    b16 = to_bf16(base)
    return b16.T if trans else b16


@numba.njit(cache=True, nogil=True, parallel=True)
def blocks_par(a16, b16, c, trans_a, trans_b, bias, has_bias, beta, parts, by_rows):  # pragma: no cover - jit
    """``matmul``'s product in ``parts`` blocks of rows (``by_rows``) or columns, run by ``prange``; with
    ``has_bias`` each block starts as the bias, otherwise c = product + beta * c."""
    m, n = c.shape
    for i in numba.prange(parts):
        m0, m1, n0, n1 = blas.block_bounds(i, parts, m, n, by_rows)
        if has_bias:
            block_bias_f(a16, b16, c, trans_a, trans_b, bias, m0, m1, n0, n1)
        else:
            block_f(a16, b16, c, trans_a, trans_b, beta, m0, m1, n0, n1)


def _operand16(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(bf16 array, transposed)`` for a float32 ``x`` -- a transposed view is rounded as its contiguous
    base and multiplied transposed, with no transposed copy -- or for bits already rounded (uint16)."""
    base, trans = blas._operand(x)
    return (base if base.dtype == np.uint16 else to_bf16(base)), trans


def _as_f32(x: np.ndarray) -> np.ndarray:
    """The float32 values a product sees: ``x`` rounded, or bits already rounded (uint16) widened."""
    return from_bf16(x) if x.dtype == np.uint16 else round_bf16(x)


def _check(a: np.ndarray, b: np.ndarray) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied")


def matmul(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """``a @ b (+ bias)`` for 2-D float32 arrays with bfloat16 products and float32 accumulation (see the
    module docstring); split over the threads as ``blas.matmul`` splits (``blas.split_product``)."""
    _check(a, b)
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    if not NATIVE or m * n * k == 0:
        out = _as_f32(a) @ _as_f32(b)
        if bias is not None:
            out += bias
        return out
    a16, ta = _operand16(a)
    b16, tb = _operand16(b)
    out = np.empty((m, n), dtype=np.float32)
    blas.split_product(a16, b16, out, ta, tb, bias, (block_f, block_bias_f, blocks_par), NATIVE_PARALLEL_MIN_MACS,
                       NATIVE_SPLITS)
    return out


def gemm_into(a: np.ndarray, b: np.ndarray, c: np.ndarray, beta: float) -> None:
    """c = a @ b + beta * c (2-D float32, c C-contiguous) with bfloat16 products: the backend's ``gemm``
    under autocast (the per-step loop of small layers, the fused cells' state gradient)."""
    _check(a, b)
    if not NATIVE:
        p = _as_f32(a) @ _as_f32(b)
        if beta:
            c += p
        else:
            c[...] = p
        return
    a16, ta = _operand16(a)
    b16, tb = _operand16(b)
    block_f(a16, b16, c, ta, tb, float(beta), 0, c.shape[0], 0, c.shape[1])
