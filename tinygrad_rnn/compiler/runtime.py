"""What generated cell kernels import: scalar helpers and the in-kernel matrix products.

The products go to BLAS through the same extern as the built-in layers' time loop
(``backend/blas.py``); without a bound CBLAS they are plain loops. The activations are the
built-in kernels' own (``backend/rnn_kernels.py``: libm in float64, vectorised in float32).
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ..backend.blas import gemm, gemm_packed
from ..backend.rnn_kernels import _select, _sigmoid, _tanh

__all__ = ["mm", "mmp", "_rowsum", "_select", "_sigmoid", "_tanh", "_relu", "_sign", "_maximum", "_minimum", "math"]

_FAST = {"contract", "nsz"}


@numba.njit(cache=True, inline="always", fastmath=_FAST, error_model="numpy")
def _relu(a, zero):  # pragma: no cover - jit
    # max(a, 0) with NaN kept, as np.maximum
    return _select(a > zero, a, _select(a != a, a, zero))


@numba.njit(cache=True, inline="always", fastmath=_FAST, error_model="numpy")
def _sign(a, zero, one):  # pragma: no cover - jit
    """1, -1, or 0 at 0 and NaN (the gradient of abs, as PyTorch's)."""
    return _select(a > zero, one, _select(a < zero, -one, zero))


@numba.njit(cache=True, inline="always", fastmath=_FAST, error_model="numpy")
def _maximum(a, b):  # pragma: no cover - jit
    # np.maximum: NaN from either side propagates
    return _select(a != a, a, _select(b != b, b, _select(a >= b, a, b)))


@numba.njit(cache=True, inline="always", fastmath=_FAST, error_model="numpy")
def _minimum(a, b):  # pragma: no cover - jit
    return _select(a != a, a, _select(b != b, b, _select(a <= b, a, b)))


@numba.njit(cache=True, fastmath={"reassoc", "contract", "nsz"}, error_model="numpy")
def _rowsum(row, w, zero):  # pragma: no cover - jit
    """row[0] + ... + row[w-1] in vector lanes (reassociated: a different rounding order than a
    sequential sum, as NumPy's pairwise sum is). Called, not inlined, so that only this loop is
    reassociated."""
    acc = zero
    for j in range(w):
        acc += row[j]
    return acc


@numba.njit(cache=True, inline="always")
def _plain_mm(a, w, c, trans, beta):  # pragma: no cover - jit
    """c = a @ (w.T if trans else w) + beta * c in loops (no BLAS bound)."""
    m, n = c.shape
    k = a.shape[1]
    zero = np.zeros(1, dtype=c.dtype)[0]  # beta 0: c is not read (it may hold anything, NaN included)
    for i in range(m):
        for j in range(n):
            acc = c[i, j] * beta if beta != 0 else zero
            for q in range(k):
                acc += a[i, q] * (w[j, q] if trans else w[q, j])
            c[i, j] = acc


# mm/mmp are called, not inlined: an inlined branch trips Numba's SSA check (as in rnn_kernels.py), and a
# call per product per step costs nothing next to the product
@numba.njit(cache=True, nogil=True)
def mm(a, w, c, trans, beta, use_blas):  # pragma: no cover - jit
    """c = a @ op(w) + beta * c, op(w) = w.T when ``trans``; all 2-D C-contiguous."""
    if use_blas:
        gemm(a, w, c, False, trans, beta)
    else:
        _plain_mm(a, w, c, trans, beta)



@numba.njit(cache=True, nogil=True)
def mmp(a, w, packed, c, trans, beta, use_blas):  # pragma: no cover - jit
    """``mm`` with op(w) packed once per pass by oneMKL (``blas.pack_b``) when ``packed`` is not empty:
    the weight is the same at every step, so it is not packed again inside every step's GEMM."""
    if use_blas and packed.size:
        gemm_packed(a, packed, c, beta)
    else:
        mm(a, w, c, trans, beta, use_blas)
