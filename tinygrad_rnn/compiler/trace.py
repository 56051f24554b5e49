"""Trace one step of a cell into a graph of ops between (x_t, state) and (out_t, new_state).

The cell runs once on real tensors while ``Function.apply`` and a few ``Tensor`` methods are
wrapped (for this thread only): every op whose inputs depend on the step's input or state
becomes a node; everything else (parameters, ``W.T``, ``1 - p`` of parameters ...) stays an
ordinary tensor of the surrounding graph and enters the step as a *boundary* leaf, so its
gradient flows on through the normal engine. What cannot be compiled is refused on the spot,
naming the op and the line of the user's cell that made it:

  * an op with no compiled form, or one that mixes batch rows (a reduction over the batch,
    a transpose of a per-step value, a product with a per-step right operand);
  * data-dependent Python control flow (``bool()``, ``item()``, ``numpy()`` of a per-step value);
  * in-place changes (``h += 1``, ``copy_``): anything that bumps a version counter.

    >>> import tinygrad_rnn as tr
    >>> g = trace_step(lambda x, h: ((x * h).tanh(),) * 2, tr.ones(2, 3), [tr.ones(2, 3)], as_tuple=False)
    >>> [n.op_name for n in g.nodes]
    ['Mul', 'Tanh']
"""
from __future__ import annotations

import os
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .._fork import renew_in_child
from ..tensor import Function, Tensor
from . import ops_table as OT

__all__ = ["CompileError", "Val", "Node", "StepGraph", "trace_step"]

_LIB_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class CompileError(RuntimeError):
    """The cell cannot be compiled; the message names the op and the line of the cell."""


def _user_line() -> str:
    """file:line of the innermost frame outside the library (the user's cell)."""
    for f in reversed(traceback.extract_stack()[:-1]):
        if not os.path.abspath(f.filename).startswith(_LIB_ROOT):
            return f"{f.filename}:{f.lineno}" + (f" ({f.line.strip()})" if f.line else "")
    return "<unknown line>"


def _refuse(what: str) -> CompileError:
    return CompileError(f"cannot compile the cell: {what}, at {_user_line()}. Run it op by op with compile=False "
                        "(or compile='auto', which falls back with a warning).")


@dataclass(eq=False)
class Val:
    """A value of the step. kind: ``x`` (the step's input), ``state`` (index ``i``), ``param`` (a
    boundary tensor, or a constant array), ``const`` (a 0-d constant, by value) or ``node``."""

    kind: str
    shape: tuple
    dep: bool = False
    i: int = 0
    tensor: Any = None
    array: Any = None
    value: float = 0.0
    node: Any = None
    width: int = 1  # dependent values: the last dim (1 for a (B,) value)


@dataclass(eq=False)
class Node:
    op: Any  # the Function class (or a comparison's dunder name)
    ins: list
    outs: list
    kw: dict = field(default_factory=dict)
    uses: list = field(default_factory=list)  # per input: (rows, width) of its 2-D view

    @property
    def op_name(self) -> str:
        return self.op if isinstance(self.op, str) else self.op.__name__


@dataclass(eq=False)
class StepGraph:
    x: Val
    states: list
    nodes: list
    params: list  # boundary Vals (kind param), in order of first use
    out: Val = None
    new_states: list = None
    batch: int = 0

    def signature(self) -> tuple:
        """Everything the generated code depends on (no batch or sequence length): the cache key."""
        ref: dict[int, Any] = {id(self.x): ("x",)}
        for i, s in enumerate(self.states):
            ref[id(s)] = ("s", i)
        for k, p in enumerate(self.params):
            ref[id(p)] = ("p", k)
        sig: list[Any] = [("x", self.x.width, str(self.x.tensor.dtype)),
                          tuple(("s", s.shape[1:]) for s in self.states),
                          tuple(("p", p.shape, _needs_grad(p), p.tensor is None) for p in self.params)]
        for n_i, n in enumerate(self.nodes):
            for o_i, o in enumerate(n.outs):
                ref[id(o)] = ("n", n_i, o_i)
        for n in self.nodes:
            ins = tuple(ref[id(v)] if v.kind != "const" else ("c", repr(float(v.value))) for v in n.ins)
            sig.append((n.op_name, ins, tuple(sorted((k, _freeze(v)) for k, v in n.kw.items())), tuple(n.uses),
                        tuple(o.shape[1:] for o in n.outs)))
        sig.append(("out", ref.get(id(self.out), None), tuple(ref.get(id(s), None) for s in self.new_states)))
        return tuple(sig)

    def constants(self) -> list:
        """The values of the boundary leaves that take no gradient (constant arrays, frozen or no_grad
        tensors): equal between two traces, or the cell makes them anew each step (random, data-derived)."""
        return [p.array if p.tensor is None else p.tensor._data for p in self.params
                if p.tensor is None or not p.tensor.requires_grad]


def _needs_grad(p: Val) -> bool:
    """Gradient code is made for every float tensor leaf (not only those requiring grad now), so
    training and no_grad evaluation share one compiled kernel."""
    return p.tensor is not None and p.tensor.dtype.kind == "f"


def _freeze(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, float):
        return repr(v)
    return v


class _TaggedBool(np.ndarray):
    """A comparison's result array, carrying the Val it came from through ``where``'s copy."""

    def __array_finalize__(self, obj: Any) -> None:
        self._val = getattr(obj, "_val", None)


class _Recorder:
    def __init__(self, batch: int, dtype: Any):
        self.batch, self.dtype = batch, dtype
        self.vals: dict[int, Val] = {}
        self.keep: list = []  # the traced tensors stay alive, so their ids stay unique
        self.nodes: list[Node] = []
        self.params: list[Val] = []

    # -- values ----------------------------------------------------------------------------
    def add(self, t: Tensor, v: Val) -> Val:
        self.vals[id(t)] = v
        self.keep.append(t)
        return v

    def val_of(self, t: Any) -> Val:
        if isinstance(t, Tensor):
            v = self.vals.get(id(t))
            if v is not None:
                return v
            if t.ndim == 0 and not t.requires_grad:
                return self.add(t, Val("const", (), value=float(t._data)))
            v = Val("param", tuple(t.shape), tensor=t)
            self.params.append(v)
            return self.add(t, v)
        if isinstance(t, (bool, int, float, np.number)):
            return Val("const", (), value=float(t))
        raise _refuse(f"an operand of type {type(t).__name__}")

    def const_array(self, a: Any) -> Val:
        tagged = getattr(a, "_val", None)
        if tagged is not None:
            return tagged
        arr = np.asarray(a)
        if arr.ndim == 0:
            return Val("const", (), value=float(arr))
        v = Val("param", tuple(arr.shape), array=arr.astype(self.dtype))
        self.params.append(v)
        return v

    # -- shapes: every per-step value is (B, width) or (B,) --------------------------------
    def dep_out(self, shape: tuple, name: str) -> Val:
        b = self.batch
        if len(shape) == 2 and shape[0] == b:
            return Val("node", tuple(shape), dep=True, width=shape[1])
        if len(shape) == 1 and shape[0] == b:
            return Val("node", tuple(shape), dep=True, width=1)
        raise _refuse(f"{name} makes a per-step value of shape {tuple(shape)} (compiled cells keep every per-step "
                      f"value (batch={b}, features) or (batch,))")

    def use_of(self, v: Val, out_shape: tuple, name: str) -> tuple:
        """(rows, width) of input ``v`` as broadcast against an output of ``out_shape``."""
        b = self.batch
        if v.kind == "const":
            return (1, 1)
        s = v.shape
        if len(out_shape) == 1:  # a (B,) output: inputs line up with the batch
            if v.dep:
                return ("B", 1)
            if len(s) == 0 or s == (1,):
                return (1, 1)
            if s == (b,):
                return ("B", 1)
            raise _refuse(f"{name} broadcasts a tensor of shape {s} against a per-row value of shape {out_shape}")
        w = out_shape[1]
        if v.dep:
            if len(s) != 2:
                raise _refuse(f"{name} broadcasts a per-step value of shape {s} (batch,) against shape {out_shape}: "
                              "it lines up with the feature dim, mixing batch rows (use keepdim=True)")
            return ("B", s[1])
        if len(s) > 2:
            raise _refuse(f"{name} broadcasts a tensor of shape {s} against a per-step value of shape {out_shape}")
        s2 = (1,) * (2 - len(s)) + tuple(s)
        rows = "B" if s2[0] == b and b != 1 else 1
        if s2[0] not in (1, b) or s2[1] not in (1, w):
            raise _refuse(f"{name} broadcasts a tensor of shape {s} against {out_shape}")
        return (rows, s2[1])

    # -- the op hook -------------------------------------------------------------------------
    def on_apply(self, cls: Any, inputs: tuple, kw: dict, outs: Any) -> None:
        vins = [self.val_of(t) for t in inputs]
        cond = None
        if "cond" in kw:
            cond = self.const_array(kw["cond"])
        if not any(v.dep for v in vins) and not (cond is not None and cond.dep):
            return  # a computation on parameters only: it stays in the surrounding graph
        rule = OT.rule_for(cls)
        name = cls.__name__
        if rule is None:
            raise _refuse(f"the op {name} has no compiled form")
        if rule.kind == "refuse":
            raise _refuse(f"{name}: {rule.reason}")
        outs_t = outs if isinstance(outs, tuple) else (outs,)
        node = Node(cls, vins, [])
        kind = rule.kind
        if kind == "ew":
            if cond is not None:
                node.ins = vins + [cond]
            out = self.dep_out(outs_t[0].shape, name)
            node.uses = [self.use_of(v, outs_t[0].shape, name) for v in node.ins]
            if cls is OT._F.PowScalar:
                node.kw = {"p": float(kw["p"])}
            elif cls is OT._F.Clamp:
                node.kw = {"lo": None if kw.get("lo") is None else float(kw["lo"]),
                           "hi": None if kw.get("hi") is None else float(kw["hi"])}
            node.outs = [out]
        elif kind in ("reduce", "softmax"):
            a = vins[0]
            axis = kw.get("axis")
            ax = (axis,) if isinstance(axis, (int, np.integer)) else axis
            if not a.dep or len(a.shape) != 2 or ax is None or tuple(ax) != (1,):
                raise _refuse(f"{name} over dims {axis} of a per-step value of shape {a.shape}: only the last (feature) "
                              "dim of a (batch, features) value can be reduced (others mix batch rows)")
            node.uses = [("B", a.width)]
            node.outs = [self.dep_out(outs_t[0].shape, name)]
            if kind == "reduce" and cls is OT._F.MaxDim:
                node.kw = {"pick": "max" if kw["pick"] is np.argmax or getattr(kw["pick"], "__name__", "") == "argmax"
                           else "min"}
        elif kind == "alias":
            node.outs, node.kw = self.alias(cls, vins[0], kw, outs_t, name)
            node.uses = [("B", vins[0].width)]
        elif kind == "cat":
            if kw["axis"] != len(outs_t[0].shape) - 1 or len(outs_t[0].shape) != 2:
                raise _refuse(f"{name} along dim {kw['axis']}: compiled cells concatenate along the last dim only")
            out = self.dep_out(outs_t[0].shape, name)
            node.uses = [("B" if v.dep or (v.shape[0] == self.batch and self.batch != 1) else 1, v.shape[-1])
                         for v in vins]
            node.outs = [out]
        elif kind == "gemm":
            a, w = vins[0], vins[1]
            if w.dep or (len(vins) > 2 and vins[2].dep):
                raise _refuse(f"{name} with a per-step right operand (weights must not depend on the step's input "
                              "or state: such a product mixes batch rows)")
            if not a.dep or len(a.shape) != 2 or len(w.shape) != 2:
                raise _refuse(f"{name} of shapes {a.shape} and {w.shape}: compiled cells take products of a "
                              "(batch, features) value with a 2-D parameter")
            node.outs = [self.dep_out(outs_t[0].shape, name)]
            node.uses = [("B", a.width), (1, w.shape)] + ([(1, vins[2].shape)] if len(vins) > 2 else [])
            node.kw = {"trans": rule.extra["trans"]}
        else:  # pragma: no cover - table kinds are closed
            raise _refuse(f"the op {name} has no compiled form")
        for t, o in zip(outs_t, node.outs):
            self.add(t, o)
            o.node = node
        self.nodes.append(node)

    def alias(self, cls: Any, a: Val, kw: dict, outs: tuple, name: str) -> tuple[list, dict]:
        b = self.batch
        if not a.dep:  # pragma: no cover - on_apply returns before
            raise _refuse(name)
        if cls is OT._F.Reshape:
            o = self.dep_out(outs[0].shape, name)
            if o.width != a.width:
                raise _refuse(f"reshape of a per-step value from {a.shape} to {outs[0].shape} (only (B,) <-> (B, 1))")
            return [o], {"offs": (0,)}
        if cls is OT._F.Split:
            if len(a.shape) != 2 or kw["axis"] != 1:
                raise _refuse(f"split/chunk of a per-step value of shape {a.shape} along dim {kw['axis']}: only along "
                              "the last (feature) dim")
            offs = np.cumsum([0] + list(kw["sizes"]))[:-1].tolist()
            return [self.dep_out(t.shape, name) for t in outs], {"offs": tuple(int(x) for x in offs)}
        # GetItem: basic indexing that keeps the rows and takes a contiguous run of features
        if kw.get("advanced") or len(a.shape) != 2:
            raise _refuse(f"indexing a per-step value of shape {a.shape} with {kw.get('index')!r}: only a slice or "
                          "an integer on the last dim (x[:, i:j], x[..., k])")
        w = a.shape[1]
        probe = np.arange(b)[:, None] * w + np.arange(w)[None, :]
        try:
            res = probe[kw["index"]]
        except Exception:  # noqa: BLE001 - the op itself accepted it; a form we do not know
            raise _refuse(f"indexing a per-step value with {kw.get('index')!r}") from None
        r2 = res.reshape(res.shape[0], -1) if res.ndim in (1, 2) else None
        ok = (r2 is not None and res.shape[0] == b and (r2 // w == np.arange(b)[:, None]).all()
              and r2.shape[1] > 0 and (np.diff(r2 % w, axis=1) == 1).all()
              and ((r2 % w) == (r2[0] % w)).all())
        if not ok:
            raise _refuse(f"indexing a per-step value with {kw.get('index')!r}: only a slice (step 1) or an integer on "
                          "the last dim")
        return [self.dep_out(outs[0].shape, name)], {"offs": (int(r2[0, 0] % w),)}

    def on_compare(self, name: str, a: Tensor, other: Any, out: Tensor) -> Tensor:
        va = self.val_of(a)
        vb = self.val_of(other) if isinstance(other, Tensor) else Val("const", (), value=float(other)) \
            if isinstance(other, (bool, int, float, np.number)) else None
        if vb is None:
            raise _refuse(f"comparison {name} with an operand of type {type(other).__name__}")
        if not va.dep and not vb.dep:
            return out
        o = self.dep_out(out.shape, f"comparison {name}")
        node = Node(name, [va, vb], [o], uses=[self.use_of(v, out.shape, name) for v in (va, vb)])
        o.node = node
        self.nodes.append(node)
        tagged = out._data.view(_TaggedBool)
        tagged._val = o
        t = Tensor._make(tagged, out._be, False, None, 0)
        self.add(t, o)
        return t

    def is_dep(self, t: Tensor) -> bool:
        v = self.vals.get(id(t))
        return v is not None and v.dep


# ---------------------------------------------------------------------------------------------
# the hooks: installed while some thread traces, active only in the tracing thread

_tls = threading.local()
_lock = threading.Lock()
renew_in_child(globals(), "_lock", threading.Lock)
_active = 0
_saved: dict[str, Any] = {}
_MISSING = object()
_READS = ("__bool__", "item", "__float__", "__int__", "numpy", "tolist", "__index__")


def _current() -> _Recorder | None:
    return getattr(_tls, "rec", None)


def _install() -> None:
    global _active
    with _lock:
        _active += 1
        if _active > 1:
            return
        orig_apply = Function.__dict__["apply"].__func__
        _saved["apply"] = Function.__dict__["apply"]

        def apply(cls, *inputs, **kw):
            outs = orig_apply(cls, *inputs, **kw)
            rec = _current()
            if rec is not None:
                rec.on_apply(cls, inputs, kw, outs)
            return outs

        Function.apply = classmethod(apply)
        bump = Tensor._bump_version
        _saved["_bump_version"] = bump

        def _bump_version(self):
            if _current() is not None:
                raise _refuse("an in-place change of a tensor (x += ..., copy_, fill_, t[i] = ...); write it out of "
                              "place (x = x + ...)")
            return bump(self)

        Tensor._bump_version = _bump_version
        for name in COMPARE_NAMES:
            orig = getattr(Tensor, name)
            _saved[name] = Tensor.__dict__.get(name, _MISSING)  # inherited methods are deleted again, not copied
            setattr(Tensor, name, _make_compare(name, orig))
        for name in _READS:
            if hasattr(Tensor, name):
                orig = getattr(Tensor, name)
                _saved[name] = Tensor.__dict__.get(name, _MISSING)
                setattr(Tensor, name, _make_read(name, orig))


def _uninstall() -> None:
    global _active
    with _lock:
        _active -= 1
        if _active > 0:
            return
        Function.apply = _saved.pop("apply")
        for name, fn in list(_saved.items()):
            if fn is _MISSING:
                delattr(Tensor, name)
            else:
                setattr(Tensor, name, fn)
        _saved.clear()


COMPARE_NAMES = tuple(OT.COMPARES)


def _make_compare(name: str, orig: Callable) -> Callable:
    def method(self, other):
        out = orig(self, other)
        rec = _current()
        return out if rec is None else rec.on_compare(name, self, other, out)

    method.__name__ = name
    return method


def _make_read(name: str, orig: Callable) -> Callable:
    def method(self, *a, **k):
        rec = _current()
        if rec is not None and rec.is_dep(self):
            raise _refuse(f"Tensor.{name}() of a value that depends on the step's input or state (data-dependent "
                          "Python control flow, or a value taken out of the graph)")
        return orig(self, *a, **k)

    method.__name__ = name
    return method


def _structure(state: Any) -> tuple[list, bool]:
    if isinstance(state, Tensor):
        return [state], False
    if isinstance(state, (tuple, list)) and state and all(isinstance(s, Tensor) for s in state):
        return list(state), True
    raise TypeError(f"a cell's state must be a Tensor or a tuple of Tensors, got {type(state).__name__}")


def trace_step(fn: Callable, x_t: Tensor, states: Sequence[Tensor], as_tuple: bool = True) -> StepGraph:
    """Run ``fn(x_t, state) -> (out_t, new_state)`` once, recording its step graph.

    ``states`` is the flat list of state tensors; ``fn`` receives them as a tuple when
    ``as_tuple`` (else the single tensor). Raises CompileError for what cannot be compiled."""
    b = x_t.shape[0]
    if x_t.ndim != 2:
        raise ValueError(f"the step input must be (batch, features), got {x_t.shape}")
    rec = _Recorder(b, x_t.dtype)
    xv = Tensor._make(x_t._data, x_t._be, False, None, 0)
    gx = rec.add(xv, Val("x", tuple(x_t.shape), dep=True, width=x_t.shape[1], tensor=xv))
    svals, sts = [], []
    for i, s in enumerate(states):
        if s.ndim not in (1, 2) or s.shape[0] != b:
            raise ValueError(f"state {i} must be (batch, features) or (batch,) with batch {b}, got {s.shape}")
        st = Tensor._make(s._data, s._be, False, None, 0)
        sts.append(st)
        svals.append(rec.add(st, Val("state", tuple(s.shape), dep=True, i=i, width=s.shape[1] if s.ndim == 2 else 1)))
    _install()
    _tls.rec = rec
    try:
        res = fn(xv, tuple(sts) if as_tuple else sts[0])
        if not (isinstance(res, (tuple, list)) and len(res) == 2):
            raise TypeError(f"a cell must return (output, new_state), got {type(res).__name__}")
        out, new_state = res
        new_list, tup = _structure(new_state)
    finally:
        _tls.rec = None
        _uninstall()
    if tup != as_tuple or len(new_list) != len(states):
        raise CompileError(f"the cell returned a state of {len(new_list)} tensor(s) for a state of {len(states)}: the "
                           "new state must have the structure of the old one")
    if not isinstance(out, Tensor):
        raise TypeError(f"a cell's output must be a Tensor, got {type(out).__name__}")
    g = StepGraph(gx, svals, rec.nodes, rec.params, batch=b)
    g.out = rec.vals.get(id(out))
    g.new_states = [rec.vals.get(id(s)) for s in new_list]
    for what, v in [("output", g.out)] + [(f"new state {i}", v) for i, v in enumerate(g.new_states)]:
        if v is None or not v.dep:
            raise CompileError(f"cannot compile the cell: its {what} does not depend on the step's input or state")
    for i, (v, s) in enumerate(zip(g.new_states, states)):
        if v.shape != tuple(s.shape):
            raise CompileError(f"cannot compile the cell: new state {i} has shape {v.shape}, the state {tuple(s.shape)}")
    if g.out.shape[0] != b or len(g.out.shape) not in (1, 2):
        raise CompileError(f"cannot compile the cell: its output has shape {g.out.shape}")
    g._keep = rec.keep  # noqa: SLF001 - ids of the traced tensors stay valid while the graph lives
    return g
