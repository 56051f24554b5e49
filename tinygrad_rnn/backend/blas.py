"""BLAS GEMM callable from inside Numba kernels, and the CPU backend's matrix product.

The recurrent layers' time loop runs in one Numba kernel per layer and direction; each step's
recurrent product goes to BLAS called directly from the compiled loop rather than through one
Python-level ``np.matmul`` and one kernel dispatch per step.

How: we look up an ILP64 CBLAS ``sgemm``/``dgemm`` in an already loaded library. The kernels declare
names of our own as external functions, so their machine code references them by name and stays
cacheable (``cache=True``); each process binds the names (``llvmlite.binding.add_symbol``) before
any kernel loads, to two tiny functions that jump through a pointer -- so the provider of a
kernel's GEMM can change between passes (``step_provider``) with no recompilation.

Providers, allowed by ``TINYGRAD_RNN_BLAS`` at import:

- ``auto`` (default): both that are installed -- NumPy's, and oneMKL's when the optional ``mkl``
  extra is (``pip install tinygrad_rnn[mkl]``) -- and for each shape class (``shape_class``: the
  recurrent step, tall-skinny products, large ones) the one a short calibration measured faster
  at this thread count (calibration.py; cached per machine). Neither wins everywhere: MKL's
  small-batch GEMMs ran 1.3-1.7x faster than OpenBLAS's on an Intel Xeon, and slower on an AMD EPYC.
- ``mkl``: oneMKL's ``libmkl_rt`` (``cblas_sgemm_64``) only, run sequential: the recurrent weight is
  packed once per pass (``pack_b``), a layer's batch rows run on our own thread pool (threads.py),
  and the CPU backend's other float GEMMs (Linear, matmul, the layers' projections and weight
  gradients) are split into blocks over it (``matmul`` below).
- ``numpy``: only the BLAS NumPy itself uses (OpenBLAS in NumPy's wheels, ``scipy_cblas_sgemm64_``),
  its own threads doing the GEMMs.
- ``none``: never call BLAS from kernels: layers above the small-layer size run the time loop per
  step in Python (recurrence.py), one NumPy matmul and one pointwise kernel per step.

When no ILP64 CBLAS is found (a NumPy built against another BLAS), ``PROVIDERS`` is empty and
``PROVIDER`` None, the per-step fallback is used, and the names lead to a stub that raises if ever called.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from typing import Any

import llvmlite.binding as llb
import numba
import numpy as np
from numba import types
from numba.extending import overload

from . import threads
from .threads import run_ranges

__all__ = ["PROVIDER", "PROVIDERS", "SHAPE_CLASSES", "available", "provider_for", "shape_class", "step_provider",
           "gemm", "gemm_f", "gemm_packed", "matmul", "pack_b", "NOT_PACKED", "get_num_threads",
           "set_num_threads", "row_parallel", "can_pack"]

_SGEMM = "tinygrad_rnn_cblas_sgemm64"
_DGEMM = "tinygrad_rnn_cblas_dgemm64"
_SCOMPUTE = "tinygrad_rnn_cblas_sgemm_compute64"
_DCOMPUTE = "tinygrad_rnn_cblas_dgemm_compute64"
_MKL_SGEMM = "tinygrad_rnn_mkl_sgemm64"  # oneMKL itself, for matmul's blocks
_MKL_DGEMM = "tinygrad_rnn_mkl_dgemm64"
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_PACKED, _B_MATRIX = 151, 162  # oneMKL's CBLAS_STORAGE (CblasPacked) and CBLAS_IDENTIFIER (CblasBMatrix)
_MKL_THREADING_SEQUENTIAL = 1  # MKL_THREADING_INTEL 0, SEQUENTIAL 1, PGI 2, GNU 3, TBB 4

# cblas_?gemm(order, transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) with 64-bit
# integers (ILP64); the enums stay C ints
_i32, _i64, _p = types.int32, types.int64, types.intp
_sgemm = types.ExternalFunction(_SGEMM, types.void(_i32, _i32, _i32, _i64, _i64, _i64, types.float32, _p, _i64,
                                                   _p, _i64, types.float32, _p, _i64))
_dgemm = types.ExternalFunction(_DGEMM, types.void(_i32, _i32, _i32, _i64, _i64, _i64, types.float64, _p, _i64,
                                                   _p, _i64, types.float64, _p, _i64))
_mkl_sgemm = types.ExternalFunction(_MKL_SGEMM, _sgemm.sig)
_mkl_dgemm = types.ExternalFunction(_MKL_DGEMM, _dgemm.sig)
# oneMKL's packed GEMM (cblas_?gemm_compute_64: as gemm, without alpha; B packed once by
# cblas_?gemm_pack_64): a recurrent layer's weight is the same matrix at every step, so it is packed
# once per pass instead of once per step inside every GEMM call
_scompute = types.ExternalFunction(_SCOMPUTE, types.void(_i32, _i32, _i32, _i64, _i64, _i64, _p, _i64, _p, _i64,
                                                         types.float32, _p, _i64))
_dcompute = types.ExternalFunction(_DCOMPUTE, types.void(_i32, _i32, _i32, _i64, _i64, _i64, _p, _i64, _p, _i64,
                                                         types.float64, _p, _i64))
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
    the system finds it; None when absent."""
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


def _stub_factory(ctype: Any, compute: bool = False) -> Any:
    if compute:
        proto = ctypes.CFUNCTYPE(None, *_CTYPES_ARGS, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                                 ctypes.c_int64, ctype, ctypes.c_void_p, ctypes.c_int64)
    else:
        proto = ctypes.CFUNCTYPE(None, *_CTYPES_ARGS, ctype, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                                 ctypes.c_int64, ctype, ctypes.c_void_p, ctypes.c_int64)

    def stub(*_args: Any) -> None:  # pragma: no cover - only reached if a caller ignores `available()`
        raise RuntimeError("tinygrad_rnn: a kernel called BLAS, but no ILP64 CBLAS was bound (see backend/blas.py)")

    return proto(stub)


_STUBS: list[Any] = []  # keep the ctypes callbacks alive for the life of the process
_MKL: Any = None  # the loaded oneMKL library when it is one of the providers
_ADDRS: dict[str, tuple[int, int]] = {}  # provider -> (sgemm, dgemm) addresses, in preference order
_TRAMPOLINE: Any = None  # the LLVM engine holding the kernels' GEMM entry points (kept alive)
_POINTERS: dict[str, Any] = {}  # "s"/"d" -> the ctypes view of the pointer each entry point jumps through
_POINTED: list[str | None] = [None]  # which provider the kernels' entry points jump to now

# The kernels' names (_SGEMM/_DGEMM) are bound once to two tiny functions that jump through a pointer
# (one indirect call, nothing else), so which library a kernel's GEMM goes to can change between
# passes -- per thread count, as calibration decides -- while the kernels' machine code stays cached.
_TRAMPOLINE_IR = """
@{name}_ptr = global ptr null
define void @{name}(i32 %o, i32 %ta, i32 %tb, i64 %m, i64 %n, i64 %k, {t} %al, ptr %a, i64 %lda, ptr %b, i64 %ldb,
                    {t} %be, ptr %c, i64 %ldc) {{
  %f = load ptr, ptr @{name}_ptr
  musttail call void %f(i32 %o, i32 %ta, i32 %tb, i64 %m, i64 %n, i64 %k, {t} %al, ptr %a, i64 %lda, ptr %b,
                        i64 %ldb, {t} %be, ptr %c, i64 %ldc)
  ret void
}}
"""


def _build_trampolines() -> dict[str, tuple[int, Any]]:
    """``{"s": (entry address, pointer cell), "d": ...}``: the two jump-through-a-pointer entry points."""
    global _TRAMPOLINE
    ir = _TRAMPOLINE_IR.format(name="tgr_sgemm", t="float") + _TRAMPOLINE_IR.format(name="tgr_dgemm", t="double")
    llb.initialize_native_target()  # as Numba does; idempotent
    llb.initialize_native_asmprinter()
    mod = llb.parse_assembly(ir)
    mod.verify()
    _TRAMPOLINE = llb.create_mcjit_compiler(mod, llb.Target.from_default_triple().create_target_machine(opt=2))
    _TRAMPOLINE.finalize_object()
    return {p: (_TRAMPOLINE.get_function_address(f"tgr_{p}gemm"),
                ctypes.c_void_p.from_address(_TRAMPOLINE.get_global_value_address(f"tgr_{p}gemm_ptr")))
            for p in ("s", "d")}


def _bind_stub(sym: str, ctype: Any, compute: bool) -> int:
    cb = _stub_factory(ctype, compute)
    _STUBS.append(cb)
    addr = ctypes.cast(cb, ctypes.c_void_p).value
    llb.add_symbol(sym, addr)
    return addr


def _bind() -> tuple[str, ...]:
    """Find the providers ``TINYGRAD_RNN_BLAS`` allows and bind the kernels' names; return the
    providers found, in preference order (empty when only stubs could be bound)."""
    global _MKL
    choice = os.environ.get("TINYGRAD_RNN_BLAS", "auto").strip().lower() or "auto"
    if choice not in ("auto", "mkl", "numpy", "none"):
        raise ValueError(f"TINYGRAD_RNN_BLAS must be 'auto', 'mkl', 'numpy' or 'none', got {choice!r}")
    found: dict[str, tuple[int, int]] = {}
    if choice in ("auto", "numpy"):
        try:
            handle = _numpy_blas_handle()
            s, d = _find(handle, "s"), _find(handle, "d")
            if s is not None and d is not None:
                found["numpy"] = (s[1], d[1])
        except OSError:  # pragma: no cover - an unusual NumPy install
            pass
    if choice in ("auto", "mkl"):
        mkl = _mkl_handle()
        if mkl is not None:
            s, d = _find(mkl, "s"), _find(mkl, "d")
            if s is not None and d is not None:
                found["mkl"], _MKL = (s[1], d[1]), mkl
                # sequential MKL (set before any other MKL call): no OpenMP runtime of MKL's in the
                # process. Its idle threads spin for 200 ms after every GEMM and took the core our
                # row-block threads needed (up to 1.5x slower); making them sleep (KMP_BLOCKTIME=0)
                # slowed a PyTorch in the same process 2.5x, whose OpenMP calls then bound to MKL's
                # runtime. We spread GEMMs over cores ourselves (``matmul``, ``run_parallel``).
                mkl.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
                mkl.MKL_Set_Threading_Layer(_MKL_THREADING_SEQUENTIAL)
        if "mkl" not in found and choice == "mkl":
            raise ValueError("TINYGRAD_RNN_BLAS=mkl, but oneMKL's libmkl_rt (with ILP64 cblas_sgemm_64) was not "
                             "found: pip install 'tinygrad_rnn[mkl]', or unset TINYGRAD_RNN_BLAS")
    bound = False
    if _MKL is not None:
        try:
            llb.add_symbol(_SCOMPUTE, ctypes.cast(_MKL.cblas_sgemm_compute_64, ctypes.c_void_p).value)
            llb.add_symbol(_DCOMPUTE, ctypes.cast(_MKL.cblas_dgemm_compute_64, ctypes.c_void_p).value)
            bound = True
        except AttributeError:  # pragma: no cover - an MKL without the ILP64 packed API: plain GEMM only
            _MKL = None
    if not bound:
        _bind_stub(_SCOMPUTE, ctypes.c_float, True)
        _bind_stub(_DCOMPUTE, ctypes.c_double, True)
    # matmul's MKL blocks call MKL by a name of their own (never through the switchable entry points)
    if "mkl" in found:
        llb.add_symbol(_MKL_SGEMM, found["mkl"][0])
        llb.add_symbol(_MKL_DGEMM, found["mkl"][1])
    else:
        _bind_stub(_MKL_SGEMM, ctypes.c_float, False)
        _bind_stub(_MKL_DGEMM, ctypes.c_double, False)
    tramps = _build_trampolines()
    for prec, sym, ctype in (("s", _SGEMM, ctypes.c_float), ("d", _DGEMM, ctypes.c_double)):
        entry, cell = tramps[prec]
        cell.value = _bind_stub(sym + "_stub", ctype, False)  # until a provider is pointed at
        _POINTERS[prec] = cell
        llb.add_symbol(sym, entry)
    _ADDRS.clear()
    _ADDRS.update(found)
    if found:
        _point(next(iter(found)))
    return tuple(found)


def _point(provider: str | None) -> None:
    """Make the kernels' GEMM entry points call ``provider``'s sgemm/dgemm."""
    if provider is None or provider == _POINTED[0]:
        return
    s, d = _ADDRS[provider]
    _POINTERS["s"].value, _POINTERS["d"].value = s, d
    _POINTED[0] = provider


PROVIDERS: tuple[str, ...] = _bind()
# "mkl" or "numpy" when one provider is bound, "auto" when calibration picks between both, None when none
PROVIDER: str | None = None if not PROVIDERS else PROVIDERS[0] if len(PROVIDERS) == 1 else "auto"


def available() -> bool:
    """True when kernels may call BLAS (a real ILP64 CBLAS is bound)."""
    return bool(PROVIDERS)


# ---------------------------------------------------------------------------------------------
# the provider per shape class, chosen by measurement (calibration.py: timing and its disk cache)

SHAPE_CLASSES = ("step", "skinny", "large")


def shape_class(m: int, n: int) -> str:
    """``"step"``: a product with few rows (a recurrent step's batch, M <= 64); ``"skinny"``: a tall or
    wide product with one small side (an output projection over few classes, its weight gradient);
    ``"large"``: the rest (whole-sequence projections, weight gradients, wide output projections)."""
    if m <= 64:
        return "step"
    return "skinny" if min(m, n) <= 128 else "large"


def provider_for(cls: str) -> str | None:
    """The provider for ``cls`` (one of SHAPE_CLASSES) at the current thread count: the only one bound,
    or -- both bound, ``TINYGRAD_RNN_BLAS=auto`` -- the faster one as calibration measured it."""
    if len(PROVIDERS) <= 1:
        return PROVIDERS[0] if PROVIDERS else None
    if _CHOOSER[0] is None:
        from . import get_backend

        get_backend("cpu")  # the CPU backend's module installs calibration.choose (set_chooser)
    return _CHOOSER[0](cls, threads.get_num_threads())


# calibration.choose, installed by cpu.py: this module does not import calibration, which times through it
_CHOOSER: list[Any] = [None]


def set_chooser(choose: Any) -> None:
    """Install the function ``(shape_class, n_threads) -> provider`` that ``provider_for`` asks."""
    _CHOOSER[0] = choose


def step_provider(forced: str | None = None) -> str | None:
    """The provider of the recurrent step's products (``forced``, or the calibrated choice), with the
    kernels' GEMM entry points pointed at it: call before a pass of the sequence kernels."""
    if forced is not None and forced not in PROVIDERS:
        raise ValueError(f"step_provider: {forced!r} is not a bound BLAS provider (bound: {PROVIDERS})")
    p = forced or provider_for("step")
    _point(p)
    return p


# ---------------------------------------------------------------------------------------------
# thread counts: the pool itself is threads.py; with NumPy's OpenBLAS its own count is kept in step


@functools.lru_cache(maxsize=None)
def _numpy_fn(names: tuple[str, ...]) -> Any:
    """The first of ``names`` that NumPy's BLAS exports (looked up once), or None."""
    handle = _numpy_blas_handle()
    for name in names:
        fn = getattr(handle, name, None)
        if fn is not None:
            return fn
    return None


def set_num_threads(n: int) -> None:
    """Threads for the CPU backend's GEMMs and recurrent layers (``torch.set_num_threads``): our own
    pool (threads.py) with MKL; with NumPy's OpenBLAS, OpenBLAS's thread count too."""
    threads.set_num_threads(n)
    if "numpy" in PROVIDERS:  # NumPy's own matmul too may be picked for a shape class
        fn = _numpy_fn(("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads"))
        if fn is not None:
            fn(int(n))  # a C int: ctypes' default conversion


def get_num_threads() -> int:
    """The thread count ``set_num_threads`` set (default: one per logical core); with NumPy's OpenBLAS,
    OpenBLAS's own count (which threadpoolctl and OPENBLAS_NUM_THREADS also set)."""
    if PROVIDERS == ("numpy",):
        fn = _numpy_fn(("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads"))
        if fn is not None:
            return max(1, int(fn()))
    return threads.get_num_threads()


def row_parallel(forced: str | None = None) -> bool:
    """Whether the recurrent layers may run row blocks in parallel threads: when the step's provider
    (``step_provider``) is MKL (one-thread GEMMs). Not with NumPy's OpenBLAS: its idle threads spin for
    a while after each threaded call and a thread of ours competes with them (row blocks measured
    1.1-1.6x slower there)."""
    return step_provider(forced) == "mkl"


# ---------------------------------------------------------------------------------------------
# the kernel-side call: gemm(a, b, c, trans_a, trans_b, beta) sets c = op(a) @ op(b) + beta * c for
# 2-D C-contiguous float32 or float64 arrays (op(x) = x.T when its flag is set); a no-op on empty c


def gemm(a, b, c, trans_a, trans_b, beta):  # pragma: no cover - dispatched by the overload below
    raise NotImplementedError


@numba.njit(cache=True, inline="always")
def _block_args(a, b, c, trans_a, m0, n0, trans_b):  # pragma: no cover - jit
    """(k, pa, lda, pb, ldb, pc, ldc) of the block of c starting at (m0, n0): rows m0.. of op(a) and
    columns n0.. of op(b) addressed by pointer offsets, leading dims those of the whole arrays."""
    k = a.shape[0] if trans_a else a.shape[1]
    lda, ldb, ldc = max(a.shape[1], 1), max(b.shape[1], 1), max(c.shape[1], 1)
    pa = a.ctypes.data + (m0 if trans_a else m0 * lda) * a.itemsize
    pb = b.ctypes.data + (n0 * ldb if trans_b else n0) * b.itemsize
    pc = c.ctypes.data + (m0 * ldc + n0) * c.itemsize
    return k, pa, lda, pb, ldb, pc, ldc


@numba.njit(cache=True, inline="always")
def _block32(a, b, c, trans_a, trans_b, beta, m0, m1, n0, n1):  # pragma: no cover - jit
    """c[m0:m1, n0:n1] = (op(a) @ op(b))[m0:m1, n0:n1] + beta * c[m0:m1, n0:n1]: one BLAS call."""
    if m1 <= m0 or n1 <= n0:
        return
    k, pa, lda, pb, ldb, pc, ldc = _block_args(a, b, c, trans_a, m0, n0, trans_b)
    _sgemm(_ROW_MAJOR, _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS, m1 - m0, n1 - n0, k,
           np.float32(1.0), pa, lda, pb, ldb, np.float32(beta), pc, ldc)


@numba.njit(cache=True, inline="always")
def _block64(a, b, c, trans_a, trans_b, beta, m0, m1, n0, n1):  # pragma: no cover - jit
    if m1 <= m0 or n1 <= n0:
        return
    k, pa, lda, pb, ldb, pc, ldc = _block_args(a, b, c, trans_a, m0, n0, trans_b)
    _dgemm(_ROW_MAJOR, _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS, m1 - m0, n1 - n0, k,
           1.0, pa, lda, pb, ldb, float(beta), pc, ldc)


def gemm_block(a, b, c, trans_a, trans_b, beta, m0, m1, n0, n1):  # pragma: no cover - dispatched by the overload
    raise NotImplementedError


def _typed_2d_c(*xs: Any) -> bool:
    return all(isinstance(x, types.Array) and x.ndim == 2 and x.layout == "C" for x in xs)


@overload(gemm_block, inline="always")
def _gemm_block_impl(a, b, c, trans_a, trans_b, beta, m0, m1, n0, n1):
    if not _typed_2d_c(a, b, c):
        return None
    if a.dtype == b.dtype == c.dtype == types.float32:
        return lambda a, b, c, trans_a, trans_b, beta, m0, m1, n0, n1: _block32(a, b, c, trans_a, trans_b, beta,
                                                                                m0, m1, n0, n1)
    if a.dtype == b.dtype == c.dtype == types.float64:
        return lambda a, b, c, trans_a, trans_b, beta, m0, m1, n0, n1: _block64(a, b, c, trans_a, trans_b, beta,
                                                                                m0, m1, n0, n1)
    return None


@numba.njit(cache=True, inline="always")
def _mkl_block(a, b, c, trans_a, trans_b, beta, m0, m1, n0, n1):  # pragma: no cover - jit
    """As ``gemm_block``, always by oneMKL (matmul's blocks: never through the switchable entry points)."""
    if m1 <= m0 or n1 <= n0:
        return
    k, pa, lda, pb, ldb, pc, ldc = _block_args(a, b, c, trans_a, m0, n0, trans_b)
    ta, tb = _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS
    if c.itemsize == 4:
        _mkl_sgemm(_ROW_MAJOR, ta, tb, m1 - m0, n1 - n0, k, np.float32(1.0), pa, lda, pb, ldb, np.float32(beta), pc, ldc)
    else:
        _mkl_dgemm(_ROW_MAJOR, ta, tb, m1 - m0, n1 - n0, k, 1.0, pa, lda, pb, ldb, float(beta), pc, ldc)


@numba.njit(cache=True, nogil=True)
def _fill_bias(c, bias, m0, m1, n0, n1):  # pragma: no cover - jit
    """c[m0:m1, n0:n1] = the bias row: a GEMM with beta = 1 then accumulates onto it."""
    for i in range(m0, m1):
        row = c[i]
        for j in range(n0, n1):
            row[j] = bias[j]


@numba.njit(cache=True, nogil=True)
def mkl_block_f(a, b, c, trans_a, trans_b, beta, m0, m1, n0, n1):  # pragma: no cover - jit
    """One block of matmul's product by oneMKL (without the GIL: blocks run in parallel threads)."""
    _mkl_block(a, b, c, trans_a, trans_b, beta, m0, m1, n0, n1)


@numba.njit(cache=True, nogil=True)
def mkl_block_bias_f(a, b, c, trans_a, trans_b, bias, m0, m1, n0, n1):  # pragma: no cover - jit
    """c[m0:m1, n0:n1] = (op(a) @ op(b) + bias)[m0:m1, n0:n1] by oneMKL: the block is filled with the bias
    row and the GEMM accumulates onto it (one pass over c, while the block is in cache)."""
    _fill_bias(c, bias, m0, m1, n0, n1)
    _mkl_block(a, b, c, trans_a, trans_b, 1.0, m0, m1, n0, n1)


@numba.njit(cache=True, nogil=True)
def gemm_block_f(a, b, c, trans_a, trans_b, beta, m0, m1, n0, n1):  # pragma: no cover - jit
    """``gemm_block`` callable from Python (without the GIL: blocks run in parallel threads)."""
    gemm_block(a, b, c, trans_a, trans_b, beta, m0, m1, n0, n1)


@numba.njit(cache=True, nogil=True)
def gemm_block_bias_f(a, b, c, trans_a, trans_b, bias, m0, m1, n0, n1):  # pragma: no cover - jit
    """c[m0:m1, n0:n1] = (op(a) @ op(b) + bias)[m0:m1, n0:n1]: the block is filled with the bias
    row and the GEMM accumulates onto it (one pass over c, while the block is in cache)."""
    _fill_bias(c, bias, m0, m1, n0, n1)
    gemm_block(a, b, c, trans_a, trans_b, 1.0, m0, m1, n0, n1)


@overload(gemm, inline="always")
def _gemm_impl(a, b, c, trans_a, trans_b, beta):
    if not _typed_2d_c(a, b, c) or not (a.dtype == b.dtype == c.dtype) or a.dtype not in (types.float32, types.float64):
        return None
    return lambda a, b, c, trans_a, trans_b, beta: gemm_block(a, b, c, trans_a, trans_b, beta, 0, c.shape[0], 0,
                                                              c.shape[1])


@numba.njit(cache=True, nogil=True)
def gemm_f(a, b, c, trans_a, trans_b, beta):  # pragma: no cover - jit
    """``gemm`` callable from Python."""
    gemm(a, b, c, trans_a, trans_b, beta)


# ---------------------------------------------------------------------------------------------
# packed B (oneMKL only): pack_b(b, m) once, then gemm_packed(a, packed, c, beta) per step

NOT_PACKED = np.empty(0, dtype=np.uint8)  # what kernels get when B is not packed: plain gemm then
_PACK_ALIGN = 64


def can_pack(forced: str | None = None) -> bool:
    """Whether the step's products use weights packed by ``pack_b`` (the step's provider is oneMKL)."""
    return _MKL is not None and step_provider(forced) == "mkl"


def pack_b(b: np.ndarray, m: int, trans: bool = False) -> np.ndarray:
    """``b`` (K, N) -- or, with ``trans``, ``b.T`` for a stored (N, K) ``b`` (no transposed copy) --
    C-contiguous float32/float64, packed by oneMKL for products with ``m``-row left operands;
    ``NOT_PACKED`` when oneMKL is not loaded (or the shapes are empty)."""
    if _MKL is None or b.ndim != 2 or b.dtype not in (np.float32, np.float64) or m == 0 or b.size == 0:
        return NOT_PACKED
    if not b.flags.c_contiguous:
        raise ValueError(f"pack_b: b must be C-contiguous, got strides {b.strides}")
    n, k = b.shape if trans else b.shape[::-1]
    get_size, pack = _pack_fns("s" if b.dtype == np.float32 else "d")
    nbytes = int(get_size(_B_MATRIX, m, n, k))
    raw = np.empty(nbytes + _PACK_ALIGN, dtype=np.uint8)
    off = (-raw.ctypes.data) % _PACK_ALIGN
    dest = raw[off: off + nbytes]
    pack(_ROW_MAJOR, _B_MATRIX, _TRANS if trans else _NO_TRANS, m, n, k, 1.0, b.ctypes.data, max(b.shape[1], 1),
         dest.ctypes.data)
    return dest


@functools.lru_cache(maxsize=None)
def _pack_fns(pre: str) -> tuple[Any, Any]:
    """oneMKL's ``cblas_?gemm_pack_get_size_64`` and ``cblas_?gemm_pack_64`` with their C signatures
    (set once, not on every pass)."""
    get_size = getattr(_MKL, f"cblas_{pre}gemm_pack_get_size_64")
    get_size.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64]
    get_size.restype = ctypes.c_size_t
    pack = getattr(_MKL, f"cblas_{pre}gemm_pack_64")
    pack.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                     ctypes.c_float if pre == "s" else ctypes.c_double, ctypes.c_void_p, ctypes.c_int64,
                     ctypes.c_void_p]
    pack.restype = None
    return get_size, pack


def gemm_packed(a, packed, c, beta):  # pragma: no cover - dispatched by the overload below
    raise NotImplementedError


@numba.njit(cache=True, inline="always")
def _packed32(a, packed, c, beta):  # pragma: no cover - jit
    m, n, k = c.shape[0], c.shape[1], a.shape[1]
    if m == 0 or n == 0:
        return
    _scompute(_ROW_MAJOR, _NO_TRANS, _PACKED, m, n, k, a.ctypes.data, max(k, 1), packed.ctypes.data, max(n, 1),
              np.float32(beta), c.ctypes.data, max(n, 1))


@numba.njit(cache=True, inline="always")
def _packed64(a, packed, c, beta):  # pragma: no cover - jit
    m, n, k = c.shape[0], c.shape[1], a.shape[1]
    if m == 0 or n == 0:
        return
    _dcompute(_ROW_MAJOR, _NO_TRANS, _PACKED, m, n, k, a.ctypes.data, max(k, 1), packed.ctypes.data, max(n, 1),
              float(beta), c.ctypes.data, max(n, 1))


@overload(gemm_packed, inline="always")
def _gemm_packed_impl(a, packed, c, beta):
    if not _typed_2d_c(a, c):
        return None
    if a.dtype == c.dtype == types.float32:
        return lambda a, packed, c, beta: _packed32(a, packed, c, beta)
    if a.dtype == c.dtype == types.float64:
        return lambda a, packed, c, beta: _packed64(a, packed, c, beta)
    return None


@numba.njit(cache=True, nogil=True)
def gemm_packed_f(a, packed, c, beta):  # pragma: no cover - jit
    """``gemm_packed`` callable from Python: c = a @ B + beta * c with B packed by ``pack_b``."""
    gemm_packed(a, packed, c, beta)


# ---------------------------------------------------------------------------------------------
# the CPU backend's 2-D matrix product

# below this many multiply-adds NumPy's matmul is as fast (and its call is cheaper than ours)
MATMUL_MIN_MACS = 1 << 15
# a thread of a split GEMM gets at least this many multiply-adds: on our pool, whose hand-off is a
# wake-up (60-100 us; split products below ~30M multiply-adds measured slower than one thread), and
# through prange on Numba's TBB layer (threads.native_parallel; 2M multiply-adds: 25 -> 13 us on 2 threads)
PARALLEL_MIN_MACS = 1 << 24
NATIVE_PARALLEL_MIN_MACS = 1 << 19
NATIVE_SPLITS = [0]  # products split by mkl_blocks_par in this process (tests: the fast path is taken)


@numba.njit(cache=True, nogil=True)
def block_bounds(i, parts, m, n, by_rows):  # pragma: no cover - jit
    """``(m0, m1, n0, n1)``: block ``i`` of ``parts`` even blocks of rows (``by_rows``) or columns of an (m, n)
    product (the prange-split products here and in bf16.py)."""
    if by_rows:
        return m * i // parts, m * (i + 1) // parts, 0, n
    return 0, m, n * i // parts, n * (i + 1) // parts


@numba.njit(cache=True, nogil=True, parallel=True)
def mkl_blocks_par(a, b, c, trans_a, trans_b, bias, has_bias, beta, parts, by_rows):  # pragma: no cover - jit
    """``matmul``'s product by oneMKL in ``parts`` blocks of rows (``by_rows``) or columns, run by ``prange``
    on Numba's threading layer (``threads.native_parallel``); with ``has_bias`` each block starts as the bias,
    otherwise c = product + beta * c."""
    m, n = c.shape
    for i in numba.prange(parts):
        m0, m1, n0, n1 = block_bounds(i, parts, m, n, by_rows)
        if has_bias:
            mkl_block_bias_f(a, b, c, trans_a, trans_b, bias, m0, m1, n0, n1)
        else:
            mkl_block_f(a, b, c, trans_a, trans_b, beta, m0, m1, n0, n1)


def native_parts(work: int, per_part: int, most: int) -> int:
    """How many ``prange`` blocks ``work`` is split into, each at least ``per_part`` and at most ``most``
    blocks (0: do not split it that way: one thread, or no TBB layer -- threads.native_parallel)."""
    nt = threads.get_num_threads()
    if nt > 1 and work >= 2 * per_part and threads.native_parallel():
        return max(1, min(nt, work // per_part, most))
    return 0


def _native_parts(m: int, k: int, n: int) -> int:
    """How many prange blocks a product of oneMKL's gets (0: do not split it that way): see matmul."""
    return native_parts(m * n * k, NATIVE_PARALLEL_MIN_MACS, max(m, n))


def split_product(a_: np.ndarray, b_: np.ndarray, out: np.ndarray, ta: bool, tb: bool, bias: np.ndarray | None,
                  kernels: tuple[Any, Any, Any], native_min_macs: int, splits: list[int]) -> None:
    """out = op(a_) @ op(b_) (+ bias) by one of ``kernels`` = (block, block_bias, blocks_par), split over the
    threads: by ``prange`` (blocks_par) from ``native_min_macs`` multiply-adds a block (``splits`` counts those),
    else on the pool from PARALLEL_MIN_MACS, in blocks of rows -- or of columns for a wide product. The one
    splitting scheme of ``matmul``'s float products and bf16.py's."""
    block_f, block_bias_f, blocks_par = kernels
    m, n = out.shape
    k = a_.shape[0] if ta else a_.shape[1]
    bias_c = None if bias is None else np.ascontiguousarray(bias, dtype=out.dtype)
    parts = native_parts(m * n * k, native_min_macs, max(m, n))
    if parts > 1:
        b_arr = np.empty(0, dtype=out.dtype) if bias_c is None else bias_c
        blocks_par(a_, b_, out, ta, tb, b_arr, bias_c is not None, 0.0, parts, m >= n)
        splits[0] += 1
        return
    if bias_c is None:
        block = functools.partial(block_f, a_, b_, out, ta, tb, 0.0)
    else:
        block = functools.partial(block_bias_f, a_, b_, out, ta, tb, bias_c)
    parts = max(1, min(threads.get_num_threads(), m * n * k // PARALLEL_MIN_MACS, max(m, n)))
    if m >= n:
        run_ranges(lambda lo, hi: block(lo, hi, 0, n), m, parts)
    else:
        run_ranges(lambda lo, hi: block(0, m, lo, hi), n, parts)


def gemm_into(a: np.ndarray, b: np.ndarray, c: np.ndarray, beta: float) -> None:
    """c = a @ b + beta * c for 2-D C-contiguous float32/float64 arrays of one dtype (the backend's ``gemm``:
    the per-step loop's and the fused cells' products): split by prange as ``matmul`` splits its products
    where oneMKL serves their shape class, else one call on the step's provider (``gemm_f``)."""
    m, k = a.shape
    n = b.shape[1]
    parts = _native_parts(m, k, n) if "mkl" in PROVIDERS and provider_for(shape_class(m, n)) == "mkl" else 0
    if parts > 1:
        mkl_blocks_par(a, b, c, False, False, np.empty(0, dtype=c.dtype), False, float(beta), parts, m >= n)
        NATIVE_SPLITS[0] += 1
        return
    gemm_f(a, b, c, False, False, float(beta))


def _operand(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(array, transposed)`` with ``array`` C-contiguous and ``x == array.T if transposed``."""
    if x.flags.c_contiguous:
        return x, False
    if x.flags.f_contiguous:
        return x.T, True
    return np.ascontiguousarray(x), False


def matmul(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None, provider: str | None = None) -> np.ndarray:
    """``a @ b (+ bias)`` for 2-D arrays and a bias row of b's width. Float32/float64 products of some
    size go to the provider calibration picked for their shape class (``provider_for``; ``provider``
    forces one). oneMKL: transposed views are passed as transposes, not copied, the bias is the GEMM's
    starting value, and the product is split into blocks of rows or columns over ``get_num_threads()``
    threads when each gets at least PARALLEL_MIN_MACS of work. Otherwise NumPy's matmul (and an
    in-place add of the bias)."""
    if ("mkl" not in PROVIDERS or a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype
            or a.dtype not in (np.float32, np.float64) or a.shape[0] * a.shape[1] * b.shape[1] < MATMUL_MIN_MACS
            or (bias is not None and (bias.shape != b.shape[1:] or bias.dtype != a.dtype))
            or (provider or provider_for(shape_class(a.shape[0], b.shape[1]))) != "mkl"):
        out = a @ b
        if bias is not None:
            out += bias
        return out
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied")
    a_, ta = _operand(a)
    b_, tb = _operand(b)
    out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    split_product(a_, b_, out, ta, tb, bias, (mkl_block_f, mkl_block_bias_f, mkl_blocks_par), NATIVE_PARALLEL_MIN_MACS,
                  NATIVE_SPLITS)
    return out
