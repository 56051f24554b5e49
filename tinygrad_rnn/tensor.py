"""The Tensor, the Function node and the reverse-mode engine.

A ``Tensor`` wraps one backend array. Every differentiable op is a ``Function`` subclass
(in ``functions/``; the ``Tensor`` methods that call them are in ``ops.py``) with ``forward``
on arrays and ``backward`` returning one gradient per input; ``Function.apply`` runs the
forward and, when a gradient is wanted, records the node. ``Tensor.backward`` walks the
recorded nodes **iteratively** (no recursion, so an unrolled 10,000-step RNN backprops fine),
sums the gradients of a tensor used several times, and frees each node's saved arrays as
soon as it has run. This module imports nothing from ``ops.py`` or ``functions/``.

    >>> import tinygrad_rnn as tr
    >>> x = tr.tensor([1.0, 2.0], requires_grad=True); (x * x).sum().backward(); x.grad.tolist()
    [2.0, 4.0]
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import os
import threading
import traceback
import weakref
from typing import Any, Callable, Sequence

import numpy as np

from ._fork import renew_in_child
from .backend import Backend, backend_of_array, get_backend, normalize_device
from .dtypes import _ALLOWED, _FLOATS, _as_dtype, _default_dtype_for, bool_, float32, float64, int32, int64
from .random import Generator, _rng, get_rng_state, manual_seed, set_rng_state

# (the dtypes and the random-number functions are re-exported: ``tinygrad_rnn.tensor.float32`` etc. stay reachable)
__all__ = [
    "Tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled", "Generator", "manual_seed",
    "get_rng_state", "set_rng_state",
    "tensor", "zeros", "ones", "full", "randn", "rand", "randint", "arange", "eye", "zeros_like",
    "ones_like", "full_like", "randn_like", "rand_like", "float32", "float64", "int64", "int32", "bool_",
    "RemovableHandle", "from_numpy", "as_tensor", "device",
]

# ---------------------------------------------------------------------------------------
# global switches (grad mode, anomaly mode): one save/restore scheme for all of them


class _StateSwitch(contextlib.ContextDecorator):
    """Sets a piece of global state for a ``with`` block (or each call of a decorated function) and
    restores the previous value after. Subclasses say how to read and write it (``_get``/``_put``);
    :meth:`apply_now` switches at once, for the ``set_...`` functions that act without a ``with``."""

    _applied = False

    _get: Callable[[], Any]
    _put: Callable[[Any], None]

    def __init__(self, new: Any):
        self.new = new

    def _recreate_cm(self) -> _StateSwitch:
        # a fresh object per decorated call: one shared ``prev`` breaks recursion and threads
        return self if self._applied else copy.copy(self)

    def apply_now(self) -> _StateSwitch:
        self.prev, self._applied = self._get(), True
        self._put(self.new)
        return self

    def __enter__(self) -> _StateSwitch:
        if not self._applied:
            self.prev = self._get()
            self._put(self.new)
        return self

    def __exit__(self, *exc: Any) -> bool:
        self._put(self.prev)
        return False


_new_object = object.__new__

# ---------------------------------------------------------------------------------------
# grad mode


class _GradMode(threading.local):
    enabled = True


_mode = _GradMode()


def is_grad_enabled() -> bool:
    return _mode.enabled


class _SetGrad(_StateSwitch):
    def _get(self) -> bool:
        return _mode.enabled

    def _put(self, value: bool) -> None:
        _mode.enabled = value


def no_grad() -> _SetGrad:
    """Context manager / decorator: ops inside record nothing (``with tr.no_grad(): ...``)."""
    return _SetGrad(False)


def enable_grad() -> _SetGrad:
    return _SetGrad(True)


# ---------------------------------------------------------------------------------------
# the graph node


class Function:
    """One recorded op. Subclasses define ``forward(*arrays, **kw)`` and ``backward(*grads)``.

    ``forward`` may return one array or a tuple (then ``apply`` returns a tuple of tensors);
    ``backward`` receives one gradient per output (zeros for outputs nobody used) and returns
    one gradient per tensor input (``None`` where the input needs none). ``self.needs[i]``
    says whether input ``i`` wants a gradient; ``self.be``/``self.xp`` are the backend.
    """

    parents: tuple
    needs: tuple
    be: Backend
    xp: Any
    n_out: int = 1
    # What the node keeps for its backward, so in-place changes made before backward are caught.
    # ``saves_inputs``: backward reads the input arrays (the safe default for a new Function; ops that
    # keep only shapes or arrays of their own set it False, and record nothing). ``saves_outputs``:
    # backward reads its own output arrays (Exp, Tanh, ...). ``is_view``: outputs may share the first
    # input's memory (reshape, transpose, basic slicing), so they share its version counter, as in PyTorch.
    saves_inputs: bool = True
    saves_outputs: bool = False
    is_view: bool = False
    # ``fresh_grads``: every gradient backward returns is a new array that nothing else holds, so a
    # leaf's first ``.grad`` can take it without the defensive copy (Linear, Embedding: big weights)
    fresh_grads: bool = False
    _saved_versions: list | None = None
    _out_counters: tuple | None = None

    def name(self) -> str:
        """The op's name in error messages: the class name, with the mode of ops that run several
        (``self.mode``, e.g. ``FusedRecurrence[lstm]``)."""
        mode = self.__dict__.get("mode")
        return f"{type(self).__name__}[{mode}]" if isinstance(mode, str) else type(self).__name__

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, *grads: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs: Tensor, **kwargs: Any) -> Any:
        # The hot path of every op, so written for speed: one and two inputs (nearly every op) are
        # spelled out (no comprehensions, which are calls of their own before Python 3.12), and one
        # plain output with anomaly mode off makes its Tensor inline. Any other case takes _apply_general.
        n = len(inputs)
        if n == 2:
            a, b = inputs
            be = a._be
            if b._be is not be:
                _device_mismatch(cls, inputs)
            ra, rb = a.requires_grad, b.requires_grad
            ctx = cls()
            ctx.be = be
            ctx.xp = be.xp
            ctx.needs = (ra, rb)
            record = (ra or rb) and _mode.enabled
            if record and cls.saves_inputs:
                # the versions of what backward will read; checked before it runs
                va, vb = a._vc, b._vc
                ctx._saved_versions = (0 if va is None else va.v, 0 if vb is None else vb.v)
            out = ctx.forward(a._data, b._data, **kwargs) if kwargs else ctx.forward(a._data, b._data)
        elif n == 1:
            a = inputs[0]
            be = a._be
            ra = a.requires_grad
            ctx = cls()
            ctx.be = be
            ctx.xp = be.xp
            ctx.needs = (ra,)
            record = ra and _mode.enabled
            if record and cls.saves_inputs:
                va = a._vc
                ctx._saved_versions = (0 if va is None else va.v,)
            out = ctx.forward(a._data, **kwargs) if kwargs else ctx.forward(a._data)
        else:
            return _apply_general(cls, inputs, kwargs)
        if type(out) is tuple or _anomaly.enabled:
            return _finish_general(cls, ctx, inputs, out, be, record)
        t = _new_object(Tensor)
        t._data = out
        t._be = be
        t.grad = None
        t._idx = 0
        t._retain = False
        t._hooks = None
        if record:
            ctx.parents = inputs
            t.requires_grad = True
            t._ctx = ctx
            if cls.saves_outputs:
                # a fresh output has no counter yet: give it one, kept by the node with what the message names
                vc = t._vc = _VersionCounter()
                ctx._out_counters = ((vc, out.shape, out.dtype),)
            else:
                t._vc = None
        else:
            t.requires_grad = False
            t._ctx = None
            t._vc = None
        if cls.is_view:
            _share_counter(a, (t,))
        return t

    def release(self) -> None:
        """Drop everything the backward pass held on to. (``_run_backward`` clears the node's ``__dict__``
        itself, inline, after the node has run: the same thing without a call per node.)"""
        self.__dict__.clear()


def _device_mismatch(cls: type, inputs: tuple) -> None:
    raise ValueError(f"{cls.__name__}: expected all tensors on the same device, got "
                     f"{', '.join(sorted({x.device for x in inputs}))}; move them with .to(device)")


def _apply_general(cls: type[Function], inputs: tuple, kwargs: dict) -> Any:
    """``Function.apply`` for any number of inputs (the one- and two-input cases are inlined there)."""
    if not inputs:
        raise TypeError(f"{cls.__name__}.apply: expected at least one tensor input")
    be = inputs[0]._be
    want = False
    for t in inputs:
        if t._be is not be:
            _device_mismatch(cls, inputs)
        if t.requires_grad:
            want = True
    ctx = cls()
    ctx.be = be
    ctx.xp = be.xp
    record = want and _mode.enabled
    ctx.needs = tuple([t.requires_grad for t in inputs])
    if record and cls.saves_inputs:
        ctx._saved_versions = tuple([0 if t._vc is None else t._vc.v for t in inputs])
    out = ctx.forward(*[t._data for t in inputs], **kwargs)
    return _finish_general(cls, ctx, inputs, out, be, record)


def _finish_general(cls: type[Function], ctx: Function, inputs: tuple, out: Any, be: Backend, record: bool) -> Any:
    """The output tensors of a node: several outputs, anomaly checks, counters of saved outputs, views."""
    multi = type(out) is tuple
    if _anomaly.enabled:
        _anomaly_forward(ctx, out if multi else (out,), record)
    make = Tensor._make
    if not record:
        outs = tuple([make(o, be, False, None, 0) for o in out]) if multi else make(out, be, False, None, 0)
    else:
        ctx.parents = inputs
        if multi:
            ctx.n_out = len(out)
            ctx.out_shapes = [(o.shape, o.dtype) for o in out]
            outs = tuple([make(o, be, True, ctx, i) for i, o in enumerate(out)])
        else:
            outs = make(out, be, True, ctx, 0)
        if cls.saves_outputs:
            counters = []
            for t in (outs if multi else (outs,)):
                vc = t._vc = _VersionCounter()
                counters.append((vc, t._data.shape, t._data.dtype))
            ctx._out_counters = tuple(counters)
    if cls.is_view:
        _share_counter(inputs[0], outs if multi else (outs,))
    return outs


# ---------------------------------------------------------------------------------------
# Tensor


class Tensor:
    """An n-dimensional array on a device that can record the ops applied to it.

    >>> Tensor(np.ones((2, 3)), requires_grad=True).shape
    (2, 3)
    """

    __slots__ = ("_data", "_be", "requires_grad", "grad", "_ctx", "_idx", "_retain", "_vc", "_hooks", "__weakref__")
    __array_ufunc__ = None  # so ``ndarray * Tensor`` defers to Tensor.__rmul__

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None, device: Any = None):
        src = data if isinstance(data, Tensor) else None
        if src is not None:
            data = data._data
        be = get_backend(device) if device is not None else (backend_of_array(data) or get_backend("cpu"))
        dt = _as_dtype(dtype) or _default_dtype_for(data)
        if isinstance(data, (list, tuple)) and dt is not None and dt.kind in "iub":
            data = _int_sequence(data)
        arr = be.asarray(data)  # copies another backend's array over itself
        if dt is not None and arr.dtype != dt:
            _check_int_range(arr, dt)
            arr = arr.astype(dt)
        if arr.dtype not in _ALLOWED:
            if arr.dtype.kind == "f":
                raise TypeError(f"unsupported dtype {arr.dtype}: use float32 or float64")
            if arr.dtype.kind in "iu":
                _check_int_range(arr, int64)
                arr = arr.astype(int64)
            else:
                raise TypeError(f"cannot make a tensor from an array of dtype {arr.dtype}")
        self._data = arr
        self._be = be
        self.grad: Tensor | None = None
        self._ctx = None
        self._idx = 0
        self._retain = False
        self._vc = None
        self._hooks = None
        self.requires_grad = False
        if src is not None and arr is src._data:
            # over the same memory as ``src``: one version counter, so an in-place change through either
            # is seen by a backward that saved the other (PyTorch's rule)
            self._vc = vc = src._version_counter()
            vc.shared = True
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _make(cls, data: Any, be: Backend, requires_grad: bool, ctx: Function | None, idx: int) -> Tensor:
        t = _new_object(cls)
        t._data = data
        t._be = be
        t.requires_grad = requires_grad
        t.grad = None
        t._ctx = ctx
        t._idx = idx
        t._retain = False
        t._vc = None
        t._hooks = None
        return t

    # -- properties -----------------------------------------------------------------------
    @property
    def data(self) -> Tensor:
        """PyTorch's ``.data``: a tensor over the same memory, outside autograd (no graph, no grad) and
        with a version counter of its own, so a change through it is not seen by a saved-tensor check
        (as in PyTorch; ``detach()`` is the checked form). ``p.data = t`` makes ``p`` use ``t``'s memory."""
        return Tensor._make(self._data, self._be, False, None, 0)

    @data.setter
    def data(self, value: Any) -> None:
        if isinstance(value, Tensor):
            self._data, self._be = value._data, value._be
            return
        be = backend_of_array(value)
        if be is None:
            raise TypeError(f"data: expected a Tensor, got {type(value).__name__}")
        self._data, self._be = value, be

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """The values as a host array (``np.asarray(t)``); shares memory on the CPU unless ``copy=True``."""
        arr = self._be.to_host(self._data)
        if dtype is not None and arr.dtype != np.dtype(dtype):
            return arr.astype(dtype)
        return arr.copy() if copy else arr

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def device(self) -> device:
        """The device as a ``tr.device`` (a ``str``: ``t.device == "cpu"`` holds; ``t.device.type`` as torch)."""
        d = _DEVICES.get(self._be.name)
        if d is None:
            d = _DEVICES[self._be.name] = device(self._be.name)
        return d

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def grad_fn(self) -> Function | None:
        return self._ctx

    def size(self, dim: int | None = None) -> Any: return self.shape if dim is None else self.shape[dim]
    def numel(self) -> int: return int(self._data.size)
    def dim(self) -> int: return self.ndim

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        extra = ""
        if self.device != "cpu":
            extra += f", device='{self.device}'"
        if self._ctx is not None:
            extra += f", grad_fn=<{type(self._ctx).__name__}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        body = np.array2string(self.numpy(), separator=", ", precision=4, threshold=20)
        return f"tensor({body}, dtype={self.dtype}{extra})"

    def __bool__(self) -> bool:
        if self.numel() != 1:
            raise ValueError(f"truth value of a tensor of shape {self.shape} is ambiguous")
        return bool(self.item())

    def __float__(self) -> float: return float(self.item())
    def __int__(self) -> int: return int(self.item())
    def __hash__(self) -> int: return id(self)

    # -- conversion -----------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (a host copy for GPU tensors; shared memory on the CPU)."""
        return self._be.to_host(self._data)

    def item(self) -> float | int | bool:
        if self.numel() != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self) -> Any: return self.numpy().tolist()

    def detach(self) -> Tensor:
        """The same values cut from the graph (shares memory): the carried state of truncated BPTT."""
        t = Tensor._make(self._data, self._be, False, None, 0)
        t._vc = vc = self._version_counter()  # same memory, same version: an in-place change to either is seen
        vc.shared = True
        return t

    def detach_(self) -> Tensor:
        self._ctx = None
        self.requires_grad = False
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self._data.dtype not in _FLOATS:
            raise TypeError(f"only float32/float64 tensors can require grad, got dtype {self._data.dtype}")
        if not requires_grad and self._ctx is not None:
            raise ValueError("requires_grad_(False) on a non-leaf tensor: use .detach() instead")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self) -> Tensor:
        """Keep ``.grad`` of this non-leaf tensor after backward (for gradient diagnostics)."""
        if self._ctx is not None:
            self._retain = True
            rt = self._ctx.__dict__.setdefault("retained", {})
            rt[self._idx] = weakref.ref(self)
        return self

    def zero_grad(self) -> None:
        self.grad = None

    # -- autograd -------------------------------------------------------------------------
    def backward(self, gradient: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (seeded with ``gradient``)."""
        if not self.requires_grad:
            raise ValueError("backward() on a tensor that does not require grad (no input asked for one)")
        if gradient is None:
            if self.numel() != 1:
                raise ValueError(
                    f"backward() without a gradient needs a scalar output, got shape {self.shape}; "
                    "pass gradient= of the same shape, or reduce with .sum()/.mean() first")
            g = self._be.xp.ones(self._data.shape, dtype=self.dtype)
        else:
            g = gradient._data if isinstance(gradient, Tensor) else self._be.asarray(gradient)
            if tuple(g.shape) != self.shape:
                raise ValueError(f"backward(): gradient shape {tuple(g.shape)} does not match output shape {self.shape}")
            g = g.astype(self.dtype, copy=False)
        _run_backward(self, g, retain_graph)

    # -- version counter: how many in-place changes the values have seen --------------------------
    def _version_counter(self) -> _VersionCounter:
        vc = self._vc
        if vc is None:
            vc = self._vc = _VersionCounter()
        return vc

    @property
    def _version(self) -> int:
        """Bumped by every in-place change (``copy_``, ``+=``, an optimizer step ...), as in PyTorch."""
        vc = self._vc
        return 0 if vc is None else vc.v

    def _bump_version(self) -> None:
        """Record an in-place change of ``self._data``; call it from every op that writes in place."""
        self._version_counter().v += 1

    # -- hooks ------------------------------------------------------------------------------------
    def register_hook(self, hook: Callable[[Tensor], Tensor | None]) -> RemovableHandle:
        """Call ``hook(grad)`` when the gradient with respect to this tensor has been computed.

        The hook may return a tensor to use instead of ``grad``. On a leaf it runs once per
        backward pass, on the summed gradient, before ``.grad`` is accumulated (PyTorch's rule).

            >>> import tinygrad_rnn as tr
            >>> x = tr.tensor([1.0, 2.0], requires_grad=True)
            >>> h = x.register_hook(lambda g: g * 2); (x * 3).sum().backward(); x.grad.tolist()
            [6.0, 6.0]
        """
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        if self._ctx is None:
            return _add_hook(self._leaf_hooks(), "pre", hook)
        per_out = self._ctx.__dict__.setdefault("hooks", {})
        return _add_hook(per_out.setdefault(self._idx, _Hooks()), "pre", hook)

    def register_post_accumulate_grad_hook(self, hook: Callable[[Tensor], None]) -> RemovableHandle:
        """Call ``hook(tensor)`` after this leaf's ``.grad`` has taken its last contribution of a
        backward pass: the moment its gradient is final (what data-parallel training waits for)."""
        if self._ctx is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        return _add_hook(self._leaf_hooks(), "post", hook)

    def _leaf_hooks(self) -> _Hooks:
        if self._hooks is None:
            self._hooks = _Hooks()
        return self._hooks

    # -- in-place helpers used by optimizers and init (no graph) ------------------------------
    def zero_(self) -> Tensor: return self.fill_(0)

    def fill_(self, value: Any) -> Tensor:
        if isinstance(value, Tensor):  # PyTorch accepts a one-element (0-d) tensor as the value
            if value.numel() != 1:
                raise ValueError(f"fill_ only supports a 0-dimension value tensor, got shape {value.shape}")
            value = value.item()
        self._data_for_write("fill_")[...] = value
        self._bump_version()
        return self

    def copy_(self, src: Any) -> Tensor:
        arr = src._data if isinstance(src, Tensor) else src
        try:  # the source broadcasts to this tensor's shape, as in PyTorch
            ok = np.broadcast_shapes(tuple(np.shape(arr)), self.shape) == self.shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"copy_: source shape {tuple(np.shape(arr))} does not match {self.shape}")
        arr = self._be.asarray(arr)
        self._data_for_write("copy_")[...] = arr
        self._bump_version()
        return self

    def _data_for_write(self, what: str) -> Any:
        # (unlike PyTorch, copy_/fill_/zero_ on a leaf that requires grad are allowed with grad mode on,
        # as init and gradcheck use them; the version counter still catches a graph that saved it)
        return _writable(self, what)

    # -- the operators and the other methods that build ops are installed by ops.py -------------


def _writable(t: Tensor, what: str) -> Any:
    """``t._data`` ready to be written in place (a 0-d reduction result may be a read-only NumPy scalar)."""
    data = t._data
    flags = getattr(data, "flags", None)
    if flags is None or isinstance(data, np.generic):
        data = t._data = t._be.xp.array(data)
    elif not getattr(flags, "writeable", True):  # CuPy's flags have no writeable (its arrays always are)
        raise RuntimeError(f"{what}: the tensor's memory is read-only (an expand()ed view shares one value among "
                           "several entries); clone() it first")
    return data


class device(str):
    """PyTorch's ``torch.device``: ``tr.device("cpu")`` (or ``"cuda"``, ``"cuda:0"``); a ``str``, so it is
    accepted wherever a device string is, and prints as PyTorch's does (``device(type='cpu')``)."""

    def __new__(cls, type: Any, index: int | None = None) -> device:  # noqa: A002 - PyTorch's argument name
        if isinstance(type, device) and index is None:
            return type
        if not isinstance(type, str):
            raise TypeError(f"device(): expected a string such as 'cpu' or 'cuda', got {builtins_type(type).__name__}")
        name = f"{type}:{index}" if index is not None else type
        normalize_device(name)  # a clear error for an unknown device, here rather than at first use
        return super().__new__(cls, name.strip().lower())

    @property
    def type(self) -> str:
        return str.split(self, ":")[0]

    @property
    def index(self) -> int | None:
        parts = str.split(self, ":")
        return int(parts[1]) if len(parts) > 1 else None

    def __repr__(self) -> str:
        idx = self.index
        return f"device(type='{self.type}')" if idx is None else f"device(type='{self.type}', index={idx})"


builtins_type = type
_DEVICES: dict[str, device] = {}  # one object per backend name: Tensor.device is read on hot paths


class _VersionCounter:
    """One counter shared by every tensor over the same memory (a tensor and its ``detach()``).

    The starting values are class attributes, so making one (once per saved output of every op) runs
    no ``__init__``; the first bump or share writes the instance's own."""

    v = 0
    shared = False  # another tensor (a view, a detach()) sees the same memory


class _Hooks:
    """The hooks of one tensor: ``pre`` see (and may replace) its gradient, ``post`` see the leaf
    after ``.grad`` was accumulated. Keyed by a handle id so that ``remove()`` is exact."""

    __slots__ = ("pre", "post")

    def __init__(self) -> None:
        self.pre: dict[int, Callable] = {}
        self.post: dict[int, Callable] = {}


class RemovableHandle:
    """Returned by ``register_hook``: ``handle.remove()`` unregisters the hook (idempotent)."""

    _ids = itertools.count(1)  # next() on a count is atomic under the GIL: no two handles share an id

    def __init__(self, table: dict[int, Callable]):
        self.id = next(RemovableHandle._ids)
        self._table = table

    def remove(self) -> None:
        self._table.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def _add_hook(hooks: _Hooks, kind: str, fn: Callable) -> RemovableHandle:
    table = getattr(hooks, kind)
    handle = RemovableHandle(table)
    table[handle.id] = fn
    return handle


def _run_pre_hooks(hooks: _Hooks | None, g: Any, be: Backend) -> Any:
    """Run tensor hooks on a gradient array; a hook returning a tensor replaces it."""
    if hooks is None or not hooks.pre:
        return g
    for fn in list(hooks.pre.values()):
        out = fn(Tensor._make(g, be, False, None, 0))
        if out is not None:
            new = out._data if isinstance(out, Tensor) else be.asarray(out)
            if tuple(new.shape) != tuple(g.shape):
                raise RuntimeError(f"hook {getattr(fn, '__name__', fn)!r} returned a gradient of shape "
                                   f"{tuple(new.shape)} for a tensor of shape {tuple(g.shape)}")
            g = new
    return g


# leaf ``.grad`` updates are read-modify-writes: one lock makes concurrent backward passes into
# shared parameters sum exactly as serial ones do
_accumulate_lock = threading.Lock()
renew_in_child(globals(), "_accumulate_lock", threading.Lock)  # a fork mid-backward would leave it held


class _LeafGrad:
    """A leaf's gradient summed over one backward pass, until its last consumer (``uses_left``) has run.
    ``fresh``: ``grad`` is a new array nobody else holds (the leaf's first ``.grad`` may take it uncopied)."""

    __slots__ = ("parent", "grad", "uses_left", "fresh")

    def __init__(self, parent: Tensor, uses_left: int, fresh: bool):
        self.parent, self.grad, self.uses_left, self.fresh = parent, None, uses_left, fresh


def _run_backward(root: Tensor, grad: Any, retain_graph: bool) -> None:
    if root._ctx is None:  # a leaf: its gradient is the seed itself
        _accumulate_leaf(root, grad)
        return
    rctx = root._ctx
    order, leaf_uses = _topological_order(rctx)
    # the gradients waiting at each node, keyed by the node (Functions hash by identity): the array
    # itself for a one-output node (nearly all), a list with one entry per output otherwise
    pending: dict[Function, Any] = {}
    if rctx.n_out == 1:
        pending[rctx] = grad
    else:
        pending[rctx] = [None] * rctx.n_out
        pending[rctx][root._idx] = grad
    # a leaf's contributions are summed over the pass and accumulated once, when its last consumer
    # has run (so post-accumulate hooks see the final gradient, as in PyTorch)
    leaf_grads: dict[int, _LeafGrad] = {}
    be = root._be
    xp = be.xp
    anomaly = _anomaly.enabled
    pop = pending.pop

    for ctx in reversed(order):
        parents, needs = ctx.parents, ctx.needs
        got = pop(ctx, None)
        if got is None:  # nothing flowed here (an upstream backward returned None)
            for parent, need in zip(parents, needs):
                if need and parent._ctx is None:
                    _leaf_done(leaf_grads, leaf_uses, parent, None, False)
            continue
        n_out = ctx.n_out
        extra = ctx.__dict__
        gouts = None  # None: the one output's gradient is ``got`` (the common case, called without a tuple)
        if n_out != 1 or "hooks" in extra or "retained" in extra:
            gouts = (got,) if n_out == 1 else got
            if "hooks" in extra or "retained" in extra:
                gouts = _node_hooks(ctx, list(gouts), be)
            if n_out > 1 and any(g is None for g in gouts):
                outs_shape = ctx.out_shapes
                gouts = [g if g is not None else xp.zeros(outs_shape[i][0], dtype=outs_shape[i][1])
                         for i, g in enumerate(gouts)]
        saved = ctx._saved_versions
        if saved is not None:
            for t, v in zip(parents, saved):
                vc = t._vc
                if vc is not None and vc.v != v:
                    _check_versions(ctx)
        outc = ctx._out_counters
        if outc is not None:
            for oc in outc:
                if oc[0].v:
                    _check_versions(ctx)
        gins = ctx.backward(got) if gouts is None else ctx.backward(*gouts)
        if type(gins) is not tuple:
            gins = (gins,)
        if anomaly:
            _anomaly_backward(ctx, gins)
        fresh = ctx.fresh_grads
        for parent, need, g in zip(parents, needs, gins):
            if not need:
                continue
            if g is not None and g.shape != parent._data.shape:
                raise RuntimeError(
                    f"internal error: {type(ctx).__name__}.backward returned a gradient of shape "
                    f"{tuple(g.shape)} for an input of shape {parent.shape}")
            pc = parent._ctx
            if pc is None:  # a leaf
                key = id(parent)
                if key not in leaf_grads:
                    if leaf_uses[key] == 1:  # its only consumer (the hot case): no sum first
                        if g is not None:
                            _accumulate_leaf(parent, g, fresh)
                        continue
                elif g is not None:
                    # a middle consumer adding to our own sum so far: _leaf_done's in-place case, inline
                    entry = leaf_grads[key]
                    cur = entry.grad
                    if entry.uses_left > 1 and cur is not None and entry.fresh and type(cur) is type(g) \
                            and cur.shape == g.shape and cur.dtype == g.dtype and cur.ndim:
                        cur += g
                        entry.uses_left -= 1
                        continue
                _leaf_done(leaf_grads, leaf_uses, parent, g, fresh)
            elif g is not None:
                if pc.n_out == 1:
                    pending[pc] = pending[pc] + g if pc in pending else g
                else:
                    slot = pending.get(pc)
                    if slot is None:
                        slot = pending[pc] = [None] * pc.n_out
                    i = parent._idx
                    slot[i] = g if slot[i] is None else slot[i] + g
        if not retain_graph:
            extra.clear()  # Function.release: drop what the backward held on to
    for entry in list(leaf_grads.values()):  # consumers that never ran (unreachable by gradient)
        if entry.grad is not None:
            _accumulate_leaf(entry.parent, entry.grad, entry.fresh)


def _leaf_done(leaf_grads: dict, leaf_uses: dict, parent: Tensor, g: Any, fresh: bool) -> None:
    """One consumer of a leaf has run (``g``: its contribution, or None); after the last, accumulate."""
    key = id(parent)
    entry = leaf_grads.get(key)
    if entry is None:
        entry = leaf_grads[key] = _LeafGrad(parent, leaf_uses[key], fresh)
    if g is not None:
        cur = entry.grad
        if cur is None:
            entry.grad, entry.fresh = g, fresh
        elif entry.fresh and type(cur) is type(g) and cur.shape == g.shape and cur.dtype == g.dtype and cur.ndim:
            cur += g  # our own sum so far (nobody else holds it): add in place, no new array
        else:
            entry.grad, entry.fresh = cur + g, True  # a sum is a new array
    entry.uses_left -= 1
    if entry.uses_left == 0:
        del leaf_grads[key]
        if entry.grad is not None:
            _accumulate_leaf(parent, entry.grad, entry.fresh)


def _node_hooks(ctx: Function, gouts: list, be: Backend) -> list:
    """A node's output hooks (``register_hook`` on a non-leaf) and ``retain_grad`` tensors, in that order."""
    hooks = ctx.__dict__.get("hooks")
    if hooks:
        gouts = [g if g is None or i not in hooks else _run_pre_hooks(hooks[i], g, be) for i, g in enumerate(gouts)]
    retained = ctx.__dict__.get("retained")
    if retained:
        for i, ref in retained.items():
            t = ref()
            if t is not None and gouts[i] is not None:
                t.grad = Tensor._make(gouts[i] if t.grad is None else t.grad._data + gouts[i], t._be, False, None, 0)
    return gouts


def _describe(t: Tensor) -> str:
    return f"of shape {t.shape}, {t.dtype}"


def _check_versions(ctx: Function) -> None:
    """PyTorch's check: what a node saved must not have changed in place since its forward."""
    hint = ("Hint: the operation that failed to compute its gradient is the one named; "
            "tr.autograd.set_detect_anomaly(True) shows where it was created. Change the tensor out of place "
            "(x = x + y, x.clone()) or call backward() before the in-place change.")
    saved = ctx._saved_versions
    if saved is not None:
        for i, (t, v) in enumerate(zip(ctx.parents, saved)):
            now = 0 if t._vc is None else t._vc.v
            if now != v:
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been modified by an inplace "
                    f"operation: [{ctx.name()} input {i} {_describe(t)}] is at version {now}; expected version "
                    f"{v} instead. {hint}{_created_at(ctx)}")
    outs = ctx._out_counters
    if outs is not None:
        for i, (vc, shape, dtype) in enumerate(outs):
            if vc.v != 0:
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been modified by an inplace "
                    f"operation: [{ctx.name()} output {i} of shape {shape}, {dtype}] is at version {vc.v}; expected version 0 "
                    f"instead. {hint}{_created_at(ctx)}")


def _share_counter(src: Tensor, outs: tuple) -> None:
    """Outputs of a view op that really share ``src``'s memory share its version counter."""
    may_share = getattr(src._be.xp, "may_share_memory", None)
    for o in outs:
        if may_share is None or may_share(o._data, src._data):
            o._vc = vc = src._version_counter()
            vc.shared = True


# ---------------------------------------------------------------------------------------
# anomaly mode (switched by tinygrad_rnn.autograd; one flag check per op while off)


class _AnomalyMode:
    __slots__ = ("enabled", "check_nan", "check_forward")

    def __init__(self) -> None:
        self.enabled = False
        self.check_nan = True
        self.check_forward = False


_anomaly = _AnomalyMode()


def _user_stack() -> list:
    """The caller's stack without the library's own frames (where the user's code made the op)."""
    root = os.path.dirname(os.path.abspath(__file__)) + os.sep
    return [f for f in traceback.extract_stack()[:-1] if not os.path.abspath(f.filename).startswith(root)]


def _created_at(ctx: Function) -> str:
    stack = ctx.__dict__.get("anomaly_stack")
    if not stack:
        return ""
    last = stack[-1]
    return (f"\n{ctx.name()} was created at {last.filename}:{last.lineno}; traceback of its forward call "
            "(most recent call last):\n" + "".join(traceback.format_list(stack[-8:])).rstrip())


def _nonfinite(xp: Any, a: Any) -> str | None:
    """'nan' or 'inf' when the float array ``a`` holds such a value, else None."""
    if a is None or getattr(a, "dtype", None) is None or a.dtype.kind != "f":
        return None
    if bool(xp.isnan(a).any()):
        return "nan"
    if bool(xp.isinf(a).any()):
        return "inf"
    return None


def _anomaly_forward(ctx: Function, outs: tuple, record: bool) -> None:
    if record:
        ctx.anomaly_stack = _user_stack()
    if _anomaly.check_forward:
        for i, o in enumerate(outs):
            bad = _nonfinite(ctx.xp, o)
            if bad:
                if not record:
                    ctx.anomaly_stack = _user_stack()
                raise RuntimeError(f"Function '{ctx.name()}' returned {bad} values in its output {i} "
                                   f"(forward, anomaly mode check_forward=True).{_created_at(ctx)}")


def _anomaly_backward(ctx: Function, gins: tuple) -> None:
    if not _anomaly.check_nan:
        return
    for i, (g, p) in enumerate(zip(gins, ctx.parents)):
        bad = _nonfinite(ctx.xp, g)
        if bad:
            raise RuntimeError(f"Function '{ctx.name()}' returned {bad} values in its {i}th output (the gradient "
                               f"for its input {i} {_describe(p)}; backward, anomaly mode).{_created_at(ctx)}")


def _accumulate_leaf(t: Tensor, g: Any, fresh: bool = False) -> None:
    """Add ``g`` into ``t.grad`` (in place once ``t.grad`` exists, as PyTorch does), then run hooks.

    ``fresh``: ``g`` is a new array nobody else holds, so a first ``.grad`` may take it uncopied."""
    hooks = t._hooks
    if hooks is not None and hooks.pre:
        g0 = g
        g = _run_pre_hooks(hooks, g, t._be)
        fresh = fresh and g is g0
    if g.dtype != t._data.dtype:
        g, fresh = g.astype(t._data.dtype), True
    xp = t._be.xp
    with _accumulate_lock:
        cur = t.grad
        flags = getattr(cur._data, "flags", None) if cur is not None else None
        if (cur is None or tuple(cur._data.shape) != tuple(g.shape) or cur._data.dtype != g.dtype
                or (flags is not None and not getattr(flags, "writeable", True))):
            # copy: the same array may be handed to several inputs (e.g. by Add), and
            # optimizers and clipping scale .grad in place; xp.array also turns the NumPy
            # scalar a 0-d op returns into a writable 0-d array
            if cur is not None:
                new = xp.asarray(cur._data + g)
            elif fresh and getattr(g, "ndim", 0) > 0 and getattr(getattr(g, "flags", None), "writeable", True):
                new = g
            else:
                new = xp.array(g, copy=True)
            t.grad = Tensor._make(new, t._be, False, None, 0)
        else:
            cur._data += g
            cur._bump_version()
    if hooks is not None and hooks.post:
        for fn in list(hooks.post.values()):
            fn(t)


def _topological_order(root: Function) -> tuple[list[Function], dict[int, int]]:
    """Nodes reachable from ``root``, every node after all the nodes it depends on (iterative DFS),
    and for each leaf that wants a gradient, how many (node, input) edges feed it."""
    if "parents" not in root.__dict__:
        raise RuntimeError(
            "trying to backward through the graph a second time (its saved arrays were freed); "
            "pass retain_graph=True to the first backward(), or detach() carried state for truncated BPTT")
    order: list[Function] = []
    # a node is marked when it is expanded, not when it is pushed: marking at push time lets a
    # node reached by two paths (b and 2*b feeding one add) finish before one of its consumers.
    # An expanded node is pushed again below its inputs; popped a second time (expanded, not finished)
    # it is finished. (No duplicate of it can lie above that entry: only its inputs' subgraph is pushed
    # there, and the graph has no cycles.) Nodes hash by identity.
    state: dict[Function, bool] = {}  # node -> finished? (present once expanded); Functions hash by identity
    leaf_uses: dict[int, int] = {}
    stack: list[Function] = [root]
    pop, push, emit = stack.pop, stack.append, order.append
    while stack:
        node = pop()
        if node in state:
            if not state[node]:
                state[node] = True
                emit(node)
            continue
        state[node] = False
        push(node)
        try:
            parents = node.parents
        except AttributeError:
            raise RuntimeError(
                "trying to backward through part of a graph that was already freed; "
                "pass retain_graph=True to the earlier backward(), or detach() the carried state") from None
        for p, need in zip(parents, node.needs):
            c = p._ctx
            if c is None:
                if need:
                    k = id(p)
                    if k in leaf_uses:
                        leaf_uses[k] += 1
                    else:
                        leaf_uses[k] = 1
            elif c not in state:
                push(c)
    return order, leaf_uses


# ---------------------------------------------------------------------------------------
# factories


def _int_sequence(data: Any) -> Any:
    """A nested list of Python ints as an array, refusing values outside int64 (NumPy would make them
    uint64 or objects, and the cast to int64 would wrap silently)."""
    try:
        arr = np.asarray(data)
    except OverflowError:
        arr = np.asarray(data, dtype=object)
    if arr.dtype == object:
        flat = [v for v in arr.reshape(-1).tolist() if isinstance(v, (int, np.integer))]
        bad = next((v for v in flat if not -2**63 <= int(v) < 2**63), None)
        if bad is not None:
            raise ValueError(f"value {bad} is out of range for int64")
    return arr


def _check_int_range(arr: Any, dt: np.dtype) -> None:
    """Refuse a cast to an integer dtype that would wrap (uint64 2**64-100 -> int64 -100) or is undefined
    (float inf/nan, 1e30); PyTorch raises or is undefined here, and a wrapped index is a silent wrong answer."""
    if dt.kind not in "iu" or arr.dtype.kind not in "iuf" or arr.size == 0:
        return
    info = np.iinfo(dt)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr < info.min) | (arr >= 2.0 ** (info.bits - (dt.kind == "i")))
        if bool(bad.any()):
            raise ValueError(f"cannot convert {arr.reshape(-1)[bad.reshape(-1)][0]!r} to {dt}: out of range or not finite")
        return
    lo, hi = arr.min(), arr.max()
    if int(lo) < info.min or int(hi) > info.max:
        raise ValueError(f"value {int(hi) if int(hi) > info.max else int(lo)} is out of range for {dt}")


def tensor(data: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """Make a tensor holding a **copy** of ``data`` (as ``torch.tensor``): lists of floats become
    float32, NumPy arrays keep their dtype. ``from_numpy``/``as_tensor`` share memory instead.

    >>> tensor([[1.0, 2.0]]).dtype
    dtype('float32')
    """
    t = Tensor(data, dtype=dtype, device=device)
    src = data._data if isinstance(data, Tensor) else data
    if t._data is src or _may_share(t, src):
        t = Tensor._make(t._be.xp.array(t._data, copy=True), t._be, False, None, 0)
    return t.requires_grad_(requires_grad) if requires_grad else t


def _may_share(t: Tensor, src: Any) -> bool:
    if backend_of_array(src) is None:
        return False
    may_share = getattr(t._be.xp, "may_share_memory", None)
    return may_share is None or bool(may_share(t._data, src))


def from_numpy(ndarray: np.ndarray) -> Tensor:
    """A CPU tensor over the NumPy array's memory (as ``torch.from_numpy``): a change to either is seen
    by the other. Only ``np.ndarray`` is accepted; ``tr.tensor`` copies."""
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"from_numpy: expected np.ndarray (got {type(ndarray).__name__})")
    if ndarray.dtype not in _ALLOWED:
        raise TypeError(f"from_numpy: can't convert an array of dtype {ndarray.dtype}; the supported dtypes are "
                        "float32, float64, int32, int64 and bool")
    return Tensor(ndarray, device="cpu")


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """``data`` as a tensor, sharing its memory when it can (same dtype and device; a tensor comes back
    as it is), else a copy: ``torch.as_tensor``'s rule."""
    if isinstance(data, Tensor):
        dt = _as_dtype(dtype)
        if (dt is None or dt == data.dtype) and (device is None or get_backend(device) is data._be):
            return data
        return data.to(*[a for a in (dt, device) if a is not None])  # a copy that keeps the graph, as torch
    return Tensor(data, dtype=dtype, device=device)


def _shape_arg(shape: Sequence[Any]) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for s in shape:
        if not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"shape must be non-negative integers, got {tuple(shape)}")
    return tuple(int(s) for s in shape)


def _host_factory(arr: np.ndarray, dtype: Any, device: Any, requires_grad: bool) -> Tensor:
    dt = _as_dtype(dtype) or float32
    return Tensor(arr.astype(dt, copy=False), requires_grad=requires_grad, device=device)


def zeros(*shape: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    be = get_backend(device)
    arr = be.xp.zeros(_shape_arg(shape), dtype=_as_dtype(dtype) or float32)
    return Tensor._make(arr, be, False, None, 0).requires_grad_(requires_grad)


def ones(*shape: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    be = get_backend(device)
    arr = be.xp.ones(_shape_arg(shape), dtype=_as_dtype(dtype) or float32)
    return Tensor._make(arr, be, False, None, 0).requires_grad_(requires_grad)


def full(shape: Sequence[int], fill_value: float, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    be = get_backend(device)
    arr = be.xp.full(_shape_arg((shape,)), fill_value, dtype=_as_dtype(dtype) or float32)
    return Tensor._make(arr, be, False, None, 0).requires_grad_(requires_grad)


def randn(*shape: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False,
          seed: int | None = None, generator: Generator | None = None) -> Tensor:
    """Standard-normal samples; ``seed=`` or ``generator=`` make them reproducible."""
    arr = _rng(seed, generator).standard_normal(_shape_arg(shape))
    return _host_factory(arr, dtype, device, requires_grad)


def rand(*shape: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False,
         seed: int | None = None, generator: Generator | None = None) -> Tensor:
    """Uniform samples in [0, 1)."""
    arr = _rng(seed, generator).random(_shape_arg(shape))
    return _host_factory(arr, dtype, device, requires_grad)


def randint(low: int, high: Any = None, size: Sequence[int] | None = None, dtype: Any = None, device: Any = None,
            seed: int | None = None, generator: Generator | None = None) -> Tensor:
    """Integers uniform in [low, high): ``tr.randint(0, 9, (2, 3))`` or, as PyTorch, ``tr.randint(9, (2, 3))``."""
    if size is None:
        if not isinstance(high, (tuple, list)):
            raise TypeError("randint: expected randint(high, size) or randint(low, high, size) with size a tuple")
        low, high, size = 0, low, high
    elif high is None:
        low, high = 0, low
    if high <= low:
        raise ValueError(f"randint: expected low < high, got low={low}, high={high}")
    arr = _rng(seed, generator).integers(low, high, size=_shape_arg((size,)))
    return Tensor(arr.astype(_as_dtype(dtype) or int64), device=device)


def arange(start: float, end: float | None = None, step: float = 1, dtype: Any = None, device: Any = None,
           requires_grad: bool = False) -> Tensor:
    if end is None:
        start, end = 0, start
    if dtype is None:
        dtype = int64 if all(isinstance(v, (int, np.integer)) for v in (start, end, step)) else float32
    return Tensor(np.arange(start, end, step, dtype=_as_dtype(dtype)), device=device, requires_grad=requires_grad)


def eye(n: int, m: int | None = None, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _host_factory(np.eye(n, m), dtype, device, requires_grad)


def _like(fn: Callable, t: Tensor, dtype: Any, device: Any, requires_grad: bool, **kw: Any) -> Tensor:
    return fn(*t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad, **kw)


def zeros_like(t: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _like(zeros, t, dtype, device, requires_grad)


def ones_like(t: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _like(ones, t, dtype, device, requires_grad)


def full_like(t: Tensor, fill_value: float, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def randn_like(t: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False, **kw: Any) -> Tensor:
    return _like(randn, t, dtype, device, requires_grad, **kw)


def rand_like(t: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False, **kw: Any) -> Tensor:
    return _like(rand, t, dtype, device, requires_grad, **kw)

