"""Elementwise ops (binary ones broadcast as NumPy does), casts, the device move and ``where``."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Backend
from ..dtypes import _FLOATS
from ..tensor import Function, Tensor, is_grad_enabled
from ._broadcast import sum_to_shape

# ---------------------------------------------------------------------------------------
# binary (broadcasting)


class Add(Function):
    saves_inputs = False

    def forward(self, a, b):
        self.sa, self.sb = a.shape, b.shape
        return a + b

    def backward(self, g):
        na, nb = self.needs
        sa, sb, gs = self.sa, self.sb, g.shape
        # (the shape tests inline: equal shapes, the common case, need no sum_to_shape call)
        return (None if not na else g if gs == sa else sum_to_shape(self.xp, g, sa),
                None if not nb else g if gs == sb else sum_to_shape(self.xp, g, sb))


class Sub(Function):
    saves_inputs = False

    def forward(self, a, b):
        self.sa, self.sb = a.shape, b.shape
        return a - b

    def backward(self, g):
        na, nb = self.needs
        sa, sb, gs = self.sa, self.sb, g.shape
        return (None if not na else g if gs == sa else sum_to_shape(self.xp, g, sa),
                None if not nb else -g if gs == sb else sum_to_shape(self.xp, -g, sb))


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        na, nb = self.needs
        a, b = self.a, self.b
        ga = gb = None
        if na:
            ga = g * b
            if ga.shape != a.shape:
                ga = sum_to_shape(self.xp, ga, a.shape)
        if nb:
            gb = g * a
            if gb.shape != b.shape:
                gb = sum_to_shape(self.xp, gb, b.shape)
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        gb = g / self.b
        return (sum_to_shape(self.xp, gb, self.a.shape) if self.needs[0] else None,
                sum_to_shape(self.xp, -gb * self.a / self.b, self.b.shape) if self.needs[1] else None)


class Pow(Function):
    """a ** b with both differentiable; d/db = a**b * log(a). PyTorch's conventions where the
    formulas are 0 * inf: the gradient for ``a`` is 0 where b == 0, the one for ``b`` is 0 where
    a == 0 and b >= 0."""

    saves_outputs = True

    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = a ** b
        return self.out

    def backward(self, g):
        xp, a, b = self.xp, self.a, self.b
        zero = xp.zeros((), dtype=g.dtype)
        ga = gb = None
        with np.errstate(divide="ignore", invalid="ignore"):  # the masked entries may be 0 * inf
            if self.needs[0]:
                ga = sum_to_shape(xp, xp.where(b == 0, zero, g * b * a ** (b - 1)), a.shape)
            if self.needs[1]:
                gb = sum_to_shape(xp, g * xp.where((a == 0) & (b >= 0), zero, self.out * xp.log(a)), b.shape)
        return ga, gb


class PowScalar(Function):
    """a ** p for a number p; the gradient is 0 for p == 0 (PyTorch's rule, also at a == 0)."""

    def forward(self, a, p):
        self.a, self.p = a, p
        return a ** p

    def backward(self, g):
        if self.p == 0:
            return self.xp.zeros_like(g)
        return g * (self.p * self.a ** (self.p - 1))


class Sqrt(Function):
    saves_inputs, saves_outputs = False, True

    def forward(self, a):
        self.out = self.xp.sqrt(a)
        return self.out

    def backward(self, g):
        return g / (2 * self.out)


class _Extremum(Function):
    """Elementwise maximum/minimum with PyTorch's gradient: a tie sends half to each side, NaN
    (which both propagate) sends the whole gradient to both."""

    saves_inputs = False  # keeps comparison masks of its own
    pick: Any = None

    def forward(self, a, b):
        self.sa, self.sb = a.shape, b.shape
        self.tie = a == b
        # "a loses" / "b loses": where the other side is strictly better
        self.a_loses, self.b_loses = (a < b, b < a) if self.pick is np.maximum else (a > b, b > a)
        return type(self).pick(a, b)

    def backward(self, g):
        xp = self.xp
        zero = xp.zeros((), dtype=g.dtype)
        half = xp.where(self.tie, g / 2, g)
        return (sum_to_shape(xp, xp.where(self.a_loses, zero, half), self.sa) if self.needs[0] else None,
                sum_to_shape(xp, xp.where(self.b_loses, zero, half), self.sb) if self.needs[1] else None)


class Maximum(_Extremum):
    pick = np.maximum


class Minimum(_Extremum):
    pick = np.minimum


class Clamp(Function):
    """Clip to [lo, hi] (either may be None); the gradient passes where lo <= a <= hi (PyTorch's
    rule: a value at a bound keeps its gradient; with lo > hi every entry is hi and gets none)."""

    saves_inputs = False

    def forward(self, a, lo, hi):
        xp = self.xp
        out = a
        keep = None
        if lo is not None:
            keep = a >= lo
            out = xp.maximum(out, xp.asarray(lo, dtype=a.dtype))
        if hi is not None:
            keep = (a <= hi) if keep is None else keep & (a <= hi)
            out = xp.minimum(out, xp.asarray(hi, dtype=a.dtype))
        self.keep = keep
        return out.copy() if out is a else out

    def backward(self, g):
        return g * self.keep


class Where(Function):
    saves_inputs = False  # keeps its own copy of the condition

    def forward(self, a, b, cond):
        self.cond, self.sa, self.sb = cond, a.shape, b.shape
        return self.xp.where(cond, a, b)

    def backward(self, g):
        xp = self.xp
        zero = xp.zeros((), dtype=g.dtype)
        return (sum_to_shape(xp, xp.where(self.cond, g, zero), self.sa) if self.needs[0] else None,
                sum_to_shape(xp, xp.where(self.cond, zero, g), self.sb) if self.needs[1] else None)


# ---------------------------------------------------------------------------------------
# unary


class Neg(Function):
    saves_inputs = False

    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class Identity(Function):
    saves_inputs = False

    def forward(self, a):
        return a.copy()

    def backward(self, g):
        return g


class Exp(Function):
    saves_inputs, saves_outputs = False, True

    def forward(self, a):
        self.out = self.xp.exp(a)
        return self.out

    def backward(self, g):
        return g * self.out


class Log(Function):
    def forward(self, a):
        self.a = a
        return self.xp.log(a)

    def backward(self, g):
        return g / self.a


class Tanh(Function):
    saves_inputs, saves_outputs = False, True

    def forward(self, a):
        self.out = self.xp.tanh(a)
        return self.out

    def backward(self, g):
        return self.be.tanh_backward(self.out, g)


class Sigmoid(Function):
    saves_inputs, saves_outputs = False, True

    def forward(self, a):
        self.out = self.be.sigmoid(a)  # exact at NaN, +-inf, +-0; no overflow (Backend.sigmoid)
        return self.out

    def backward(self, g):
        return self.be.sigmoid_backward(self.out, g)


class Relu(Function):
    saves_inputs = False  # keeps a mask of its own

    def forward(self, a):
        # PyTorch's masks: the gradient is dropped where a <= 0, so it passes through a NaN
        self.mask = ~(a <= 0)
        # maximum, not a * mask: relu(-inf) is 0 and relu(nan) is nan, as in PyTorch
        return self.xp.maximum(a, self.xp.zeros((), dtype=a.dtype))

    def backward(self, g):
        return g * self.mask


class Abs(Function):
    saves_inputs = False  # keeps the signs

    def forward(self, a):
        # sign with 0 at NaN (PyTorch's gradient of abs there), not NumPy's sign(nan) = nan
        self.sign = (a > 0).astype(a.dtype) - (a < 0).astype(a.dtype) if a.dtype.kind == "f" else self.xp.sign(a)
        return self.xp.abs(a)

    def backward(self, g):
        return g * self.sign


class Cast(Function):
    saves_inputs = False

    def forward(self, a, dtype):
        self.src = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return g.astype(self.src) if self.src in _FLOATS else None


class ToDevice(Function):
    """Move values between backends; the gradient moves back the other way."""

    @classmethod
    def apply(cls, t: Tensor, backend: Backend) -> Tensor:  # type: ignore[override]
        ctx = cls()
        ctx.src, ctx.dst = t._be, backend
        host = t._be.to_host(t._data)
        arr = backend.from_host(host, copy=True)
        if not (is_grad_enabled() and t.requires_grad):
            return Tensor._make(arr, backend, False, None, 0)
        ctx.be, ctx.xp, ctx.needs, ctx.parents = t._be, t._be.xp, (True,), (t,)
        return Tensor._make(arr, backend, True, ctx, 0)

    def backward(self, g):
        return self.src.from_host(self.dst.to_host(g), copy=True)
