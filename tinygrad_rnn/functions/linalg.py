"""Matrix products: ``MatMul`` (NumPy's ``@``) and ``Linear`` (``x @ w.T + bias``), both over one GEMM helper.

A stacked ``x`` (..., K) times a plain matrix runs as one (prod(...), K) GEMM: NumPy would loop one
GEMM per batch entry, and the matrix's gradient would materialise a (..., K, N) stack before summing
it (160 MB for a word LM's output projection).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import precision
from ..tensor import Function
from ._broadcast import sum_to_shape


def _rows(a: Any) -> Any:
    """``a`` (..., K) as a (rows, K) matrix: a view when ``a`` allows it (explicit row count, so K = 0 works)."""
    return a.reshape(int(np.prod(a.shape[:-1])), a.shape[-1])


def _gemm(be: Any, x: Any, wt: Any, bias: Any = None) -> Any:
    """``x (..., K) @ wt (K, N) [+ bias]`` as one GEMM over all of ``x``'s leading dims."""
    return be.mm(_rows(x), wt, bias).reshape(x.shape[:-1] + wt.shape[-1:])


def _gemm_backward(be: Any, g: Any, x: Any, wt: Any, need_x: bool, need_w: bool, w_out_in: bool) -> tuple[Any, Any]:
    """The gradients of :func:`_gemm` for ``x`` and the matrix; with ``w_out_in`` the matrix's one is
    given in the (N, K) layout of a ``Linear`` weight (``g.T @ x``: no transposed copy for the optimizer)."""
    g2 = _rows(g)
    if need_x and need_w:
        g2 = be.mm_operand(g2)  # an operand of both products: made ready once (rounded once under autocast)
    gx = be.mm(g2, wt.T).reshape(x.shape) if need_x else None
    gw = None
    if need_w:
        gw = be.mm(g2.T, _rows(x)) if w_out_in else be.mm(_rows(x).T, g2)
    return gx, gw


class MatMul(Function):
    """a @ b for a.ndim, b.ndim >= 2, batch dimensions broadcast as in NumPy; a plain matrix ``b``
    takes the one-GEMM path (the same as ``Linear`` with the weight transposed)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        self.bf16 = precision.bf16_active()  # autocast: backward multiplies as forward did
        return _gemm(self.be, a, b) if b.ndim == 2 else a @ b

    def backward(self, g):
        xp, a, b = self.xp, self.a, self.b
        if b.ndim == 2:
            with precision.using(self.bf16):
                return _gemm_backward(self.be, g, a, b, self.needs[0], self.needs[1], w_out_in=False)
        ga = sum_to_shape(xp, g @ xp.swapaxes(b, -1, -2), a.shape) if self.needs[0] else None
        gb = sum_to_shape(xp, xp.swapaxes(a, -1, -2) @ g, b.shape) if self.needs[1] else None
        return ga, gb


class Linear(Function):
    """``x @ w.T + bias`` for x (..., in), w (out, in), bias (out,) or absent: the layer as one GEMM.

    Forward is one (rows, in) x (in, out) GEMM with the bias added in place; backward gives
    w's gradient directly in w's (out, in) layout and the bias gradient as one column sum.
    """

    fresh_grads = True  # three GEMM/sum results, each a new array

    def forward(self, x, w, bias=None):
        self.x, self.w = x, w
        self.bf16 = precision.bf16_active()
        return _gemm(self.be, x, w.T, bias)

    def backward(self, g):
        with precision.using(self.bf16):
            gx, gw = _gemm_backward(self.be, g, self.x, self.w.T, self.needs[0], self.needs[1], w_out_in=True)
        if len(self.needs) == 2:
            return gx, gw
        return gx, gw, (_rows(g).sum(axis=0) if self.needs[2] else None)
