"""Numba kernels of the CPU backend.

Plain top-level functions with ``cache=True`` so the compiled code is reused across
processes (closures and nested functions cannot be cached). Each kernel writes into
arrays its caller allocated; shapes and most ranges are validated by the caller; the
scatter kernel checks its row ids itself, since a stale id would make it write out of bounds.
Accumulations run in float64 whatever the storage dtype.

The softmax cross-entropy forward kernels do the cheap per-row work around a float64 ``exp``
that the caller runs with NumPy on a block of rows: Numba has no vectorised exp of its own
(without SVML it calls scalar libm), and a branch-free float64 one written here vectorised only
4 wide and lost to NumPy's. The float32 backward makes its exps itself with the gate kernels'
vectorised float32 exp, in one pass per row. Each works on the rows ``start .. start +
len(block)`` of the full arrays.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .rnn_kernels import _FAST, _exp_f32, _vectors_512

__all__ = ["xent_shift_rows", "xent_finish_rows", "xent_rows_f32", "log_softmax_rows_f32",
           "log_softmax_rows_backward_f32", "xent_grad_rows", "xent_grad_rows_f32",
           "sum_squares", "scatter_add_rows", "neg_abs", "sigmoid_finish", "sigmoid_backward", "tanh_backward"]


@numba.njit(cache=True, nogil=True)
def xent_shift_rows(logits, start, find_max, row_max, block):  # pragma: no cover - jit
    """block[r] = logits[i] - row_max[i] in float64 (exact for float32 logits), i = start + r.

    With ``find_max`` the row maximum is found here and stored in ``row_max`` first;
    otherwise ``row_max`` holds it already (NumPy's SIMD max is faster on long rows).
    """
    k, c = block.shape
    for r in range(k):
        i = start + r
        if find_max and c == 0:
            row_max[i] = -np.inf
        elif find_max:
            mx = logits[i, 0]  # typed as the storage dtype: the compare-select loop stays narrow
            for j in range(1, c):
                v = logits[i, j]
                mx = v if v > mx else mx
            row_max[i] = mx
        m = row_max[i]
        for j in range(c):
            block[r, j] = np.float64(logits[i, j]) - m


# reassoc only: lets the row sums vectorise (several partial sums), NaN/inf still propagate
@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def xent_finish_rows(exp_block, start, logits, targets, ignore_index, row_max, log_sum, loss):  # pragma: no cover - jit
    """Row i = start + r: log_sum[i] = log(sum(exp_block[r])) (exp_block holds exp(logits[i] - row_max[i]));
    loss[i] = (row_max[i] - logits[i, t_i]) + log_sum[i], or 0 where t_i == ignore_index.

    The loss adds the small log-sum last: max - z_t is exact, so tied logits of any magnitude
    (1e14 + log 2 would round) still give log(C) - as the logsumexp sum would not."""
    k, c = exp_block.shape
    for r in range(k):
        i = start + r
        s = 0.0
        for j in range(c):
            s += exp_block[r, j]
        _finish_row(i, math.log(s), logits, targets, ignore_index, row_max, log_sum, loss)


@numba.njit(cache=True, inline="always")
def _finish_row(i, ls, logits, targets, ignore_index, row_max, log_sum, loss):  # pragma: no cover - jit
    """Row i's log-sum and loss (0 where t_i == ignore_index), the log-sum added last (see above)."""
    log_sum[i] = ls
    t = targets[i]
    if t == ignore_index:
        loss[i] = 0.0
    else:
        loss[i] = (row_max[i] - logits[i, t]) + ls


# reassoc only: several float64 partial sums in SIMD lanes. A function of its own, not inlined by Numba:
# reassoc on the exp itself would fold away its round-to-integer step (exp off by up to 2x)
@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _sum_f64(a, n):  # pragma: no cover - jit
    s = 0.0
    for j in range(n):
        s += np.float64(a[j])
    return s


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def xent_rows_f32(logits, r0, r1, targets, ignore_index, row_max, log_sum, loss, tmp):  # pragma: no cover - jit
    """``xent_shift_rows`` + exp + ``xent_finish_rows`` for float32 logits in one pass per row, rows r0:r1,
    ``row_max`` given: log_sum[i] = log(sum_j exp(logits[i, j] - row_max[i])), each exp float32 by the gate
    kernels' vectorised exp (as the float32 backward makes them: the softmax it rebuilds sums to 1 to
    float32 rounding) and summed in float64; loss as in ``xent_finish_rows``. No float64 block, no
    separate exp pass over it. ``tmp`` is a float32 row of scratch: the exps go there first and are
    summed after, as two loops (one loop converting each exp to float64 for the sum ran 2x slower)."""
    _vectors_512()  # the exp loop 512 bits wide on AVX-512 (the float64 sum is its own function: unchanged)
    c = logits.shape[1]
    for i in range(r0, r1):
        m = np.float32(row_max[i])
        zrow = logits[i]
        for j in range(c):
            tmp[j] = _exp_f32(zrow[j] - m)
        _finish_row(i, math.log(_sum_f64(tmp, c)), logits, targets, ignore_index, row_max, log_sum, loss)


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def log_softmax_rows_f32(a, row_max, r0, r1, out):  # pragma: no cover - jit
    """out[i] = a[i] - row_max[i] - log(sum_j exp(a[i, j] - row_max[i])) for rows r0:r1 of float32 ``a``:
    the exps (the gate kernels' vectorised float32 exp) go to out[i] first, are summed in float64
    (``_sum_f64``), then out[i] is overwritten -- two passes over a row in cache, no temporaries."""
    _vectors_512()
    c = a.shape[1]
    for i in range(r0, r1):
        m = row_max[i]
        arow, orow = a[i], out[i]
        for j in range(c):
            orow[j] = _exp_f32(arow[j] - m)
        ls = np.float32(math.log(_sum_f64(orow, c)))
        for j in range(c):
            orow[j] = (arow[j] - m) - ls


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def log_softmax_rows_backward_f32(out, g, r0, r1, grad):  # pragma: no cover - jit
    """grad[i] = g[i] - exp(out[i]) * sum(g[i]) for rows r0:r1 (float32; the row sum in float64)."""
    c = out.shape[1]
    for i in range(r0, r1):
        s = np.float32(_sum_f64(g[i], c))
        orow, grow, drow = out[i], g[i], grad[i]
        for j in range(c):
            drow[j] = grow[j] - _exp_f32(orow[j]) * s


@numba.njit(cache=True, nogil=True)
def xent_grad_rows(block, start, log_sum, targets, ignore_index, grad_rows):  # pragma: no cover - jit
    """Row i = start + r of ``block`` holds exp(logits[i] - row_max[i]) on entry; it becomes
    (softmax(logits[i]) - onehot(t_i)) * grad_rows[i]: scaled by grad_rows[i] * exp(-log_sum[i])
    (in float64; 1/C <= exp(-log_sum) <= 1, so nothing overflows), then grad_rows[i] taken off
    at t_i; all zero where t_i == ignore_index.

    Softmax is rebuilt from the max and the log-sum kept apart, never from their sum (the
    log-sum-exp): that sum rounds away log(C) once |max| ~ 1e14 and the gradient went wrong."""
    k, c = block.shape
    for r in range(k):
        i = start + r
        t = targets[i]
        if t == ignore_index:
            for j in range(c):
                block[r, j] = 0.0
            continue
        g = grad_rows[i]
        scale = g * math.exp(-log_sum[i])
        for j in range(c):
            block[r, j] = block[r, j] * scale
        block[r, t] -= g


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def xent_grad_rows_f32(logits, r0, r1, row_max, log_sum, targets, ignore_index, grad_rows, out):  # pragma: no cover - jit
    """``xent_grad_rows`` for float32 logits in one pass per row, rows r0:r1: out[i] = exp(logits[i] -
    row_max[i]) (float32, as NumPy's exp of the float32 difference, by the vectorised exp of the gate
    kernels) * grad_rows[i] * exp(-log_sum[i]) (made in float64, applied in float32), grad_rows[i] taken off at t_i, zero where
    t_i == ignore_index -- no subtract, exp and scale passes over a block."""
    c = logits.shape[1]
    for i in range(r0, r1):
        t = targets[i]
        orow = out[i]
        if t == ignore_index:
            for j in range(c):
                orow[j] = 0.0
            continue
        g = grad_rows[i]
        # the row's scale rounded to float32 once: a float64 product per element ran 2x slower
        scale = np.float32(g * math.exp(-log_sum[i]))
        m = np.float32(row_max[i])
        zrow = logits[i]
        for j in range(c):
            orow[j] = _exp_f32(zrow[j] - m) * scale
        orow[t] -= g


# reassoc only: several partial sums in SIMD lanes; the float64 accumulation is what makes it accurate
@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def sum_squares(a):  # pragma: no cover - jit
    """sum(a[i]**2) accumulated in float64 over a flat array of any float dtype (gradient-norm clipping):
    one read of ``a``, no float64 copy of it."""
    s = 0.0
    for i in range(a.size):
        v = np.float64(a[i])
        s += v * v
    return s


@numba.njit(cache=True, nogil=True)
def scatter_add_rows(out, idx, src):  # pragma: no cover - jit
    """out[idx[n], :] += src[n, :] for every n, duplicates accumulating (embedding backward).

    Negative ids count from the end, as in NumPy. Returns -1, or the position n of the first id
    outside the rows of ``out``: then nothing is written from that row on, and the caller raises.
    The check is one compare per row, so no caller can make this kernel write out of bounds.
    """
    n, d = src.shape
    rows = out.shape[0]
    for r in range(n):
        k = idx[r]
        if k < 0:
            k += rows
        if k < 0 or k >= rows:
            return r
        for j in range(d):
            out[k, j] += src[r, j]
    return -1


# -- activations (the op-by-op engine's Sigmoid/Tanh): one pass where NumPy needs two or three more.
# Same operations in the same order and dtype as the NumPy formulas they replace, so the same bits;
# ``one`` comes typed as the arrays' dtype (a Python 1 would promote float32 math to float64).
# error_model="numpy": a float division without Python's zero check, so the loops vectorise.
# Arguments are C-contiguous arrays of one shape (the caller checks); the loops run over flat views.
# Each writes into an array its caller made with np.empty_like: a kernel returning a new array costs
# more (boxing it calls back into Python).

@numba.njit(cache=True, nogil=True, error_model="numpy")
def neg_abs(a, out):  # pragma: no cover - jit
    """out = -|a| (NaN keeps its payload with the sign set, as np.negative(np.abs(a)))."""
    n = a.size
    af, of = a.reshape(n), out.reshape(n)
    for i in range(n):
        of[i] = -abs(af[i])


@numba.njit(cache=True, nogil=True, error_model="numpy")
def sigmoid_finish(a, e, one):  # pragma: no cover - jit
    """e = (1 if a >= 0 else e) / (e + 1) in place, e holding exp(-|a|): NaN where a is NaN."""
    n = a.size
    af, ef = a.reshape(n), e.reshape(n)
    for i in range(n):
        x = ef[i]
        ef[i] = (one if af[i] >= 0 else x) / (x + one)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def sigmoid_backward(y, g, out, one):  # pragma: no cover - jit
    """out = (g * y) * (1 - y)."""
    n = y.size
    yf, gf, of = y.reshape(n), g.reshape(n), out.reshape(n)
    for i in range(n):
        v = yf[i]
        of[i] = (gf[i] * v) * (one - v)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def tanh_backward(y, g, out, one):  # pragma: no cover - jit
    """out = (1 - y * y) * g."""
    n = y.size
    yf, gf, of = y.reshape(n), g.reshape(n), out.reshape(n)
    for i in range(n):
        v = yf[i]
        of[i] = (one - v * v) * gf[i]
