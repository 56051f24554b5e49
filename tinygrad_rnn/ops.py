"""The ``Tensor`` surface: argument handling (dims, dtypes, broadcasting, devices), then ``Function.apply``.

The ops themselves are in ``functions/``. The methods are written in :class:`TensorOps`'s body and
installed on ``Tensor`` by :func:`_install` at import (``tensor.py`` imports nothing from here, so the
engine does not depend on its ops); the module-level functions (``tr.cat``, ``tr.where`` ...) are here too.

    >>> import tinygrad_rnn as tr
    >>> (tr.tensor([[1.0, 2.0]]) @ tr.tensor([[3.0], [4.0]])).item()
    11.0
"""
# ruff: noqa: I001  (the functions on three lines; ``Linear`` is imported so that ``tr.ops.Linear`` stays reachable)
from __future__ import annotations

from collections import namedtuple
from typing import Any, Sequence

import numpy as np

from . import _checks
from .backend import Backend, backend_of_array, get_backend
from .dtypes import _FLOATS, _as_dtype, float32, float64, int64
from .functions import (Abs, Add, Cast, Cat, Clamp, Div, Exp, Expand, GetItem, Identity, Linear, Log, LogSoftmax,  # noqa: F401
                        MatMul, Max, MaxDim, Maximum, Mean, Minimum, Mul, Neg, Permute, Pow, PowScalar, Relu, Reshape,
                        Sigmoid, Softmax, Split, Sqrt, Stack, Sub, Sum, Tanh, ToDevice, TopK, Where, sum_to_shape)
from .tensor import Function, Tensor, _writable, is_grad_enabled

__all__ = ["cat", "stack", "split", "chunk", "where", "sum_to_shape", "matmul", "clamp", "clip", "maximum", "minimum",
           "amax", "amin", "topk", "multinomial", "narrow", "TensorOps"]

# ---------------------------------------------------------------------------------------
# argument helpers


def _axes(ndim: int, dim: Any, axis: Any, what: str) -> tuple[int, ...] | None:
    if dim is not None and axis is not None:
        raise ValueError(f"{what}: give dim= or axis=, not both")
    d = dim if dim is not None else axis
    if d is None:
        return None
    ds = (d,) if isinstance(d, (int, np.integer)) else tuple(d)
    out = []
    for x in ds:
        if not -max(ndim, 1) <= _checks.integer(f"{what}: dim", x) < max(ndim, 1):
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
        return a, Tensor._make(b._data.astype(a.dtype), b._be, False, None, 0)
    if fb:
        return Tensor._make(a._data.astype(b.dtype), a._be, False, None, 0), b
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
    if backend_of_array(b) is not None or isinstance(b, (list, tuple)):
        arr = np.asarray(b) if isinstance(b, (list, tuple)) else b
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"{op}: unsupported array dtype {arr.dtype}")
        if isinstance(b, (list, tuple)) and arr.dtype.kind == "f" and a.dtype in _FLOATS:
            arr = arr.astype(a.dtype)
        return Tensor(arr, device=a.device)
    raise TypeError(f"{op}: unsupported operand type {type(b).__name__}")


def _broadcastable(sa: tuple, sb: tuple) -> bool:
    """NumPy's rule for two shapes, in Python: a fifth of ``np.broadcast_shapes``'s cost on every op."""
    for x, y in zip(reversed(sa), reversed(sb)):
        if x != y and x != 1 and y != 1:
            return False
    return True


def _check_broadcast(a: Tensor, b: Tensor, op: str) -> None:
    sa, sb = a._data.shape, b._data.shape
    if sa != sb and not _broadcastable(sa, sb):
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast together")


def _binary(fn: type[Function], self: Tensor, other: Any, op: str, reverse: bool = False) -> Tensor:
    if isinstance(other, Tensor) and other._be is self._be:
        # the common case first: two tensors of one dtype and shape on one device need no promotion,
        # no broadcast check (the same checks as below, answered by two comparisons)
        x, y = self._data, other._data
        dx, dy = x.dtype, y.dtype
        if (dx is dy or dx == dy) and x.shape == y.shape:
            return fn.apply(other, self) if reverse else fn.apply(self, other)
    elif type(other) is float or type(other) is int:  # (not bool, whose type is bool)
        dt = self._data.dtype
        if dt in _FLOATS:
            # a Python number with a float tensor: a 0-d array of its dtype, which broadcasts with
            # anything and needs no promotion (what _as_operand, _promote and _check_broadcast conclude)
            o = Tensor._make(self._be.xp.asarray(other, dtype=dt), self._be, False, None, 0)
            return fn.apply(o, self) if reverse else fn.apply(self, o)
    a, o = _promote(self, _as_operand(self, other, op))
    _check_broadcast(a, o, op)
    return fn.apply(o, a) if reverse else fn.apply(a, o)


def _binary_method(fn: type[Function], op: str) -> Any:
    """``Tensor.__mul__`` and friends: the common case (a tensor of the same dtype, shape and device) goes
    straight to ``fn.apply``; anything else through :func:`_binary`'s promotion and checks. (``fn.apply`` is
    looked up per call, not bound here: the cell compiler's tracer hooks ``Function.apply`` while it traces.)"""

    def method(self: Tensor, other: Any) -> Tensor:
        if type(other) is Tensor or isinstance(other, Tensor):  # (the type test first: no call)
            x, y = self._data, other._data
            dx, dy = x.dtype, y.dtype
            if other._be is self._be and (dx is dy or dx == dy) and x.shape == y.shape:
                return fn.apply(self, other)
        return _binary(fn, self, other, op)

    method.__name__ = f"__{op}__"
    method.__qualname__ = f"Tensor.__{op}__"
    return method


def _unary_float_method(fn: type[Function], name: str) -> Any:
    """``Tensor.tanh`` and friends: float input straight to ``fn.apply``, anything else the clear error."""

    def method(self: Tensor) -> Tensor:
        if self._data.dtype in _FLOATS:
            return fn.apply(self)
        return _float_only(fn, self, name)

    method.__name__ = name
    method.__qualname__ = f"Tensor.{name}"
    return method


def _float_only(fn: type[Function], self: Tensor, name: str) -> Tensor:
    if self._data.dtype not in _FLOATS:
        raise TypeError(f"{name}: expected a float32/float64 tensor, got {self.dtype}")
    return fn.apply(self)


def _compare(self: Tensor, other: Any, ufunc: str) -> Tensor:
    o = other._data if isinstance(other, Tensor) else other
    return Tensor._make(getattr(self._be.xp, ufunc)(self._data, o), self._be, False, None, 0)


def _reduce(fn: type[Function], self: Tensor, dim: Any, keepdim: bool | None, axis: Any, keepdims: bool | None,
            name: str) -> Tensor:
    ax = _axes(self.ndim, dim, axis, name)
    if ax is not None and (self.ndim == 0 or ax == ()):  # dim=() reduces every dim, as in PyTorch
        ax = None
    return fn.apply(self, axis=ax, keepdims=_keep(keepdim, keepdims))


def _softmax(fn: type[Function], self: Tensor, dim: int, what: str) -> Tensor:
    ax = _one_axis(self.ndim, dim, what)
    if self.ndim == 0:  # as PyTorch: a 0-d tensor is a one-element distribution
        return fn.apply(self.reshape(1), axis=0).reshape(())
    return fn.apply(self, axis=ax)


MaxResult = namedtuple("MaxResult", ["values", "indices"])


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
    idx = pick(self._data, axis=ax[0])
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
            it = it._data.copy()
            advanced = True
        elif isinstance(it, (list, np.ndarray)):
            arr = np.array(it)  # a copy, for the same reason
            if arr.dtype.kind not in "iub":
                raise TypeError(f"index arrays must be integer or bool, got {arr.dtype}")
            it = t._be.asarray(arr)
            advanced = True
        elif hasattr(it, "dtype") and hasattr(it, "shape") and getattr(it, "ndim", 0) > 0:
            it = it.copy()
            advanced = True
        elif isinstance(it, float):
            raise TypeError(f"index must be an int, slice, None, Ellipsis or an integer array, got float {it}")
        out.append(it)
    idx = tuple(out) if isinstance(index, tuple) else out[0]
    return idx, advanced


# ---------------------------------------------------------------------------------------
# module-level functions


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
    if not _broadcastable(a.shape[:-2], b.shape[:-2]):
        raise ValueError(f"matmul: batch dimensions {a.shape[:-2]} and {b.shape[:-2]} cannot be broadcast")
    out = MatMul.apply(a, b)
    if squeeze_a and squeeze_b:
        return out.reshape(())
    if squeeze_a:
        return out.reshape(out.shape[:-2] + out.shape[-1:])
    if squeeze_b:
        return out.reshape(out.shape[:-1])
    return out


def amax(input: Tensor, dim: Any = (), keepdim: bool = False) -> Tensor:
    """Maximum over ``dim`` (an int or tuple; ``()`` means all dims); tied maxima share the
    gradient equally, as in PyTorch: ``tr.amax(x, dim=1)``."""
    return Max.apply(input, axis=_amax_ax(input, dim, "amax"), keepdims=keepdim and input.ndim > 0)


def amin(input: Tensor, dim: Any = (), keepdim: bool = False) -> Tensor:
    """Minimum over ``dim``, ties sharing the gradient (``tr.amin(x, 0)``)."""
    return -Max.apply(-input, axis=_amax_ax(input, dim, "amin"), keepdims=keepdim and input.ndim > 0)


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
    return _binary(fn, input, other, what)


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
        raise ValueError(f"{what}: tensors must be on one device, got {sorted(map(str, devs))}")


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
        s = _checks.positive_int("split: split size", split_size_or_sections)
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
    cond = condition._data.copy() if isinstance(condition, Tensor) else ref._be.asarray(np.array(condition))
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


def _iop(self: Tensor, other: Any, fn: type[Function], what: str) -> Tensor:
    """``t += x`` and friends. Without a graph involved: written in place, version bumped. When
    gradients are recorded, as in PyTorch: ``t`` must not be a leaf that requires grad, the op is
    recorded on ``t``'s old value, and ``t`` itself takes the new history (every name for it sees
    it). A tensor whose memory another tensor shares (a slice, a reshape, a ``detach()``) is refused
    inside a graph: PyTorch rewrites the other tensor's history too, which this engine does not."""
    o = _inplace_operand(self, other, fn, what)
    graph = (self.requires_grad or o.requires_grad) and is_grad_enabled()
    if not graph:
        data = _writable(self, what)
        getattr(self._be.xp, _INPLACE_UFUNC[fn])(data, o._data.astype(data.dtype, copy=False), out=data)
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
    data[...] = res._data
    self._ctx, self._idx, self.requires_grad = res._ctx, res._idx, True
    self._bump_version()
    return self


def _named_inplace(self: Tensor, other: Any, fn: type[Function], what: str) -> Tensor:
    """``t.add_(x)`` etc.: in place outside a graph; inside one, a clear error (the method form
    cannot hand back a new history the way ``t += x`` does)."""
    o = other.requires_grad if isinstance(other, Tensor) else False
    if is_grad_enabled() and (self.requires_grad or o):
        if self._ctx is None and self.requires_grad:
            raise RuntimeError(f"{what}: a leaf tensor that requires grad is being used in an in-place operation "
                               "(do it under tr.no_grad(), or use the out-of-place form x = x + y)")
        raise RuntimeError(f"{what}: in-place methods are not recorded for gradients; use the out-of-place "
                           "form (x = x + y) or the operator form (x += y)")
    return _iop(self, other, fn, what)


def _scaled(other: Any, alpha: Any, what: str) -> Any:
    """``other * alpha`` for ``add``/``sub``'s ``alpha=`` (PyTorch's argument)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)):
        raise TypeError(f"{what}: alpha must be a number, got {type(alpha).__name__}")
    if alpha == 1:
        return other
    return other * alpha if isinstance(other, Tensor) else np.asarray(other) * alpha


def _named_inplace_check(self: Tensor, value: Tensor, what: str) -> Tensor:
    if is_grad_enabled() and self.requires_grad:
        raise RuntimeError(f"{what}: in-place methods are not recorded for gradients; do it under tr.no_grad() "
                           "or use the out-of-place form")
    return value


_TYPE_NAMES = {np.dtype(np.float32): "FloatTensor", np.dtype(np.float64): "DoubleTensor", np.dtype(np.int64): "LongTensor",
               np.dtype(np.int32): "IntTensor", np.dtype(np.bool_): "BoolTensor"}

TopKResult = namedtuple("TopKResult", ["values", "indices"])


def topk(input: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:
    """``(values, indices)`` of the ``k`` largest (``largest=False``: smallest) entries along ``dim``:
    ``tr.topk(x, 3).indices``."""
    if not isinstance(input, Tensor):
        raise TypeError(f"topk: expected a Tensor, got {type(input).__name__}")
    if input.ndim == 0:
        x = input.reshape(1)
        v, i = topk(x, k, 0, largest, sorted)
        return TopKResult(v.reshape(()), i.reshape(()))
    d = _one_axis(input.ndim, dim, "topk")
    k = _checks.integer("topk: k", k)
    if not 0 <= k <= input.shape[d]:
        raise ValueError(f"topk: k ({k}) out of range for dim {d} of size {input.shape[d]}")
    values = TopK.apply(input, k=k, axis=d, largest=bool(largest), sorted_=bool(sorted))
    idx = values._ctx.idx if values._ctx is not None else None
    if idx is None:  # not recorded: recompute the indices (cheap next to the sort)
        xp = input._be.xp
        order = xp.argsort(-input._data if largest else input._data, axis=d, kind="stable")
        idx = xp.take(order, xp.arange(k), axis=d)
        if not sorted:
            idx = xp.sort(idx, axis=d)
    return TopKResult(values, Tensor._make(idx.astype(np.int64), input._be, False, None, 0))


def multinomial(input: Tensor, num_samples: int, replacement: bool = False, *, generator: Any = None) -> Tensor:
    """Indices sampled from the rows of ``input`` (non-negative weights, not necessarily normalised),
    as ``torch.multinomial``; a 1-D input gives ``(num_samples,)``, a 2-D one ``(rows, num_samples)``."""
    from .random import _rng
    if not isinstance(input, Tensor):
        raise TypeError(f"multinomial: expected a Tensor, got {type(input).__name__}")
    if input.ndim not in (1, 2):
        raise ValueError(f"multinomial: prob_dist must be 1 or 2 dim, got shape {input.shape}")
    n = _checks.positive_int("multinomial: num_samples", num_samples)
    w = np.asarray(input.numpy(), dtype=np.float64).reshape(-1, input.shape[-1])
    if not np.all(np.isfinite(w)) or (w < 0).any():
        raise ValueError("multinomial: probability tensor contains either inf, nan or element < 0")
    rng = _rng(None, generator)
    out = np.empty((w.shape[0], n), dtype=np.int64)
    totals = w.sum(axis=1)
    if not np.all(totals > 0):
        raise ValueError("multinomial: invalid multinomial distribution (sum of probabilities <= 0)")
    if replacement or n == 1:
        # NumPy's Generator.choice(p=row/total) for all rows at once: per row the cumulative sum scaled to end
        # at 1 and one uniform per draw, searched from the right -- the same uniforms in the same order, so
        # the same samples as the per-row call below, without its ~100 us of checks per call (one draw
        # without replacement is one draw with it)
        cdf = np.cumsum(w / totals[:, None], axis=1)
        cdf /= cdf[:, -1:]
        u = rng.random((w.shape[0], n))
        for r in range(w.shape[0]):
            out[r] = np.searchsorted(cdf[r], u[r], side="right")
        return Tensor(out.reshape(input.shape[:-1] + (n,)), device=input.device)
    for r, (row, total) in enumerate(zip(w, totals)):
        if not replacement and n > np.count_nonzero(row):
            raise ValueError(f"multinomial: cannot sample n_sample ({n}) > prob_dist.size(-1) non-zero entries "
                             f"({np.count_nonzero(row)}) without replacement")
        out[r] = rng.choice(row.size, size=n, replace=bool(replacement), p=row / total)
    return Tensor(out.reshape(input.shape[:-1] + (n,)), device=input.device)


def narrow(input: Tensor, dim: int, start: int, length: int) -> Tensor:
    """``input.narrow(dim, start, length)``."""
    return input.narrow(dim, start, length)


# ---------------------------------------------------------------------------------------
# the Tensor methods


class TensorOps:
    """The ``Tensor`` methods that build ops, written as one class body; :func:`_install` puts each
    on ``Tensor`` (so ``Tensor.add`` is ``TensorOps.add``). Not a base class: ``Tensor`` must stay
    importable without its ops, and a class with ``__slots__`` cannot take a base after the fact."""

    # -- arithmetic (NumPy broadcasting; float32 with float64 computes in float64) ----------------
    def add(self, other: Any, *, alpha: Any = 1) -> Tensor: return _binary(Add, self, _scaled(other, alpha, "add"), "add")
    def __radd__(self, other: Any) -> Tensor: return _binary(Add, self, other, "add", reverse=True)
    def sub(self, other: Any, *, alpha: Any = 1) -> Tensor: return _binary(Sub, self, _scaled(other, alpha, "sub"), "sub")
    def __rsub__(self, other: Any) -> Tensor: return _binary(Sub, self, other, "sub", reverse=True)
    def mul(self, other: Any) -> Tensor: return _binary(Mul, self, other, "mul")
    def __rmul__(self, other: Any) -> Tensor: return _binary(Mul, self, other, "mul", reverse=True)
    def div(self, other: Any) -> Tensor: return _binary(Div, self, other, "div")
    def __rtruediv__(self, other: Any) -> Tensor: return _binary(Div, self, other, "div", reverse=True)
    # the operators: the named methods' work, with the common case's fast path (_binary_method)
    __add__ = _binary_method(Add, "add")
    __sub__ = _binary_method(Sub, "sub")
    __mul__ = _binary_method(Mul, "mul")
    __truediv__ = _binary_method(Div, "div")

    def pow(self, p: Any) -> Tensor:
        if isinstance(p, (int, float, np.number)) and not isinstance(p, bool):
            return PowScalar.apply(self, p=float(p) if self.dtype in _FLOATS else p)
        a, o = _promote(self, _as_operand(self, p, "pow"))
        _check_broadcast(a, o, "pow")
        return Pow.apply(a, o)

    __pow__ = pow

    def __rpow__(self, base: Any) -> Tensor:
        b, a = _promote(_as_operand(self, base, "pow"), self)
        return Pow.apply(b, a)

    def neg(self) -> Tensor: return Neg.apply(self)
    __neg__ = neg

    matmul = __matmul__ = staticmethod(matmul)
    def __rmatmul__(self, other: Any) -> Tensor: return matmul(_as_operand(self, other, "matmul"), self)

    # -- in place (``+=`` records on the old value inside a graph; ``add_`` refuses a graph) ---------
    def __iadd__(self, other: Any) -> Tensor: return _iop(self, other, Add, "add_")
    def __isub__(self, other: Any) -> Tensor: return _iop(self, other, Sub, "sub_")
    def __imul__(self, other: Any) -> Tensor: return _iop(self, other, Mul, "mul_")
    def __itruediv__(self, other: Any) -> Tensor: return _iop(self, other, Div, "div_")
    def add_(self, other: Any, *, alpha: Any = 1) -> Tensor:
        return _named_inplace(self, _scaled(other, alpha, "add_"), Add, "add_")

    def sub_(self, other: Any, *, alpha: Any = 1) -> Tensor:
        return _named_inplace(self, _scaled(other, alpha, "sub_"), Sub, "sub_")

    def clamp_(self, min: Any = None, max: Any = None) -> Tensor:
        """In place ``clamp``, outside a graph (as the other named in-place methods)."""
        return self.copy_(_named_inplace_check(self, clamp(self.detach(), min, max), "clamp_"))

    clip_ = clamp_

    def normal_(self, mean: float = 0.0, std: float = 1.0, *, generator: Any = None) -> Tensor:
        """Fill with normal samples in place (``generator=`` a ``tr.Generator``), as ``torch.Tensor.normal_``."""
        from .random import _rng
        return self.copy_(_rng(None, generator).normal(mean, std, size=self.shape).astype(self.dtype))

    def uniform_(self, a: float = 0.0, b: float = 1.0, *, generator: Any = None) -> Tensor:
        """Fill with uniform samples from [a, b) in place, as ``torch.Tensor.uniform_``."""
        from .random import _rng
        return self.copy_(_rng(None, generator).uniform(a, b, size=self.shape).astype(self.dtype))
    def mul_(self, other: Any) -> Tensor: return _named_inplace(self, other, Mul, "mul_")
    def div_(self, other: Any) -> Tensor: return _named_inplace(self, other, Div, "div_")

    def __setitem__(self: Tensor, index: Any, value: Any) -> None:
        """``t[index] = value``: in place, version bumped. Not recorded for gradients: inside a graph
        (``t`` or ``value`` requires grad) it raises; build the value out of place with tr.where/tr.cat."""
        v = value if isinstance(value, Tensor) else None
        if is_grad_enabled() and (self.requires_grad or (v is not None and v.requires_grad)):
            raise RuntimeError("__setitem__: assigning into a tensor that is part of a graph is not supported (it would "
                               "change values a backward pass reads); do it under tr.no_grad(), or build the result "
                               "out of place with tr.where or tr.cat")
        idx, _ = _normalize_index(self, index)
        src = v._data if v is not None else value
        if v is not None and v._be is not self._be:
            raise ValueError(f"__setitem__: value on {v.device} but the tensor on {self.device}")
        if v is None and not isinstance(value, (bool, int, float, np.number, np.ndarray, list, tuple)):
            raise TypeError(f"__setitem__: unsupported value type {type(value).__name__}")
        if isinstance(src, (np.ndarray, list, tuple)):
            src = self._be.asarray(np.asarray(src))
        data = _writable(self, "__setitem__")
        try:
            self._be.check_index(self.shape, idx)
            data[idx] = src
        except IndexError as e:
            raise IndexError(f"index {index!r} is invalid for a tensor of shape {self.shape}: {e}") from None
        except ValueError as e:
            raise ValueError(f"__setitem__: cannot assign a value of shape {tuple(np.shape(src))} to index {index!r} "
                             f"of a tensor of shape {self.shape}: {e}") from None
        self._bump_version()

    # -- elementwise ---------------------------------------------------------------------------
    exp = _unary_float_method(Exp, "exp")
    log = _unary_float_method(Log, "log")
    tanh = _unary_float_method(Tanh, "tanh")
    sigmoid = _unary_float_method(Sigmoid, "sigmoid")
    relu = _unary_float_method(Relu, "relu")
    def abs(self) -> Tensor: return Abs.apply(self)
    def sqrt(self) -> Tensor: return Sqrt.apply(self if self.dtype in _FLOATS else self.to(np.float32))
    clamp = clip = staticmethod(clamp)
    maximum = staticmethod(maximum)
    minimum = staticmethod(minimum)

    # -- comparisons (not recorded: their results are bool) -----------------------------------------
    def __lt__(self, other: Any) -> Tensor: return _compare(self, other, "less")  # type: ignore[override]
    def __le__(self, other: Any) -> Tensor: return _compare(self, other, "less_equal")  # type: ignore[override]
    def __gt__(self, other: Any) -> Tensor: return _compare(self, other, "greater")  # type: ignore[override]
    def __ge__(self, other: Any) -> Tensor: return _compare(self, other, "greater_equal")  # type: ignore[override]
    def __eq__(self, other: Any) -> Tensor: return _compare(self, other, "equal")  # type: ignore[override]
    def __ne__(self, other: Any) -> Tensor: return _compare(self, other, "not_equal")  # type: ignore[override]

    # -- reductions -------------------------------------------------------------------------------
    def sum(self, dim: Any = None, keepdim: bool | None = None, *, axis: Any = None, keepdims: bool | None = None) -> Tensor:
        return _reduce(Sum, self, dim, keepdim, axis, keepdims, "sum")

    def mean(self, dim: Any = None, keepdim: bool | None = None, *, axis: Any = None, keepdims: bool | None = None) -> Tensor:
        return _reduce(Mean, self, dim, keepdim, axis, keepdims, "mean")

    def max(self: Tensor, dim: Any = None, keepdim: bool | None = None, *, axis: Any = None,
             keepdims: bool | None = None) -> Any:
        """``t.max()`` is a scalar; ``t.max(dim)`` returns ``(values, indices)``; ``t.max(other)`` is
        ``tr.maximum(t, other)``, all as in PyTorch."""
        return _extreme(self, dim, keepdim, axis, keepdims, "max")

    def min(self: Tensor, dim: Any = None, keepdim: bool | None = None, *, axis: Any = None,
             keepdims: bool | None = None) -> Any:
        """``t.min()``, ``t.min(dim)`` -> ``(values, indices)``, ``t.min(other)``, as in PyTorch."""
        return _extreme(self, dim, keepdim, axis, keepdims, "min")

    amax = staticmethod(amax)
    amin = staticmethod(amin)

    def argmax(self: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
        xp = self._be.xp
        if self.numel() == 0:
            raise ValueError(f"argmax() of an empty tensor (shape {self.shape})")
        if dim is None:
            idx = xp.asarray(xp.argmax(self._data)).astype(np.int64)
            return Tensor._make(idx.reshape((1,) * self.ndim if keepdim else ()), self._be, False, None, 0)
        ax = _one_axis(self.ndim, dim, "argmax")
        if self.ndim == 0:  # PyTorch: a 0-d tensor's argmax over its only "dim" is a 0-d 0
            return Tensor._make(xp.zeros((), dtype=np.int64), self._be, False, None, 0)
        idx = xp.argmax(self._data, axis=ax)
        if keepdim:
            idx = xp.expand_dims(idx, ax)
        return Tensor._make(xp.asarray(idx).astype(np.int64), self._be, False, None, 0)

    # -- shape ------------------------------------------------------------------------------------
    def t(self: Tensor) -> Tensor:
        """Transpose of a matrix; 0-d and 1-d tensors are returned as they are (PyTorch's ``t()``)."""
        if self.ndim > 2:
            raise ValueError(f"t() expects a tensor with <= 2 dimensions, but self is {self.ndim}-D (use transpose/permute)")
        return self if self.ndim < 2 else Permute.apply(self, axes=(1, 0))

    def reshape(self: Tensor, *shape: Any) -> Tensor:
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

    view = reshape

    def permute(self: Tensor, *dims: Any) -> Tensor:
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        ax = _axes(self.ndim, dims, None, "permute")
        if ax is None or len(ax) != self.ndim:
            raise ValueError(f"permute: expected a permutation of {self.ndim} dims, got {dims}")
        return Permute.apply(self, axes=ax)

    def transpose(self: Tensor, dim0: int = -2, dim1: int = -1) -> Tensor:
        if self.ndim < 2:
            return self
        a = _one_axis(self.ndim, dim0, "transpose")
        b = _one_axis(self.ndim, dim1, "transpose")
        axes = list(range(self.ndim))
        axes[a], axes[b] = axes[b], axes[a]
        return Permute.apply(self, axes=tuple(axes))

    @property
    def T(self) -> Tensor:  # noqa: N802 - PyTorch's name
        return self.permute(tuple(reversed(range(self.ndim))))

    def unsqueeze(self: Tensor, dim: int) -> Tensor:
        if not -self.ndim - 1 <= dim <= self.ndim:
            raise ValueError(f"unsqueeze: dim {dim} out of range for a tensor with {self.ndim} dimensions")
        d = dim % (self.ndim + 1)
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def squeeze(self: Tensor, dim: int | Sequence[int] | None = None) -> Tensor:
        """Drop size-1 dims: all of them, the one ``dim`` or those in a tuple of dims (PyTorch >= 2.0)."""
        if dim is None:
            return self.reshape(tuple(s for s in self.shape if s != 1))
        if isinstance(dim, (tuple, list)):
            axes = _axes(self.ndim, tuple(dim), None, "squeeze")
            if self.ndim == 0:
                return self
            return self.reshape(tuple(s for i, s in enumerate(self.shape) if not (i in axes and s == 1)))
        d = _one_axis(self.ndim, dim, "squeeze")
        if self.ndim == 0:  # PyTorch: dim 0 or -1 of a 0-d tensor is allowed and changes nothing
            return self
        if self.shape[d] != 1:
            return self
        return self.reshape(self.shape[:d] + self.shape[d + 1:])

    def flatten(self: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        if self.ndim == 0:
            return self.reshape((1,))
        s = _one_axis(self.ndim, start_dim, "flatten")
        e = _one_axis(self.ndim, end_dim, "flatten")
        if s > e:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
        # the explicit size, not -1: -1 is ambiguous (and refused) for a tensor with zero elements
        return self.reshape(self.shape[:s] + (int(np.prod(self.shape[s:e + 1])),) + self.shape[e + 1:])

    def expand(self: Tensor, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(self.shape[i - (len(shape) - self.ndim)] if s == -1 else s for i, s in enumerate(shape))
        try:
            if np.broadcast_shapes(self.shape, shape) != shape:
                raise ValueError
        except ValueError:
            raise ValueError(f"expand: cannot expand shape {self.shape} to {shape}") from None
        return Expand.apply(self, shape=shape)

    def __getitem__(self: Tensor, index: Any) -> Tensor:
        idx, advanced = _normalize_index(self, index)
        try:
            self._be.check_index(self.shape, idx)
            return GetItem.apply(self, index=idx, advanced=advanced)
        except IndexError as e:
            raise IndexError(f"index {index!r} is invalid for a tensor of shape {self.shape}: {e}") from None

    def softmax(self, dim: int = -1) -> Tensor: return _softmax(Softmax, self, dim, "softmax")
    def log_softmax(self, dim: int = -1) -> Tensor: return _softmax(LogSoftmax, self, dim, "log_softmax")

    split = split
    chunk = chunk

    def narrow(self: Tensor, dim: int, start: int, length: int) -> Tensor:
        """The slice ``start:start+length`` of ``dim`` (a view, as PyTorch's): ``t.narrow(0, 1, 2)``."""
        d = _one_axis(self.ndim, dim, "narrow")
        n = self.shape[d]
        start = _checks.integer("narrow: start", start)
        length = _checks.integer("narrow: length", length)
        if not -n <= start <= n:
            raise IndexError(f"narrow: start {start} out of range for dim {d} of size {n}")
        if start < 0:
            start += n
        if length < 0 or start + length > n:
            raise ValueError(f"narrow: start ({start}) + length ({length}) exceeds dimension size ({n})")
        return self[(slice(None),) * d + (slice(start, start + length),)]

    def topk(self: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:
        """The ``k`` largest (or smallest) entries along ``dim`` and their indices, as PyTorch's
        ``topk``; the values carry gradients back to where they came from."""
        return topk(self, k, dim, largest, sorted)

    # -- dtype and device -------------------------------------------------------------------------
    def clone(self) -> Tensor: return Identity.apply(self)

    def contiguous(self) -> Tensor:
        """``self`` when its memory is in row-major order, else a row-major copy (differentiable)."""
        return self if self.is_contiguous() else Identity.apply(self)

    def is_contiguous(self) -> bool:
        flags = getattr(self._data, "flags", None)
        return True if flags is None else bool(flags.c_contiguous)

    def type(self, dtype: Any = None) -> Any:
        """``t.type()`` is PyTorch's type name (``'torch.FloatTensor'``); ``t.type(dtype)`` casts."""
        if dtype is None:
            name = _TYPE_NAMES.get(self.dtype, "Tensor")
            return f"torch.cuda.{name}" if self._be.is_device else f"torch.{name}"
        if isinstance(dtype, str) and dtype.endswith("Tensor"):
            inv = {v: k for k, v in _TYPE_NAMES.items()}
            if dtype.rsplit(".", 1)[-1] not in inv:
                raise TypeError(f"type: unknown tensor type {dtype!r}")
            dtype = inv[dtype.rsplit(".", 1)[-1]]
        return self.to(dtype)

    def _new(self, arr: Any, dtype: Any, device: Any, requires_grad: bool) -> Tensor:
        from .tensor import tensor as _tensor
        return _tensor(arr, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad)

    def new_zeros(self, *size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
        """Zeros of ``size`` with this tensor's dtype and device (the ``init_hidden`` idiom)."""
        from .tensor import _shape_arg
        return TensorOps._new(self, np.zeros(_shape_arg(size)), dtype, device, requires_grad)

    def new_ones(self, *size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
        from .tensor import _shape_arg
        return TensorOps._new(self, np.ones(_shape_arg(size)), dtype, device, requires_grad)

    def new_empty(self, *size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
        """As ``new_zeros`` (the values of an ``empty`` tensor are unspecified; here they are zeros)."""
        from .tensor import _shape_arg
        return TensorOps._new(self, np.zeros(_shape_arg(size)), dtype, device, requires_grad)

    def new_full(self, size: Sequence[int], fill_value: Any, *, dtype: Any = None, device: Any = None,
                 requires_grad: bool = False) -> Tensor:
        from .tensor import _shape_arg
        return TensorOps._new(self, np.full(_shape_arg((size,)), fill_value), dtype, device, requires_grad)

    def new_tensor(self, data: Any, *, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
        """A copy of ``data`` with this tensor's dtype and device unless given."""
        src = data.numpy() if isinstance(data, Tensor) else data
        return TensorOps._new(self, np.array(src, copy=True), dtype, device, requires_grad)

    def to(self, *args: Any, dtype: Any = None, device: Any = None) -> Tensor:
        """``t.to("cuda")``, ``t.to(tr.float64)`` or both; differentiable, a no-op when nothing changes."""
        for a in args:
            if isinstance(a, str) or isinstance(a, Backend):
                device = a
            else:
                dtype = a
        out = self
        if dtype is not None:
            dt = _as_dtype(dtype)
            if dt != out.dtype:
                # a cast to an integer dtype has no gradient: cut the graph, as PyTorch does
                out = Cast.apply(out.detach() if out.requires_grad and dt not in _FLOATS else out, dtype=dt)
        if device is not None:
            be = get_backend(device)
            if be is not out._be:
                out = ToDevice.apply(out, backend=be)
        return out

    def cpu(self) -> Tensor: return self.to("cpu")
    def cuda(self) -> Tensor: return self.to("cuda")
    def float(self) -> Tensor: return self.to(float32)
    def double(self) -> Tensor: return self.to(float64)
    def long(self) -> Tensor: return self.to(int64)
    def type_as(self, other: Tensor) -> Tensor: return self.to(other.dtype)
    def astype(self, dtype: Any) -> Tensor: return self.to(_as_dtype(dtype))


def _install() -> None:
    """Put every method of :class:`TensorOps`'s body on ``Tensor``. Their ``__qualname__`` becomes
    ``Tensor.<name>``, so a misuse reads "Tensor.add() got an unexpected keyword argument 'alpha'";
    the module functions shared as methods (``clamp``, ``maximum`` ...) keep their own name."""
    for name, attr in vars(TensorOps).items():
        if name.startswith("__") and name.endswith("__") and not callable(attr):
            continue  # __module__, __doc__, __dict__, the __hash__ = None that defining __eq__ leaves
        fn = attr.__func__ if isinstance(attr, staticmethod) else attr
        if isinstance(fn, type(_install)) and fn.__qualname__.startswith("TensorOps."):
            fn.__qualname__ = f"Tensor.{fn.__name__}"
        setattr(Tensor, name, fn)


_install()


# ---------------------------------------------------------------------------------------
# PyTorch's top-level forms of the methods: ``tr.exp(x)`` is ``x.exp()``


def _function_form(name: str) -> Any:
    method = getattr(Tensor, name)

    def fn(input: Tensor, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}(): argument 'input' must be a Tensor, not {type(input).__name__}")
        return method(input, *args, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``tr.{name}(x, ...)`` is ``x.{name}(...)``."
    return fn


FUNCTION_FORMS = ("exp", "log", "tanh", "sigmoid", "relu", "abs", "sqrt", "sum", "mean", "max", "min", "softmax",
                  "log_softmax", "argmax", "add", "sub", "mul", "div", "pow", "neg", "reshape", "transpose", "permute",
                  "squeeze", "unsqueeze", "flatten", "t", "numel", "clone", "detach")
# installed on the package by ``__init__`` (not here: ``max``, ``sum`` ... would shadow the builtins this module uses)
function_forms = {name: _function_form(name) for name in FUNCTION_FORMS}
