"""Numba kernels of the CPU backend.

Plain top-level functions with ``cache=True`` so the compiled code is reused across
processes (closures and nested functions cannot be cached). Each kernel writes into
arrays its caller allocated; shapes and ranges are validated by the caller, not here.
Accumulations run in float64 whatever the storage dtype.
"""
from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["softmax_xent_forward", "softmax_xent_backward", "scatter_add_rows"]


@numba.njit(cache=True, nogil=True)
def softmax_xent_forward(logits, targets, ignore_index, loss_out, lse_out):  # pragma: no cover - jit
    """Per row: lse = logsumexp(logits[i]); loss = lse - logits[i, t] (0 where t is ignored)."""
    n, c = logits.shape
    for i in range(n):
        m = -np.inf
        for j in range(c):
            v = logits[i, j]
            if v > m:
                m = v
        s = 0.0
        for j in range(c):
            s += math.exp(logits[i, j] - m)
        lse = m + math.log(s)
        lse_out[i] = lse
        t = targets[i]
        if t == ignore_index:
            loss_out[i] = 0.0
        else:
            loss_out[i] = lse - logits[i, t]


@numba.njit(cache=True, nogil=True)
def softmax_xent_backward(logits, lse, targets, ignore_index, grad_rows, out):  # pragma: no cover - jit
    """d loss_i / d logits[i] = (softmax(logits[i]) - onehot(t_i)) * grad_rows[i]."""
    n, c = logits.shape
    for i in range(n):
        t = targets[i]
        if t == ignore_index:
            for j in range(c):
                out[i, j] = 0.0
            continue
        g = grad_rows[i]
        li = lse[i]
        for j in range(c):
            out[i, j] = math.exp(logits[i, j] - li) * g
        out[i, t] -= g


@numba.njit(cache=True, nogil=True)
def scatter_add_rows(out, idx, src):  # pragma: no cover - jit
    """out[idx[n], :] += src[n, :] for every n, duplicates accumulating (embedding backward)."""
    n, d = src.shape
    for r in range(n):
        k = idx[r]
        for j in range(d):
            out[k, j] += src[r, j]
