"""The primitive ops: each a ``Function`` with its forward and its local derivative side by side.

Arrays come from the inputs' backend (``self.xp`` is numpy or cupy), so each body is written
once. Broadcasting follows NumPy; every broadcasting op's backward reduces its gradient to
the input's shape with ``sum_to_shape``. The ``Tensor`` operators and methods that use these
ops are attached at the bottom of this file.

    >>> import tinygrad_rnn as tr
    >>> (tr.tensor([[1.0, 2.0]]) @ tr.tensor([[3.0], [4.0]])).item()
    11.0
"""
from __future__ import annotations

from collections import namedtuple
from typing import Any, Sequence

import numpy as np

from .backend import Backend
from .tensor import _FLOATS, Function, Tensor, _as_dtype, is_grad_enabled

__all__ = ["cat", "stack", "split", "chunk", "where", "sum_to_shape", "matmul", "clamp", "clip", "maximum", "minimum",
           "amax", "amin"]


def sum_to_shape(xp: Any, g: Any, shape: tuple[int, ...]) -> Any:
    """Reduce a broadcast gradient ``g`` back to ``shape`` (the one unbroadcast step of every op)."""
    if tuple(g.shape) == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    if lead > 0:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


# ---------------------------------------------------------------------------------------
# elementwise, binary (broadcasting)


class Add(Function):
    saves_inputs = False

    def forward(self, a, b):
        self.sa, self.sb = a.shape, b.shape
        return a + b

    def backward(self, g):
        return (sum_to_shape(self.xp, g, self.sa) if self.needs[0] else None,
                sum_to_shape(self.xp, g, self.sb) if self.needs[1] else None)


class Sub(Function):
    saves_inputs = False

    def forward(self, a, b):
        self.sa, self.sb = a.shape, b.shape
        return a - b

    def backward(self, g):
        return (sum_to_shape(self.xp, g, self.sa) if self.needs[0] else None,
                sum_to_shape(self.xp, -g, self.sb) if self.needs[1] else None)


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return (sum_to_shape(self.xp, g * self.b, self.a.shape) if self.needs[0] else None,
                sum_to_shape(self.xp, g * self.a, self.b.shape) if self.needs[1] else None)


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


# ---------------------------------------------------------------------------------------
# elementwise, unary


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
        return g * (1 - self.out * self.out)


class Sigmoid(Function):
    saves_inputs, saves_outputs = False, True

    def forward(self, a):
        xp = self.xp
        # exp of a negative number only: 1/(1+exp(-a)) overflows for very negative a
        e = xp.exp(-xp.abs(a))
        self.out = xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        return self.out

    def backward(self, g):
        return g * self.out * (1 - self.out)


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
        from .tensor import is_grad_enabled

        ctx = cls()
        ctx.src, ctx.dst = t._be, backend
        host = t._be.to_host(t.data)
        arr = backend.from_host(host) if backend.name != "cpu" else np.array(host, copy=True)
        if not (is_grad_enabled() and t.requires_grad):
            return Tensor._make(arr, backend, False, None, 0)
        ctx.be, ctx.xp, ctx.needs, ctx.parents = t._be, t._be.xp, (True,), (t,)
        return Tensor._make(arr, backend, True, ctx, 0)

    def backward(self, g):
        host = self.dst.to_host(g)
        return self.src.from_host(host) if self.src.name != "cpu" else np.array(host, copy=True)


# ---------------------------------------------------------------------------------------
# matrix product


class MatMul(Function):
    """a @ b for a.ndim, b.ndim >= 2, batch dimensions broadcast as in NumPy.

    A stacked ``a`` (..., M, K) times a plain matrix ``b`` (K, N) runs as one (prod(...)*M, K)
    GEMM: NumPy would loop one GEMM per batch entry, and ``b``'s gradient would materialise a
    (..., K, N) stack before summing it (160 MB for a word LM's output projection).
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        if a.ndim > 2 and b.ndim == 2:
            return self.be.mm(_rows(a), b).reshape(a.shape[:-1] + b.shape[-1:])
        return self.be.mm(a, b) if a.ndim == b.ndim == 2 else a @ b

    def backward(self, g):
        xp = self.xp
        a, b = self.a, self.b
        ga = gb = None
        if a.ndim > 2 and b.ndim == 2:
            g2 = _rows(g)
            if self.needs[0]:
                ga = self.be.mm(g2, b.T).reshape(a.shape)
            if self.needs[1]:
                gb = self.be.mm(_rows(a).T, g2)
            return ga, gb
        if a.ndim == b.ndim == 2:
            return (self.be.mm(g, b.T) if self.needs[0] else None), (self.be.mm(a.T, g) if self.needs[1] else None)
        if self.needs[0]:
            ga = sum_to_shape(xp, g @ xp.swapaxes(b, -1, -2), a.shape)
        if self.needs[1]:
            gb = sum_to_shape(xp, xp.swapaxes(a, -1, -2) @ g, b.shape)
        return ga, gb


def _rows(a: Any) -> Any:
    """``a`` (..., K) as a (rows, K) matrix: a view when ``a`` allows it (explicit row count, so K = 0 works)."""
    return a.reshape(int(np.prod(a.shape[:-1])), a.shape[-1])


class Linear(Function):
    """``x @ w.T + bias`` for x (..., in), w (out, in), bias (out,) or absent: the layer as one GEMM.

    Forward is one (rows, in) x (in, out) GEMM with the bias added in place; backward gives
    w's gradient directly in w's (out, in) layout (``g.T @ x``, no transposed copy for the
    optimizer to make contiguous) and the bias gradient as one column sum.
    """

    fresh_grads = True  # three GEMM/sum results, each a new array
    def forward(self, x, w, bias=None):
        self.x, self.w = x, w
        out = self.be.mm(_rows(x), w.T, bias)
        return out.reshape(x.shape[:-1] + w.shape[:1])

    def backward(self, g):
        g2 = _rows(g)
        gx = self.be.mm(g2, self.w).reshape(self.x.shape) if self.needs[0] else None
        gw = self.be.mm(g2.T, _rows(self.x)) if self.needs[1] else None
        if len(self.needs) == 2:
            return gx, gw
        return gx, gw, (g2.sum(axis=0) if self.needs[2] else None)


# ---------------------------------------------------------------------------------------
# reductions


class Sum(Function):
    saves_inputs = False

    def forward(self, a, axis, keepdims):
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        return a.sum(axis=axis, keepdims=keepdims)

    def backward(self, g):
        if not self.keepdims and self.axis is not None:
            g = self.xp.expand_dims(g, self.axis)
        return self.xp.broadcast_to(g, self.shape)


class Mean(Function):
    saves_inputs = False

    def forward(self, a, axis, keepdims):
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        n = a.size if axis is None else int(np.prod([a.shape[i] for i in axis]))
        self.scale = 1.0 / max(n, 1)
        return a.mean(axis=axis, keepdims=keepdims)

    def backward(self, g):
        if not self.keepdims and self.axis is not None:
            g = self.xp.expand_dims(g, self.axis)
        return self.xp.broadcast_to(g * self.scale, self.shape)


class Max(Function):
    """Max over axes; ties share the gradient equally (a subgradient, as in PyTorch's max() and amax())."""

    saves_inputs = False  # keeps the mask of maxima

    def forward(self, a, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims
        m = a.max(axis=axis, keepdims=True)
        self.mask = a == m
        return m if keepdims else (m.reshape(()) if axis is None else m.squeeze(axis))

    def backward(self, g):
        if not self.keepdims and self.axis is not None:
            g = self.xp.expand_dims(g, self.axis)
        count = self.mask.sum(axis=self.axis, keepdims=True)
        return self.mask * (g / count)


class MaxDim(Function):
    """``max(dim)``/``min(dim)`` values: the gradient goes to the index returned (PyTorch's rule for
    the indexed forms; ties are not split as in ``max()``). ``pick`` is argmax or argmin."""

    saves_inputs = False  # keeps the indices

    def forward(self, a, axis, keepdims, pick):
        xp = self.xp
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        self.idx = xp.expand_dims(pick(a, axis=axis), axis)
        v = xp.take_along_axis(a, self.idx, axis=axis)
        return v if keepdims else v.squeeze(axis)

    def backward(self, g):
        xp = self.xp
        if not self.keepdims:
            g = xp.expand_dims(g, self.axis)
        pos = xp.arange(self.shape[self.axis]).reshape((-1,) + (1,) * (len(self.shape) - 1 - self.axis))
        return xp.where(pos == self.idx, g, xp.zeros((), dtype=g.dtype))


# ---------------------------------------------------------------------------------------
# shape


class Reshape(Function):
    saves_inputs, is_view = False, True

    def forward(self, a, shape):
        self.src = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return g.reshape(self.src)


class Permute(Function):
    saves_inputs, is_view = False, True

    def forward(self, a, axes):
        self.inv = tuple(np.argsort(axes))
        return a.transpose(axes)

    def backward(self, g):
        return g.transpose(self.inv)


class Expand(Function):
    saves_inputs, is_view = False, True

    def forward(self, a, shape):
        self.src = a.shape
        return self.xp.broadcast_to(a, shape)

    def backward(self, g):
        return sum_to_shape(self.xp, g, self.src)


class GetItem(Function):
    saves_inputs, is_view = False, True  # basic slicing is a view

    def forward(self, a, index, advanced):
        self.src, self.dtype, self.index, self.advanced = a.shape, a.dtype, index, advanced
        return a[index]

    def backward(self, g):
        xp = self.xp
        idx = self.index
        if not self.advanced:
            out = xp.zeros(self.src, dtype=self.dtype)
            out[idx] = g
            return out
        if len(self.src) == 2 and not isinstance(idx, tuple) and idx.dtype != np.bool_:
            # rows gathered by one integer array: the embedding-style fused scatter-add
            return self.be.scatter_add_rows(self.src[0], idx.reshape(-1), g.reshape(-1, self.src[1]))
        out = xp.zeros(self.src, dtype=self.dtype)
        self.be.index_add(out, idx, g)
        return out


class Cat(Function):
    saves_inputs = False

    def forward(self, *arrays, axis):
        self.axis = axis
        self.bounds = np.cumsum([a.shape[axis] for a in arrays])[:-1].tolist()
        return self.xp.concatenate(arrays, axis=axis)

    def backward(self, g):
        parts = self.xp.split(g, self.bounds, axis=self.axis)
        return tuple(p if need else None for p, need in zip(parts, self.needs))


class Stack(Function):
    saves_inputs = False

    def forward(self, *arrays, axis):
        self.axis = axis
        return self.xp.stack(arrays, axis=axis)

    def backward(self, g):
        return tuple(self.xp.take(g, i, axis=self.axis) if need else None for i, need in enumerate(self.needs))


class Split(Function):
    saves_inputs, is_view = False, True

    def forward(self, a, sizes, axis):
        self.axis = axis
        bounds = np.cumsum(sizes)[:-1].tolist()
        return tuple(self.xp.split(a, bounds, axis=axis))

    def backward(self, *gs):
        return self.xp.concatenate(gs, axis=self.axis)


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
# softmax family


class Softmax(Function):
    saves_inputs, saves_outputs = False, True

    def forward(self, a, axis):
        xp = self.xp
        self.axis = axis
        if a.size == 0:  # an empty axis (or batch): nothing to normalise, and max() would raise
            self.out = a.copy()
            return self.out
        e = xp.exp(a - a.max(axis=axis, keepdims=True))
        self.out = e / e.sum(axis=axis, keepdims=True)
        self.axis = axis
        return self.out

    def backward(self, g):
        y = self.out
        return y * (g - (g * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    saves_inputs, saves_outputs = False, True

    def forward(self, a, axis):
        xp = self.xp
        self.axis = axis
        if a.size == 0:
            self.out = a.copy()
            return self.out
        shifted = a - a.max(axis=axis, keepdims=True)
        self.out = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        self.axis = axis
        return self.out

    def backward(self, g):
        return g - self.xp.exp(self.out) * g.sum(axis=self.axis, keepdims=True)


# ---------------------------------------------------------------------------------------
# helpers for the Tensor surface


def _axes(ndim: int, dim: Any, axis: Any, what: str) -> tuple[int, ...] | None:
    if dim is not None and axis is not None:
        raise ValueError(f"{what}: give dim= or axis=, not both")
    d = dim if dim is not None else axis
    if d is None:
        return None
    ds = (d,) if isinstance(d, (int, np.integer)) else tuple(d)
    out = []
    for x in ds:
        if not isinstance(x, (int, np.integer)):
            raise TypeError(f"{what}: dim must be an int or a tuple of ints, got {d!r}")
        if not -max(ndim, 1) <= x < max(ndim, 1):
            raise ValueError(f"{what}: dim {x} is out of range for a tensor with {ndim} dimensions")
        out.append(int(x) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{what}: repeated dim in {d!r}")
    return tuple(out)


def _one_axis(ndim: int, dim: Any, what: str) -> int:
    ax = _axes(ndim, dim, None, what)
    if ax is None or len(ax) != 1:
        raise ValueError(f"{what}: expected a single dim, got {dim!r}")
    return ax[0]


def _keep(keepdim: bool | None, keepdims: bool | None) -> bool:
    if keepdim is not None and keepdims is not None:
        raise ValueError("give keepdim= or keepdims=, not both")
    return bool(keepdim if keepdim is not None else (keepdims or False))


def _promote(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """NumPy's float rule: float32 with float64 computes in float64 (the cast is differentiable)."""
    if a.dtype == b.dtype:
        return a, b
    fa, fb = a.dtype in _FLOATS, b.dtype in _FLOATS
    if fa and fb:
        return (a.to(np.float64), b) if b.dtype == np.float64 else (a, b.to(np.float64))
    if fa:
        return a, Tensor._make(b.data.astype(a.dtype), b._be, False, None, 0)
    if fb:
        return Tensor._make(a.data.astype(b.dtype), a._be, False, None, 0), b
    return a, b


def _as_operand(a: Tensor, b: Any, op: str) -> Tensor:
    """Turn the other operand of a binary op into a Tensor on ``a``'s device."""
    if isinstance(b, Tensor):
        if b._be is not a._be:
            raise ValueError(f"{op}: tensors on different devices ({a.device} and {b.device}); move one with .to()")
        return b
    if isinstance(b, (bool, int, float, np.number)):
        # a Python/NumPy scalar takes the tensor's float dtype, as in PyTorch
        dt = a.dtype if a.dtype in _FLOATS else np.result_type(a.dtype, type(b) if not isinstance(b, np.number) else b.dtype)
        return Tensor._make(a._be.xp.asarray(b, dtype=dt), a._be, False, None, 0)
    if isinstance(b, (np.ndarray, list, tuple)) or type(b).__module__.startswith("cupy"):
        arr = np.asarray(b) if not type(b).__module__.startswith("cupy") else b
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"{op}: unsupported array dtype {arr.dtype}")
        if isinstance(b, (list, tuple)) and arr.dtype.kind == "f" and a.dtype in _FLOATS:
            arr = arr.astype(a.dtype)
        return Tensor(arr, device=a.device)
    raise TypeError(f"{op}: unsupported operand type {type(b).__name__}")


def _check_broadcast(a: Tensor, b: Tensor, op: str) -> None:
    if a.shape != b.shape:
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise ValueError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast together") from None


def _binary(fn: type[Function], op: str, reverse: bool = False):
    def method(self: Tensor, other: Any) -> Tensor:
        a, o = _promote(self, _as_operand(self, other, op))
        _check_broadcast(a, o, op)
        return fn.apply(o, a) if reverse else fn.apply(a, o)

    method.__name__ = op
    return method


def _pow(self: Tensor, p: Any) -> Tensor:
    if isinstance(p, (int, float, np.number)) and not isinstance(p, bool):
        return PowScalar.apply(self, p=float(p) if self.dtype in _FLOATS else p)
    a, o = _promote(self, _as_operand(self, p, "pow"))
    _check_broadcast(a, o, "pow")
    return Pow.apply(a, o)


def _rpow(self: Tensor, base: Any) -> Tensor:
    b, a = _promote(_as_operand(self, base, "pow"), self)
    return Pow.apply(b, a)


def matmul(a: Tensor, b: Any) -> Tensor:
    """Matrix product with NumPy's rules (1-D operands are promoted and the added dim removed)."""
    if not isinstance(b, Tensor):
        b = _as_operand(a, b, "matmul")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least 1 dimension, got shapes {a.shape} and {b.shape}")
    if a._be is not b._be:
        raise ValueError(f"matmul: tensors on different devices ({a.device} and {b.device})")
    if a.dtype not in _FLOATS or b.dtype not in _FLOATS:
        raise TypeError(f"matmul: expected float tensors, got {a.dtype} and {b.dtype}")
    a, b = _promote(a, b)
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        sa = "x".join(map(str, a.shape))
        sb = "x".join(map(str, b.shape))
        raise ValueError(f"matmul: shapes cannot be multiplied ({sa} and {sb})")
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = a.reshape(1, -1)
    if squeeze_b:
        b = b.reshape(-1, 1)
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dimensions {a.shape[:-2]} and {b.shape[:-2]} cannot be broadcast") from None
    out = MatMul.apply(a, b)
    if squeeze_a and squeeze_b:
        return out.reshape(())
    if squeeze_a:
        return out.reshape(out.shape[:-2] + out.shape[-1:])
    if squeeze_b:
        return out.reshape(out.shape[:-1])
    return out


def _reduce(fn: type[Function], name: str):
    def method(self: Tensor, dim: Any = None, keepdim: bool | None = None, *, axis: Any = None,
               keepdims: bool | None = None) -> Tensor:
        ax = _axes(self.ndim, dim, axis, name)
        if ax is not None and (self.ndim == 0 or ax == ()):  # dim=() reduces every dim, as in PyTorch
            ax = None
        return fn.apply(self, axis=ax, keepdims=_keep(keepdim, keepdims))

    method.__name__ = name
    return method


MaxResult = namedtuple("MaxResult", ["values", "indices"])


def _max(self: Tensor, dim: Any = None, keepdim: bool | None = None, *, axis: Any = None,
         keepdims: bool | None = None) -> Any:
    """``t.max()`` is a scalar; ``t.max(dim)`` returns ``(values, indices)``; ``t.max(other)`` is
    ``tr.maximum(t, other)``, all as in PyTorch."""
    return _extreme(self, dim, keepdim, axis, keepdims, "max")


def _min(self: Tensor, dim: Any = None, keepdim: bool | None = None, *, axis: Any = None,
         keepdims: bool | None = None) -> Any:
    """``t.min()``, ``t.min(dim)`` -> ``(values, indices)``, ``t.min(other)``, as in PyTorch."""
    return _extreme(self, dim, keepdim, axis, keepdims, "min")


def _extreme(self: Tensor, dim: Any, keepdim: bool | None, axis: Any, keepdims: bool | None, what: str) -> Any:
    if isinstance(dim, Tensor):  # PyTorch's binary form, not a dim
        if keepdim is not None or axis is not None or keepdims is not None:
            raise TypeError(f"{what}(other): no dim/keepdim arguments with a tensor operand")
        return maximum(self, dim) if what == "max" else minimum(self, dim)
    ax = _axes(self.ndim, dim, axis, what)
    kd = _keep(keepdim, keepdims)
    if self.numel() == 0 and (ax is None or any(self.shape[a] == 0 for a in ax)):
        raise ValueError(f"{what}() of an empty tensor (shape {self.shape}) has no identity; give a dim that is not empty")
    if ax is None or (len(ax) != 1 and self.ndim > 0):
        # the whole tensor or several dims: values only, tied extremes share the gradient (as amax)
        if ax == ():
            ax = None
        v = Max.apply(self if what == "max" else -self, axis=ax, keepdims=kd)
        return v if what == "max" else -v
    pick = self._be.xp.argmax if what == "max" else self._be.xp.argmin
    if self.ndim == 0:  # as PyTorch: the only "dim" of a 0-d tensor, index 0
        zero = Tensor._make(self._be.xp.zeros((), dtype=np.int64), self._be, False, None, 0)
        return MaxResult(MaxDim.apply(self.reshape(1), axis=0, keepdims=False, pick=pick), zero)
    values = MaxDim.apply(self, axis=ax[0], keepdims=kd, pick=pick)
    idx = pick(self.data, axis=ax[0])
    if kd:
        idx = self._be.xp.expand_dims(idx, ax[0])
    return MaxResult(values, Tensor._make(idx.astype(np.int64), self._be, False, None, 0))


def _amax_ax(self: Tensor, dim: Any, what: str) -> tuple[int, ...] | None:
    ax = _axes(self.ndim, dim, None, what)
    if ax == () or self.ndim == 0:  # dim=() reduces every dim, as in PyTorch
        ax = None
    if self.numel() == 0 and (ax is None or any(self.shape[a] == 0 for a in ax)):
        raise ValueError(f"{what}(): reducing an empty dim of a tensor of shape {self.shape} has no identity")
    return ax


def amax(input: Tensor, dim: Any = (), keepdim: bool = False) -> Tensor:
    """Maximum over ``dim`` (an int or tuple; ``()`` means all dims); tied maxima share the
    gradient equally, as in PyTorch: ``tr.amax(x, dim=1)``."""
    if keepdim and input.ndim == 0:
        keepdim = False
    return Max.apply(input, axis=_amax_ax(input, dim, "amax"), keepdims=keepdim)


def amin(input: Tensor, dim: Any = (), keepdim: bool = False) -> Tensor:
    """Minimum over ``dim``, ties sharing the gradient (``tr.amin(x, 0)``)."""
    if keepdim and input.ndim == 0:
        keepdim = False
    return -Max.apply(-input, axis=_amax_ax(input, dim, "amin"), keepdims=keepdim)


def maximum(input: Tensor, other: Any) -> Tensor:
    """Elementwise maximum, broadcasting; a tie sends half the gradient to each side (``tr.maximum(a, b)``)."""
    return _binary_extremum(Maximum, input, other, "maximum")


def minimum(input: Tensor, other: Any) -> Tensor:
    """Elementwise minimum, broadcasting; ties split the gradient (``tr.minimum(a, b)``)."""
    return _binary_extremum(Minimum, input, other, "minimum")


def _binary_extremum(fn: type[Function], input: Any, other: Any, what: str) -> Tensor:
    if not isinstance(input, Tensor):
        if not isinstance(other, Tensor):
            raise TypeError(f"{what}: expected a Tensor, got {type(input).__name__}")
        input, other = _as_operand(other, input, what), other
    a, b = _promote(input, _as_operand(input, other, what))
    _check_broadcast(a, b, what)
    return fn.apply(a, b)


def clamp(input: Tensor, min: Any = None, max: Any = None) -> Tensor:
    """Clip every entry to [min, max] (either may be None): ``tr.clamp(x, -1.0, 1.0)``, ``x.clip(max=0)``.

    Bounds are numbers; the gradient is 1 where min <= x <= max and 0 elsewhere (PyTorch's rule)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"clamp: expected a Tensor, got {type(input).__name__}")
    if min is None and max is None:
        raise ValueError("clamp: at least one of 'min' or 'max' must not be None")
    for name, v in (("min", min), ("max", max)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.number))):
            raise TypeError(f"clamp: {name} must be a number or None (tensor bounds are not supported; "
                            f"use tr.maximum/tr.minimum), got {type(v).__name__}")
    if input.dtype not in _FLOATS:
        for name, v in (("min", min), ("max", max)):
            if v is not None and not float(v).is_integer():
                raise TypeError(f"clamp: a float {name} on an integer tensor ({input.dtype})")
    return Clamp.apply(input, lo=min, hi=max)


def _t(self: Tensor) -> Tensor:
    """Transpose of a matrix; 0-d and 1-d tensors are returned as they are (PyTorch's ``t()``)."""
    if self.ndim > 2:
        raise ValueError(f"t() expects a tensor with <= 2 dimensions, but self is {self.ndim}-D (use transpose/permute)")
    return self if self.ndim < 2 else Permute.apply(self, axes=(1, 0))


def _argmax(self: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    xp = self._be.xp
    if self.numel() == 0:
        raise ValueError(f"argmax() of an empty tensor (shape {self.shape})")
    if dim is None:
        idx = xp.asarray(xp.argmax(self.data)).astype(np.int64)
        return Tensor._make(idx.reshape((1,) * self.ndim if keepdim else ()), self._be, False, None, 0)
    ax = _one_axis(self.ndim, dim, "argmax")
    if self.ndim == 0:  # PyTorch: a 0-d tensor's argmax over its only "dim" is a 0-d 0
        return Tensor._make(xp.zeros((), dtype=np.int64), self._be, False, None, 0)
    idx = xp.argmax(self.data, axis=ax)
    if keepdim:
        idx = xp.expand_dims(idx, ax)
    return Tensor._make(xp.asarray(idx).astype(np.int64), self._be, False, None, 0)


def _reshape(self: Tensor, *shape: Any) -> Tensor:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(int(s) for s in shape)
    n_neg = sum(1 for s in shape if s == -1)
    known = int(np.prod([s for s in shape if s != -1])) if shape else 1
    if n_neg > 1 or any(s < -1 for s in shape) or (n_neg == 0 and known != self.numel()) or \
            (n_neg == 1 and (known == 0 or self.numel() % known != 0)):
        raise ValueError(f"reshape: cannot reshape a tensor of shape {self.shape} ({self.numel()} elements) into {shape}")
    if shape == self.shape:
        return self
    return Reshape.apply(self, shape=shape)


def _permute(self: Tensor, *dims: Any) -> Tensor:
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    ax = _axes(self.ndim, dims, None, "permute")
    if ax is None or len(ax) != self.ndim:
        raise ValueError(f"permute: expected a permutation of {self.ndim} dims, got {dims}")
    return Permute.apply(self, axes=ax)


def _transpose(self: Tensor, dim0: int = -2, dim1: int = -1) -> Tensor:
    if self.ndim < 2:
        return self
    a = _one_axis(self.ndim, dim0, "transpose")
    b = _one_axis(self.ndim, dim1, "transpose")
    axes = list(range(self.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return Permute.apply(self, axes=tuple(axes))


def _unsqueeze(self: Tensor, dim: int) -> Tensor:
    if not -self.ndim - 1 <= dim <= self.ndim:
        raise ValueError(f"unsqueeze: dim {dim} out of range for a tensor with {self.ndim} dimensions")
    d = dim % (self.ndim + 1)
    return _reshape(self, self.shape[:d] + (1,) + self.shape[d:])


def _squeeze(self: Tensor, dim: int | Sequence[int] | None = None) -> Tensor:
    """Drop size-1 dims: all of them, the one ``dim`` or those in a tuple of dims (PyTorch >= 2.0)."""
    if dim is None:
        return _reshape(self, tuple(s for s in self.shape if s != 1))
    if isinstance(dim, (tuple, list)):
        axes = _axes(self.ndim, tuple(dim), None, "squeeze")
        if self.ndim == 0:
            return self
        return _reshape(self, tuple(s for i, s in enumerate(self.shape) if not (i in axes and s == 1)))
    d = _one_axis(self.ndim, dim, "squeeze")
    if self.ndim == 0:  # PyTorch: dim 0 or -1 of a 0-d tensor is allowed and changes nothing
        return self
    if self.shape[d] != 1:
        return self
    return _reshape(self, self.shape[:d] + self.shape[d + 1:])


def _flatten(self: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    if self.ndim == 0:
        return _reshape(self, (1,))
    s = _one_axis(self.ndim, start_dim, "flatten")
    e = _one_axis(self.ndim, end_dim, "flatten")
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    # the explicit size, not -1: -1 is ambiguous (and refused) for a tensor with zero elements
    return _reshape(self, self.shape[:s] + (int(np.prod(self.shape[s:e + 1])),) + self.shape[e + 1:])


def _expand(self: Tensor, *shape: Any) -> Tensor:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(self.shape[i - (len(shape) - self.ndim)] if s == -1 else s for i, s in enumerate(shape))
    try:
        if np.broadcast_shapes(self.shape, shape) != shape:
            raise ValueError
    except ValueError:
        raise ValueError(f"expand: cannot expand shape {self.shape} to {shape}") from None
    return Expand.apply(self, shape=shape)


def _normalize_index(t: Tensor, index: Any) -> tuple[Any, bool]:
    """Device arrays for tensor/list indices; says whether NumPy will use advanced indexing."""
    items = index if isinstance(index, tuple) else (index,)
    out = []
    advanced = False
    for it in items:
        if isinstance(it, Tensor):
            if it._be is not t._be:
                raise ValueError(f"indexing a {t.device} tensor with a {it.device} tensor")
            if it.dtype.kind not in "iub":
                raise TypeError(f"index tensors must be integer or bool, got {it.dtype}")
            # an owned copy: the backward scatters by this index, which the caller may change meanwhile
            it = it.data.copy()
            advanced = True
        elif isinstance(it, (list, np.ndarray)):
            arr = np.array(it)  # a copy, for the same reason
            if arr.dtype.kind not in "iub":
                raise TypeError(f"index arrays must be integer or bool, got {arr.dtype}")
            it = t._be.asarray(arr) if t.device != "cpu" else arr
            advanced = True
        elif hasattr(it, "dtype") and hasattr(it, "shape") and getattr(it, "ndim", 0) > 0:
            it = it.copy()
            advanced = True
        elif isinstance(it, float):
            raise TypeError(f"index must be an int, slice, None, Ellipsis or an integer array, got float {it}")
        out.append(it)
    idx = tuple(out) if isinstance(index, tuple) else out[0]
    return idx, advanced


def _getitem(self: Tensor, index: Any) -> Tensor:
    idx, advanced = _normalize_index(self, index)
    try:
        if self.device != "cpu":
            # CuPy wraps out-of-bounds integer indices instead of raising: validate on a host stand-in
            np.empty(self.shape, dtype=np.bool_)[_host_index(idx)]
        return GetItem.apply(self, index=idx, advanced=advanced)
    except IndexError as e:
        raise IndexError(f"index {index!r} is invalid for a tensor of shape {self.shape}: {e}") from None


def _host_index(idx: Any) -> Any:
    items = idx if isinstance(idx, tuple) else (idx,)
    conv = tuple(i.get() if hasattr(i, "get") and not isinstance(i, (dict,)) else i for i in items)
    return conv if isinstance(idx, tuple) else conv[0]


def _softmax(self: Tensor, dim: int = -1) -> Tensor:
    ax = _one_axis(self.ndim, dim, "softmax")
    if self.ndim == 0:  # as PyTorch: a 0-d tensor is a one-element distribution
        return Softmax.apply(self.reshape(1), axis=0).reshape(())
    return Softmax.apply(self, axis=ax)


def _log_softmax(self: Tensor, dim: int = -1) -> Tensor:
    ax = _one_axis(self.ndim, dim, "log_softmax")
    if self.ndim == 0:
        return LogSoftmax.apply(self.reshape(1), axis=0).reshape(())
    return LogSoftmax.apply(self, axis=ax)


def _compare(name: str):
    fn = getattr(np, name)

    def method(self: Tensor, other: Any) -> Tensor:
        o = other.data if isinstance(other, Tensor) else other
        return Tensor._make(getattr(self._be.xp, name)(self.data, o), self._be, False, None, 0)

    method.__name__ = name
    del fn
    return method


def _float_only(fn: type[Function], name: str):
    def method(self: Tensor) -> Tensor:
        if self.dtype not in _FLOATS:
            raise TypeError(f"{name}: expected a float32/float64 tensor, got {self.dtype}")
        return fn.apply(self)

    method.__name__ = name
    return method


# ---------------------------------------------------------------------------------------
# module-level functions


def _dim_of(tensors: Sequence[Tensor], dim: int, what: str, extra: int = 0) -> int:
    if not tensors:
        raise ValueError(f"{what}: expected a non-empty sequence of tensors")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"{what}: expected tensors, got {type(t).__name__}")
    nd = tensors[0].ndim + extra
    if not -nd <= dim < nd:
        raise ValueError(f"{what}: dim {dim} out of range for {nd} dimensions")
    return dim % nd


def _same_dtype_device(tensors: Sequence[Tensor], what: str) -> None:
    dts = {str(t.dtype) for t in tensors}
    if len(dts) > 1:
        raise TypeError(f"{what}: tensors must share a dtype, got {sorted(dts)}")
    devs = {t.device for t in tensors}
    if len(devs) > 1:
        raise ValueError(f"{what}: tensors must be on one device, got {sorted(devs)}")


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Concatenate along an existing dim: ``tr.cat([a, b], dim=1)``."""
    tensors = list(tensors)
    d = _dim_of(tensors, dim, "cat")
    _same_dtype_device(tensors, "cat")
    ref = tensors[0].shape
    for t in tensors[1:]:
        if t.ndim != len(ref) or any(t.shape[i] != ref[i] for i in range(len(ref)) if i != d):
            raise ValueError(f"cat: shapes {ref} and {t.shape} differ outside dim {d}")
    return Cat.apply(*tensors, axis=d)


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Stack equal-shaped tensors along a new dim: ``tr.stack(hs, dim=1)``."""
    tensors = list(tensors)
    d = _dim_of(tensors, dim, "stack", extra=1)
    _same_dtype_device(tensors, "stack")
    for t in tensors[1:]:
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: all tensors need the same shape, got {tensors[0].shape} and {t.shape}")
    return Stack.apply(*tensors, axis=d)


def split(t: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple[Tensor, ...]:
    """PyTorch's split: an int gives chunks of that size (the last may be smaller), a list gives sizes."""
    d = _dim_of([t], dim, "split")
    n = t.shape[d]
    if isinstance(split_size_or_sections, (int, np.integer)):
        s = int(split_size_or_sections)
        if s <= 0:
            raise ValueError(f"split: split size must be positive, got {s}")
        sizes = [s] * (n // s) + ([n % s] if n % s else [])
    else:
        sizes = [int(x) for x in split_size_or_sections]
        if sum(sizes) != n or any(x < 0 for x in sizes):
            raise ValueError(f"split: sizes {sizes} do not add up to {n}, the size of dim {d}")
    if len(sizes) <= 1:
        return (t,)
    return Split.apply(t, sizes=sizes, axis=d)


def chunk(t: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    n = t.shape[_dim_of([t], dim, "chunk")]
    return split(t, max(1, -(-n // chunks)), dim)


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """Elementwise ``a`` where ``condition`` else ``b``; gradients flow to both branches' chosen entries."""
    ref = a if isinstance(a, Tensor) else b
    if not isinstance(ref, Tensor):
        raise TypeError("where: at least one of a, b must be a Tensor")
    ta = _as_operand(ref, a, "where") if a is not ref else a
    tb = _as_operand(ref, b, "where") if b is not ref else b
    ta, tb = _promote(ta, tb)
    # an owned copy of the condition: the backward reads it after the caller may have changed it
    cond = condition.data.copy() if isinstance(condition, Tensor) else ref._be.asarray(np.array(condition)) \
        if ref.device != "cpu" else np.array(condition)
    if cond.dtype != np.bool_:
        raise TypeError(f"where: condition must be bool, got {cond.dtype}")
    try:
        np.broadcast_shapes(tuple(cond.shape), ta.shape, tb.shape)
    except ValueError:
        raise ValueError(f"where: shapes {tuple(cond.shape)}, {ta.shape}, {tb.shape} cannot be broadcast") from None
    return Where.apply(ta, tb, cond=cond)


clip = clamp


# ---------------------------------------------------------------------------------------
# in-place ops: they write into the tensor's memory and bump its version (PyTorch semantics)

_INPLACE_UFUNC = {Add: "add", Sub: "subtract", Mul: "multiply", Div: "divide"}


def _writable(t: Tensor, what: str) -> Any:
    """``t.data`` ready to be written in place (a 0-d reduction result may be a read-only NumPy scalar)."""
    data = t.data
    flags = getattr(data, "flags", None)
    if flags is None or isinstance(data, np.generic):
        data = t.data = t._be.xp.array(data)
    elif not getattr(flags, "writeable", True):  # CuPy's flags have no writeable (its arrays always are)
        raise RuntimeError(f"{what}: the tensor's memory is read-only (an expand()ed view shares one value among "
                           "several entries); clone() it first")
    return data


def _inplace_operand(self: Tensor, other: Any, fn: type[Function], what: str) -> Tensor:
    o = _as_operand(self, other, what)
    if self.dtype not in _FLOATS and (o.dtype in _FLOATS or fn is Div):
        raise TypeError(f"{what}: the result is float but the tensor is {self.dtype}; it cannot hold it in place")
    try:
        shape = np.broadcast_shapes(self.shape, o.shape)
    except ValueError:
        shape = None
    if shape != self.shape:
        raise ValueError(f"{what}: a tensor of shape {self.shape} cannot hold the broadcast result with {o.shape} in place")
    return o


def _iop(fn: type[Function], what: str):
    """``t += x`` and friends. Without a graph involved: written in place, version bumped. When
    gradients are recorded, as in PyTorch: ``t`` must not be a leaf that requires grad, the op is
    recorded on ``t``'s old value, and ``t`` itself takes the new history (every name for it sees
    it). A tensor whose memory another tensor shares (a slice, a reshape, a ``detach()``) is refused
    inside a graph: PyTorch rewrites the other tensor's history too, which this engine does not."""

    def method(self: Tensor, other: Any) -> Tensor:
        o = _inplace_operand(self, other, fn, what)
        graph = (self.requires_grad or o.requires_grad) and is_grad_enabled()
        if not graph:
            data = _writable(self, what)
            getattr(self._be.xp, _INPLACE_UFUNC[fn])(data, o.data.astype(data.dtype, copy=False), out=data)
            self._bump_version()
            return self
        if self._ctx is None and self.requires_grad:
            raise RuntimeError(f"{what}: a leaf tensor that requires grad is being used in an in-place operation "
                               "(do it under tr.no_grad(), or use the out-of-place form x = x + y)")
        if self._vc is not None and self._vc.shared:
            raise RuntimeError(f"{what}: in-place operation on a tensor of shape {self.shape} that shares its memory with "
                               "another tensor (a view such as a slice or reshape, or a detach()) while gradients are "
                               "recorded: the other tensor's graph would not see the change; use the out-of-place form "
                               "(x = x + y), or clone() first")
        data = _writable(self, what)
        # the old value as the op's input, a handle of its own (self takes the new history below); a copy
        # when backward reads it, since the write below changes the memory
        old = Tensor._make(data.copy() if fn.saves_inputs else data, self._be, self.requires_grad, self._ctx, self._idx)
        res = fn.apply(*_promote(old, o))
        if res.dtype != self.dtype:
            res = res.to(self.dtype)
        data[...] = res.data
        self._ctx, self._idx, self.requires_grad = res._ctx, res._idx, True
        self._bump_version()
        return self

    method.__name__ = what
    return method


def _named_inplace(fn: type[Function], what: str):
    """``t.add_(x)`` etc.: in place outside a graph; inside one, a clear error (the method form
    cannot hand back a new history the way ``t += x`` does)."""
    iop = _iop(fn, what)

    def method(self: Tensor, other: Any) -> Tensor:
        o = other.requires_grad if isinstance(other, Tensor) else False
        if is_grad_enabled() and (self.requires_grad or o):
            if self._ctx is None and self.requires_grad:
                raise RuntimeError(f"{what}: a leaf tensor that requires grad is being used in an in-place operation "
                                   "(do it under tr.no_grad(), or use the out-of-place form x = x + y)")
            raise RuntimeError(f"{what}: in-place methods are not recorded for gradients; use the out-of-place "
                               "form (x = x + y) or the operator form (x += y)")
        return iop(self, other)

    method.__name__ = what
    return method


def _setitem(self: Tensor, index: Any, value: Any) -> None:
    """``t[index] = value``: in place, version bumped. Not recorded for gradients: inside a graph
    (``t`` or ``value`` requires grad) it raises; build the value out of place with tr.where/tr.cat."""
    v = value if isinstance(value, Tensor) else None
    if is_grad_enabled() and (self.requires_grad or (v is not None and v.requires_grad)):
        raise RuntimeError("__setitem__: assigning into a tensor that is part of a graph is not supported (it would "
                           "change values a backward pass reads); do it under tr.no_grad(), or build the result "
                           "out of place with tr.where or tr.cat")
    idx, _ = _normalize_index(self, index)
    src = v.data if v is not None else value
    if v is not None and v._be is not self._be:
        raise ValueError(f"__setitem__: value on {v.device} but the tensor on {self.device}")
    if v is None and not isinstance(value, (bool, int, float, np.number, np.ndarray, list, tuple)):
        raise TypeError(f"__setitem__: unsupported value type {type(value).__name__}")
    if self.device != "cpu" and isinstance(src, (np.ndarray, list, tuple)):
        src = self._be.asarray(np.asarray(src))
    data = _writable(self, "__setitem__")
    try:
        if self.device != "cpu":
            np.empty(self.shape, dtype=np.bool_)[_host_index(idx)]  # CuPy would wrap bad indices
        data[idx] = src
    except IndexError as e:
        raise IndexError(f"index {index!r} is invalid for a tensor of shape {self.shape}: {e}") from None
    except ValueError as e:
        raise ValueError(f"__setitem__: cannot assign a value of shape {tuple(np.shape(src))} to index {index!r} "
                         f"of a tensor of shape {self.shape}: {e}") from None
    self._bump_version()


# ---------------------------------------------------------------------------------------
# attach the Tensor surface

Tensor.__add__ = _binary(Add, "add")
Tensor.__radd__ = _binary(Add, "add", reverse=True)
Tensor.__sub__ = _binary(Sub, "sub")
Tensor.__rsub__ = _binary(Sub, "sub", reverse=True)
Tensor.__mul__ = _binary(Mul, "mul")
Tensor.__rmul__ = _binary(Mul, "mul", reverse=True)
Tensor.__truediv__ = _binary(Div, "div")
Tensor.__rtruediv__ = _binary(Div, "div", reverse=True)
Tensor.__pow__ = _pow
Tensor.__iadd__ = _iop(Add, "add_")
Tensor.__isub__ = _iop(Sub, "sub_")
Tensor.__imul__ = _iop(Mul, "mul_")
Tensor.__itruediv__ = _iop(Div, "div_")
Tensor.add_ = _named_inplace(Add, "add_")
Tensor.sub_ = _named_inplace(Sub, "sub_")
Tensor.mul_ = _named_inplace(Mul, "mul_")
Tensor.div_ = _named_inplace(Div, "div_")
Tensor.__setitem__ = _setitem
Tensor.__rpow__ = _rpow
Tensor.__neg__ = lambda self: Neg.apply(self)
Tensor.__matmul__ = matmul
Tensor.__rmatmul__ = lambda self, other: matmul(_as_operand(self, other, "matmul"), self)
Tensor.matmul = matmul
Tensor.add, Tensor.sub, Tensor.mul, Tensor.div = Tensor.__add__, Tensor.__sub__, Tensor.__mul__, Tensor.__truediv__
Tensor.pow = _pow
Tensor.neg = Tensor.__neg__
Tensor.exp = _float_only(Exp, "exp")
Tensor.log = _float_only(Log, "log")
Tensor.tanh = _float_only(Tanh, "tanh")
Tensor.sigmoid = _float_only(Sigmoid, "sigmoid")
Tensor.relu = _float_only(Relu, "relu")
Tensor.abs = lambda self: Abs.apply(self)
Tensor.sqrt = lambda self: Sqrt.apply(self if self.dtype in _FLOATS else self.to(np.float32))
Tensor.sum = _reduce(Sum, "sum")
Tensor.mean = _reduce(Mean, "mean")
Tensor.max = _max
Tensor.min = _min
Tensor.amax = amax
Tensor.amin = amin
Tensor.argmax = _argmax
Tensor.clamp = Tensor.clip = clamp
Tensor.maximum = maximum
Tensor.minimum = minimum
Tensor.t = _t
Tensor.reshape = _reshape
Tensor.view = _reshape
Tensor.permute = _permute
Tensor.transpose = _transpose
Tensor.T = property(lambda self: _permute(self, tuple(reversed(range(self.ndim)))))
Tensor.unsqueeze = _unsqueeze
Tensor.squeeze = _squeeze
Tensor.flatten = _flatten
Tensor.expand = _expand
Tensor.__getitem__ = _getitem
Tensor.softmax = _softmax
Tensor.log_softmax = _log_softmax
Tensor.split = split
Tensor.chunk = chunk
for _name, _np in (("__lt__", "less"), ("__le__", "less_equal"), ("__gt__", "greater"),
                   ("__ge__", "greater_equal"), ("__eq__", "equal"), ("__ne__", "not_equal")):
    setattr(Tensor, _name, _compare(_np))
Tensor.__hash__ = lambda self: id(self)
Tensor.astype = lambda self, dtype: self.to(_as_dtype(dtype))

# error messages name the Tensor method ("Tensor.add() got an unexpected keyword argument 'alpha'"),
# not the factory that made it
for _name, _fn in list(vars(Tensor).items()):
    if callable(_fn) and getattr(_fn, "__module__", None) == __name__ and _fn.__name__ not in __all__:
        _fn.__qualname__ = f"Tensor.{_name}"  # (the public functions tr.clamp, tr.maximum ... keep their own name)
