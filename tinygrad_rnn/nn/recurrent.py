"""Run any cell over a sequence: ``nn.Recurrent`` (a module around a cell) and ``scan`` (JAX's form).

A cell is an ordinary module whose ``forward(x_t, state)`` returns ``(out_t, new_state)``;
the state is a tensor or a tuple of tensors. The layer traces the cell's step once per call,
compiles it (forward and backpropagation through time) into one whole-sequence Numba kernel --
input products hoisted into one GEMM, state products through BLAS inside the loop, the rest
generated per op (see ``tinygrad_rnn/compiler``) -- and falls back to running it op by op
where it cannot (``compile="auto"``, with one warning). Both paths give the same numbers.

    >>> import tinygrad_rnn as tr
    >>> class Elman(tr.nn.Module):
    ...     state_size = 4
    ...     def __init__(self):
    ...         super().__init__(); self.ih = tr.nn.Linear(3, 4); self.hh = tr.nn.Linear(4, 4)
    ...     def forward(self, x, h):
    ...         h = (self.ih(x) + self.hh(h)).tanh(); return h, h
    >>> out, h = tr.nn.Recurrent(Elman())(tr.randn(5, 2, 3)); out.shape, h.shape
    ((5, 2, 4), (2, 4))
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np

from ..compiler.function import run_compiled
from ..compiler.trace import CompileError
from ..ops import cat, stack, where
from ..tensor import Generator, Tensor
from . import functional as F
from .module import Module, ModuleList
from .rnn import lengths_mask

__all__ = ["Recurrent", "scan", "run_op_by_op"]

_MODES = ("auto", True, False)


def _flat_state(state: Any, what: str) -> tuple[list[Tensor], bool]:
    if isinstance(state, Tensor):
        return [state], False
    if isinstance(state, (tuple, list)) and state and all(isinstance(s, Tensor) for s in state):
        return list(state), True
    raise TypeError(f"{what}: a state must be a Tensor or a tuple of Tensors, got {type(state).__name__}")




def run_op_by_op(fn: Callable, x: Tensor, states: Sequence[Tensor], as_tuple: bool, mask: np.ndarray | None,
                 reverse: bool) -> tuple[Tensor, list[Tensor]]:
    """The reference: ``fn(x_t, state)`` step by step, one graph node per op. Padded steps
    (``mask`` 0) see a zero input, keep their state and output zeros."""
    t_ = x.shape[0]
    be = x._be  # the input's own backend object (an emulated one has no device name to look up)
    zero = Tensor._make(be.xp.zeros((), dtype=x.dtype), be, False, None, 0)
    keep = None if mask is None else [mask[t] > 0 for t in range(t_)]

    def kept(t: int, new: Tensor, old: Tensor) -> Tensor:
        k = keep[t] if new.ndim == 1 else keep[t][:, None]
        return where(Tensor._make(be.asarray(k), be, False, None, 0), new, old)

    outs: list[Any] = [None] * t_
    st = list(states)
    for t in (range(t_ - 1, -1, -1) if reverse else range(t_)):
        xt = x[t] if keep is None else kept(t, x[t], zero)
        res = fn(xt, tuple(st) if as_tuple else st[0])
        if not (isinstance(res, (tuple, list)) and len(res) == 2):
            raise TypeError(f"a cell must return (output, new_state), got {type(res).__name__}")
        out, new = res
        new_list, tup = _flat_state(new, "the cell's new state")
        if tup != as_tuple or len(new_list) != len(st):
            raise ValueError(f"the cell returned a state of {len(new_list)} tensor(s) for a state of {len(st)}")
        if keep is not None:
            out = kept(t, out, zero)
            new_list = [kept(t, n, s) for n, s in zip(new_list, st)]
        outs[t] = out
        st = new_list
    return stack(outs, 0), st


def _run(fn: Callable, x: Tensor, states: list[Tensor], as_tuple: bool, mask: np.ndarray | None, reverse: bool,
         mode: Any, owner: Any) -> tuple[Tensor, list[Tensor], str]:
    if mode is not False:
        try:
            m = mask if mask is not None else np.ones(x.shape[:2], dtype=x.dtype)
            y, s = run_compiled(fn, x, states, as_tuple, m, mask is not None, reverse, getattr(fn, "scan_fn", fn))
            return y, s, "compiled"
        except Exception as e:  # noqa: BLE001 - auto mode: anything the compiler cannot do runs op by op
            if mode is True:
                raise
            why = str(e) if isinstance(e, CompileError) else f"internal compiler error ({type(e).__name__}: {e})"
            if not getattr(owner, "_warned", False):
                warnings.warn(f"running the cell op by op: {why}", RuntimeWarning, stacklevel=4)
                try:
                    owner._warned = True
                except AttributeError:  # pragma: no cover - a function without attributes
                    pass
    y, s = run_op_by_op(fn, x, states, as_tuple, mask, reverse)
    return y, s, "op_by_op"


def _zeros_state(cell: Any, b: int, x: Tensor, what: str) -> Any:
    size = getattr(cell, "state_size", None)
    if size is None:
        raise ValueError(f"{what}: no initial state given and the cell {type(cell).__name__} has no `state_size` "
                         "(an int, or a tuple of ints for a tuple state): pass the state explicitly")
    def z(n: Any) -> Tensor:
        return Tensor._make(x._be.xp.zeros((b, int(n)), dtype=x.dtype), x._be, False, None, 0)

    return tuple(z(n) for n in size) if isinstance(size, (tuple, list)) else z(size)


class _BuiltinCell:
    """``nn.RNNCell``/``GRUCell``/``LSTMCell`` in the cell protocol: they return the new state only."""

    def __init__(self, cell: Module):
        self.cell = cell
        self.lstm = type(cell).__name__ == "LSTMCell"
        self.state_size = (cell.hidden_size,) * 2 if self.lstm else cell.hidden_size

    def modules(self) -> Any:
        return self.cell.modules()  # what the compiler walks (it traces the cells' composite form)

    def __call__(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        new = self.cell(x, state)
        return (new[0], tuple(new)) if self.lstm else (new, new)


def _as_step(cell: Any) -> Any:
    from .rnn import GRUCell, LSTMCell, RNNCell

    return _BuiltinCell(cell) if isinstance(cell, (RNNCell, GRUCell, LSTMCell)) else cell


class Recurrent(Module):
    """``nn.Recurrent(cell, batch_first=False, reverse=False, bidirectional=False, dropout=0, compile="auto")``.

    ``out, state = layer(x, state0=None, lengths=None)``: ``x`` (T, B, D) (``batch_first``: (B, T, D));
    ``state0`` has the cell's state structure (zeros from ``cell.state_size`` when None); ``out``
    stacks the per-step outputs along time. Several layers (and directions): pass a list of cells,
    one per layer and direction in PyTorch's order (layer 0, layer 0 reverse, layer 1, ...); the
    state is then a list with one entry per cell, and each layer's input is the previous layer's
    output (directions concatenated along the last dim), with ``dropout`` between layers in training.

    ``compile``: ``"auto"`` compiles the cell and runs it op by op, with one warning, when it
    cannot (a data-dependent branch, an op with no compiled form, an in-place change, a GPU
    tensor); ``True`` raises instead; ``False`` always runs op by op. ``last_path`` says which ran.
    """

    def __init__(self, cell: Any, batch_first: bool = False, reverse: bool = False, bidirectional: bool = False,
                 dropout: float = 0.0, compile: Any = "auto", generator: Generator | None = None):
        super().__init__()
        if compile not in _MODES:
            raise ValueError(f"Recurrent: compile must be 'auto', True or False, got {compile!r}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"Recurrent: dropout must be in [0, 1], got {dropout}")
        self.dropout, self.dropout_generator = float(dropout), generator
        cells = list(cell) if isinstance(cell, (list, tuple, ModuleList)) else [cell]
        for c in cells:
            if not callable(c):
                raise TypeError(f"Recurrent: a cell must be a Module (or callable), got {type(c).__name__}")
        ndir = 2 if bidirectional else 1
        if len(cells) % ndir:
            raise ValueError(f"Recurrent: bidirectional needs two cells per layer, got {len(cells)}")
        if bidirectional and reverse:
            raise ValueError("Recurrent: reverse=True and bidirectional=True together are ambiguous")
        self.cells = ModuleList(cells) if all(isinstance(c, Module) for c in cells) else cells
        self._steps = [_as_step(c) for c in cells]  # the built-in cells return the new state only: adapted
        self.single = not isinstance(cell, (list, tuple, ModuleList))
        self.batch_first, self.reverse, self.bidirectional, self.compile = batch_first, reverse, bidirectional, compile
        self.num_layers = len(cells) // ndir
        self.last_path: str | None = None

    @property
    def cell(self) -> Any:
        return self.cells[0]

    def forward(self, input: Tensor, state: Any = None, lengths: Any = None) -> tuple[Tensor, Any]:
        name = "Recurrent"
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        if input.ndim != 3:
            raise ValueError(f"{name}: expected a 3-D input ({'batch, seq' if self.batch_first else 'seq, batch'}, "
                             f"features), got shape {input.shape}")
        x = input.transpose(0, 1) if self.batch_first else input
        t_, b_ = x.shape[0], x.shape[1]
        if t_ == 0:
            raise ValueError(f"{name}: the sequence is empty (input shape {input.shape})")
        cells = self._steps
        if self.single:
            states = [state]
        else:
            states = [None] * len(cells) if state is None else list(state)
            if len(states) != len(cells):
                raise ValueError(f"{name}: expected a list of {len(cells)} states (one per cell), got {len(states)}")
        mask = lengths_mask(lengths, t_, b_, x.dtype, name)
        ndir = 2 if self.bidirectional else 1
        finals: list[Any] = []
        paths = set()
        inp = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(ndir):
                k = layer * ndir + d
                cell = cells[k]
                s0 = states[k] if states[k] is not None else _zeros_state(cell, b_, x, name)
                flat, as_tuple = _flat_state(s0, name)
                y, sn, path = _run(cell, inp, flat, as_tuple, mask, self.reverse or d == 1, self.compile, self)
                paths.add(path)
                outs.append(y)
                finals.append(tuple(sn) if as_tuple else sn[0])
            inp = outs[0] if ndir == 1 else cat(outs, dim=-1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:  # between layers, as nn.LSTM
                inp = F.dropout(inp, self.dropout, True, generator=self.dropout_generator)
        self.last_path = paths.pop() if len(paths) == 1 else "mixed"
        out = inp.transpose(0, 1) if self.batch_first else inp
        return out, (finals[0] if self.single else finals)

    def extra_repr(self) -> str:
        s = [] if not self.batch_first else ["batch_first=True"]
        s += ["reverse=True"] if self.reverse else []
        s += ["bidirectional=True"] if self.bidirectional else []
        s += [] if self.compile == "auto" else [f"compile={self.compile!r}"]
        return ", ".join(s)


def scan(fn: Callable, init: Any, xs: Tensor, reverse: bool = False, lengths: Any = None,
         compile: Any = "auto") -> tuple[Any, Tensor]:
    """JAX's ``lax.scan`` for recurrences: ``fn(carry, x_t) -> (carry, y_t)`` over ``xs`` (T, B, D).

    Returns ``(final_carry, ys)`` with ``ys`` (T, B, ...). ``fn`` is a plain function; the tensors it
    closes over (parameters) get gradients. Compiled like a cell (see ``Recurrent``).

        >>> import tinygrad_rnn as tr
        >>> w = tr.randn(3, 3, requires_grad=True)
        >>> h, ys = tr.scan(lambda h, x: ((h @ w + x).tanh(),) * 2, tr.zeros(2, 3), tr.randn(4, 2, 3)); ys.shape
        (4, 2, 3)
    """
    if compile not in _MODES:
        raise ValueError(f"scan: compile must be 'auto', True or False, got {compile!r}")
    if not isinstance(xs, Tensor) or xs.ndim != 3:
        raise ValueError(f"scan: xs must be a (T, B, D) Tensor, got {getattr(xs, 'shape', type(xs).__name__)}")
    if xs.shape[0] == 0:
        raise ValueError("scan: the sequence is empty")
    flat, as_tuple = _flat_state(init, "scan")

    def cell(x: Tensor, s: Any) -> tuple[Any, Any]:
        res = fn(s, x)
        if not (isinstance(res, (tuple, list)) and len(res) == 2):
            raise TypeError(f"scan: fn must return (carry, y), got {type(res).__name__}")
        return res[1], res[0]

    cell.scan_fn = fn  # the graph checks (two traces) are done once per user function, not per call
    mask = lengths_mask(lengths, xs.shape[0], xs.shape[1], xs.dtype, "scan")
    ys, sn, _ = _run(cell, xs, flat, as_tuple, mask, reverse, compile, fn)
    return (tuple(sn) if as_tuple else sn[0]), ys
