"""Experiment (issue 17): an LSTM forward whose threads split each step by output columns, not batch rows.

Today's parallel recurrence (cpu.py ``_over_rows``) gives each thread a block of batch rows and runs the
whole sequence there with no synchronisation: every thread multiplies its rows by the *whole* W_hh each
step. Here every thread owns the same slice j0:j1 of hidden units in all four gates instead: its
columns of W_hh^T, repacked once per pass into one (H, 4*(j1-j0)) matrix (and packed by MKL), stay
in its own L2 for all T steps; each step it multiplies the full h_{t-1} (B, H) by its slice, applies
the gate nonlinearity to its own (B, 4*(j1-j0)) tile while it is hot, writes h_t[:, j0:j1], and
waits at one barrier (an atomic counter) for the other threads' columns of h_t.

Not wired into the layers: ``lstm_forward_cols`` is called directly (bench and tests only); see
the report in issue 17 for its measurements against the row-block split.
"""
from __future__ import annotations

import platform

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import blas, threads
from .rnn_kernels import _sigmoid, _tanh

__all__ = ["lstm_forward_cols"]

SPINS_BEFORE_YIELD = 1 << 12
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


@intrinsic
def _atomic_add(typingctx, arr, val):
    """arr[0] += val atomically (sequentially consistent) on a 1-D int64 array; returns the old value."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and isinstance(val, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        v = context.cast(builder, args[1], sig.args[1], types.int64)
        return builder.atomic_rmw("add", ary.data, v, "seq_cst")

    return types.int64(arr, val), codegen


@intrinsic
def _atomic_load(typingctx, arr):
    """arr[0], read atomically (acquire), on a 1-D int64 array."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.load_atomic(ary.data, "acquire", 8)

    return types.int64(arr), codegen


@intrinsic
def _pause(typingctx):
    """The spin-wait hint (x86 ``pause``; nothing elsewhere)."""
    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


_sched_yield = types.ExternalFunction("sched_yield", types.int32())


@numba.njit(cache=True, inline="always")
def _barrier(counter, target):  # pragma: no cover - jit
    """Arrive, then wait until ``target`` arrivals in all: one counter for the whole pass, never reset."""
    _atomic_add(counter, 1)
    spins = 0
    while _atomic_load(counter) < target:
        _pause()
        spins += 1
        if spins >= SPINS_BEFORE_YIELD:  # the other thread lost its core: give ours up rather than spin a timeslice
            _sched_yield()
            spins = 0


@numba.njit(cache=True, nogil=True, fastmath={"contract", "nsz"}, error_model="numpy")
def lstm_cols_forward(xw, w_cols, w_pack, h_all, c0, c_out, j0, j1, counter, n_threads):  # pragma: no cover - jit
    """Hidden units j0:j1 of every step: xw (T, B, 4H) the input projection (bias included), w_cols (H, 4*hs)
    this thread's columns of W_hh^T gate by gate (or ``w_pack``, the same packed by MKL), h_all (T+1, B, H)
    with h_all[0] = h0, c0 and c_out (B, H) (this thread reads and writes columns j0:j1 only)."""
    t_, b_, g4 = xw.shape
    h_ = g4 // 4
    hs = j1 - j0
    hw = np.empty((b_, 4 * hs), dtype=h_all.dtype)
    c = np.empty((b_, hs), dtype=h_all.dtype)
    for b in range(b_):
        for jj in range(hs):
            c[b, jj] = c0[b, j0 + jj]
    for t in range(t_):
        if w_pack.size:
            blas.gemm_packed(h_all[t], w_pack, hw, 0.0)
        else:
            blas.gemm(h_all[t], w_cols, hw, False, False, 0.0)
        x_t, h_next = xw[t], h_all[t + 1]
        for b in range(b_):
            xr, hr, cr, hn = x_t[b], hw[b], c[b], h_next[b]
            for jj in range(hs):
                j = j0 + jj
                gi = _sigmoid(xr[j] + hr[jj])
                gf = _sigmoid(xr[h_ + j] + hr[hs + jj])
                gg = _tanh(xr[2 * h_ + j] + hr[2 * hs + jj])
                go = _sigmoid(xr[3 * h_ + j] + hr[3 * hs + jj])
                cc = gf * cr[jj] + gi * gg
                cr[jj] = cc
                hn[j] = go * _tanh(cc)
        _barrier(counter, n_threads * (t + 1))
    for b in range(b_):
        for jj in range(hs):
            c_out[b, j0 + jj] = c[b, jj]


def lstm_forward_cols(xw: np.ndarray, w_hh: np.ndarray, h0: np.ndarray, c0: np.ndarray,
                      n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(h_all (T+1, B, H), c_T (B, H))`` of an LSTM forward (no mask) from its input projection xw
    (T, B, 4H), W_hh (4H, H) and the initial state, on ``n_threads`` column slices (one per thread)."""
    t_, b_, g4 = xw.shape
    h_ = g4 // 4
    n = max(1, min(n_threads or threads.get_num_threads(), h_ // 8))
    dt = xw.dtype
    h_all = np.empty((t_ + 1, b_, h_), dtype=dt)
    h_all[0] = h0
    c_out = np.empty((b_, h_), dtype=dt)
    counter = np.zeros(1, dtype=np.int64)
    bounds = threads.even_bounds(h_, n)
    blas.step_provider("mkl" if "mkl" in blas.PROVIDERS else None)  # one-thread GEMMs: MKL run sequential
    tasks = []
    for i in range(n):
        j0, j1 = bounds[i], bounds[i + 1]
        rows = np.concatenate([np.arange(g * h_ + j0, g * h_ + j1) for g in range(4)])
        w_cols = np.ascontiguousarray(w_hh[rows].T)  # (H, 4 * hs): this thread's gate columns of W_hh^T
        pack = blas.pack_b(np.ascontiguousarray(w_hh[rows]), b_, True)
        tasks.append(lambda w_cols=w_cols, pack=pack, j0=j0, j1=j1: lstm_cols_forward(
            xw, w_cols, pack, h_all, c0, c_out, j0, j1, counter, n))
    threads.run_parallel(tasks)
    return h_all, c_out
