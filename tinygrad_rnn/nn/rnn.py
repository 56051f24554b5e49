"""Recurrent cells and layers with PyTorch's arguments, parameter names, shapes and gate order.

Two paths compute the same thing:
  * **fused** (default): one ``FusedRecurrence`` node per layer and direction. The input
    projection of all time steps is one GEMM, the time loop runs one recurrent GEMM plus one
    Numba kernel per step (or the whole loop in one kernel for small layers), and backward
    walks time in reverse the same way, forming the weight gradients as whole-sequence GEMMs.
  * **composite**: the cell written with primitive ops and unrolled over time, a graph of
    ordinary nodes, for reading and for checking the fused path against.

The cells (``RNNCell``, ``LSTMCell``, ``GRUCell``) likewise: by default one ``FusedCell`` node per
step (two GEMMs and the backend's step kernel), ``cell.fused = False`` the composite cell.

    >>> import tinygrad_rnn as tr
    >>> lstm = tr.nn.LSTM(3, 5, batch_first=True)
    >>> out, (h, c) = lstm(tr.randn(2, 7, 3)); out.shape, h.shape
    ((2, 7, 5), (1, 2, 5))
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _checks
from ..backend.recurrence import GATES
from ..functions.recurrent import FusedCell, FusedRecurrence
from ..ops import cat, split, stack, where
from ..tensor import Generator, Tensor, _as_dtype, _rng, float32, is_grad_enabled, zeros
from . import functional as F
from .module import Module, Parameter
from .utils.rnn import PackedSequence, packed_forward

# (FusedRecurrence, the fused path's node, lives in functions/recurrent.py; re-exported here)
__all__ = ["RNNCell", "LSTMCell", "GRUCell", "RNN", "LSTM", "GRU", "FusedRecurrence",
           "rnn_cell", "lstm_cell", "gru_cell"]


# ----------------------------------------------------------------------------------------------
# the cells as primitive ops (the composite path)


def rnn_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None,
             nonlinearity: str = "tanh") -> Tensor:
    """h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)."""
    a = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    return a.tanh() if nonlinearity == "tanh" else a.relu()


def lstm_cell(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None,
              b_hh: Tensor | None) -> tuple[Tensor, Tensor]:
    """Gates i, f, g, o (PyTorch's order): c' = f*c + i*g, h' = o*tanh(c')."""
    gates = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    i, f, g, o = split(gates, h.shape[-1], dim=-1)
    c_new = f.sigmoid() * c + i.sigmoid() * g.tanh()
    return o.sigmoid() * c_new.tanh(), c_new


def gru_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    """PyTorch's GRU: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h."""
    hsz = h.shape[-1]
    xr, xz, xn = split(F.linear(x, w_ih, b_ih), hsz, dim=-1)
    hr, hz, hn = split(F.linear(h, w_hh, b_hh), hsz, dim=-1)
    r = (xr + hr).sigmoid()
    z = (xz + hz).sigmoid()
    n = (xn + r * hn).tanh()
    return (1 - z) * n + z * h


# ----------------------------------------------------------------------------------------------
# modules


def _init_uniform(shape: tuple[int, ...], hidden_size: int, dtype: Any, device: Any, rng: np.random.Generator) -> Parameter:
    k = 1.0 / math.sqrt(hidden_size)
    return Parameter(Tensor(rng.uniform(-k, k, size=shape).astype(dtype), device=device))


def _check_dtype(name: str, t: Tensor, dtype: Any) -> None:
    if t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but the layer's parameters are {dtype}; "
                        f"convert it with .to({dtype.name}) or the module with .to(...)")



def lengths_mask(lengths: Any, t: int, b: int, dtype: Any, what: str) -> np.ndarray | None:
    """The (T, B) 0/1 mask of a padded batch from its per-sequence ``lengths`` (None: no padding), checked:
    integers, one per sequence, each in [1, T]. ``what`` names the caller in the error."""
    if lengths is None:
        return None
    arr = lengths.numpy() if isinstance(lengths, Tensor) else np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{what}: lengths must be integers, got {arr.dtype}")
    if arr.shape != (b,):
        raise ValueError(f"{what}: lengths must have shape ({b},) (one per sequence), got {arr.shape}")
    if arr.size and (arr.min() < 1 or arr.max() > t):
        raise ValueError(f"{what}: lengths must lie in [1, {t}] (the padded length), got min {arr.min()} max {arr.max()}")
    return (np.arange(t)[:, None] < arr[None, :]).astype(dtype)


class _CellBase(Module):
    """A cell's parameters and argument checks. ``fused`` (default True): one step is one ``FusedCell``
    node (two GEMMs and the backend's step kernel, as one step of the fused layers); ``fused = False``
    runs the composite cell of primitive ops, the reference it is tested against."""

    _gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype: Any = None, device: Any = None,
                 generator: Generator | None = None, seed: int | None = None):
        super().__init__()
        if _checks.integer(f"{type(self).__name__}: input_size", input_size) <= 0 or \
                _checks.integer(f"{type(self).__name__}: hidden_size", hidden_size) <= 0:
            raise ValueError(f"{type(self).__name__}: sizes must be positive, got input_size={input_size}, "
                             f"hidden_size={hidden_size}")
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.fused = True
        dt = _as_dtype(dtype) or float32
        rng = _rng(seed, generator)
        g = self._gates * hidden_size
        self.weight_ih = _init_uniform((g, input_size), hidden_size, dt, device, rng)
        self.weight_hh = _init_uniform((g, hidden_size), hidden_size, dt, device, rng)
        if bias:
            self.bias_ih = _init_uniform((g,), hidden_size, dt, device, rng)
            self.bias_hh = _init_uniform((g,), hidden_size, dt, device, rng)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)

    def _prep(self, x: Tensor, hx: Any) -> tuple[Tensor, bool]:
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__}: input must be a Tensor, got {type(x).__name__}")
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: expected input of shape (batch, {self.input_size}) or "
                             f"({self.input_size},), got {x.shape}")
        _check_dtype("input", x, self.weight_ih.dtype)
        unbatched = x.ndim == 1
        return (x.reshape(1, -1) if unbatched else x), unbatched

    def _state(self, hx: Any, x: Tensor, unbatched: bool, name: str = "hx") -> Tensor:
        b = x.shape[0]
        if hx is None:
            return zeros(b, self.hidden_size, dtype=x.dtype, device=x.device)
        want = (self.hidden_size,) if unbatched else (b, self.hidden_size)
        if hx.shape != want:
            raise ValueError(f"{type(self).__name__}: {name} must have shape {want}, got {hx.shape}")
        _check_dtype(name, hx, x.dtype)
        return hx.reshape(1, -1) if unbatched else hx

    def _fused_step(self, mode: str, x: Tensor, *state: Tensor) -> Any:
        """The step as one ``FusedCell`` node, or None where the composite cell runs instead (``fused``
        off, an empty batch, or a state whose device differs: the composite path names that error)."""
        if not self.__dict__.get("fused", True) or x.shape[0] == 0:
            return None
        params = [self.weight_ih, self.weight_hh] + ([self.bias_ih, self.bias_hh] if self.bias else [])
        if any(t._be is not x._be for t in (*state, *params)):
            return None
        train = is_grad_enabled() and any(t.requires_grad for t in (x, *state, *params))
        return FusedCell.apply(x, *state, *params, mode=mode, has_bias=bool(self.bias), train=train)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(_CellBase):
    """Elman cell: ``h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (or relu)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", **kw: Any):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, **kw)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, unb = self._prep(input, hx)
        h0 = self._state(hx, x, unb)
        h = self._fused_step("rnn_" + self.nonlinearity, x, h0)
        if h is None:
            h = rnn_cell(x, h0, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity)
        return h.reshape(-1) if unb else h


class LSTMCell(_CellBase):
    """LSTM cell, gates i, f, g, o; returns ``(h', c')``."""

    _gates = 4

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        x, unb = self._prep(input, hx)
        if hx is None:
            h = c = None
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("LSTMCell: hx must be a tuple (h, c)")
            h, c = hx
        h = self._state(h, x, unb, "h")
        c = self._state(c, x, unb, "c")
        res = self._fused_step("lstm", x, h, c)
        h2, c2 = res if res is not None else lstm_cell(x, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return (h2.reshape(-1), c2.reshape(-1)) if unb else (h2, c2)


class GRUCell(_CellBase):
    """GRU cell, gates r, z, n with PyTorch's placement of the reset gate."""

    _gates = 3

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, unb = self._prep(input, hx)
        h0 = self._state(hx, x, unb)
        h = self._fused_step("gru", x, h0)
        if h is None:
            h = gru_cell(x, h0, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return h.reshape(-1) if unb else h


class RNNBase(Module):
    """Multi-layer, optionally bidirectional recurrent layer (shared by RNN, LSTM, GRU)."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, dtype: Any = None,
                 device: Any = None, generator: Generator | None = None, seed: int | None = None):
        super().__init__()
        name = type(self).__name__
        sizes = {"input_size": input_size, "hidden_size": hidden_size, "num_layers": num_layers}
        if any(_checks.integer(f"{name}: {k}", v) <= 0 for k, v in sizes.items()):
            raise ValueError(f"{name}: input_size, hidden_size and num_layers must be positive, got "
                             f"{input_size}, {hidden_size}, {num_layers}")
        _checks.unit_interval(f"{name}: dropout", dropout)
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bidirectional = bias, batch_first, float(dropout), bidirectional
        self.fused = True
        self.last_path: str | None = None
        self.dropout_generator = generator
        dt = _as_dtype(dtype) or float32
        rng = _rng(seed, generator)
        g = GATES[mode] * hidden_size
        for layer in range(num_layers):
            d_in = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in self._suffixes():
                setattr(self, f"weight_ih_l{layer}{suffix}", _init_uniform((g, d_in), hidden_size, dt, device, rng))
                setattr(self, f"weight_hh_l{layer}{suffix}", _init_uniform((g, hidden_size), hidden_size, dt, device, rng))
                if bias:
                    setattr(self, f"bias_ih_l{layer}{suffix}", _init_uniform((g,), hidden_size, dt, device, rng))
                    setattr(self, f"bias_hh_l{layer}{suffix}", _init_uniform((g,), hidden_size, dt, device, rng))

    def flatten_parameters(self) -> None:
        """A no-op, kept so PyTorch code runs: our weights are separate arrays that the fused path reads
        in place; there is no cuDNN flat buffer to compact."""

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def layer_weights(self, layer: int, suffix: str = "") -> list[Tensor]:
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
        return [getattr(self, f"{n}_l{layer}{suffix}") for n in names]

    @property
    def dtype(self) -> Any:
        return self.weight_ih_l0.dtype

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.mode == "rnn_relu":
            s += ", nonlinearity='relu'"
        for k in ("bias", "batch_first", "dropout", "bidirectional"):
            v = getattr(self, k)
            if v != {"bias": True, "batch_first": False, "dropout": 0.0, "bidirectional": False}[k]:
                s += f", {k}={v}"
        return s

    # -- input checking ------------------------------------------------------------------------
    def _check_state(self, h: Any, what: str, b: int, unbatched: bool, dtype: Any, device: str) -> Tensor:
        name = type(self).__name__
        if not isinstance(h, Tensor):
            raise TypeError(f"{name}: {what} must be a Tensor, got {type(h).__name__}")
        ln = self.num_layers * self.num_directions
        want = (ln, self.hidden_size) if unbatched else (ln, b, self.hidden_size)
        if h.shape != want:
            raise ValueError(f"{name}: expected {what} of shape {want} (num_layers*num_directions, batch, hidden), "
                             f"got {h.shape}")
        _check_dtype(what, h, dtype)
        if h.device != device:
            raise ValueError(f"{name}: {what} is on {h.device} but the input is on {device}")
        return h.reshape(ln, 1, self.hidden_size) if unbatched else h


    # -- forward -------------------------------------------------------------------------------
    def forward(self, input: Tensor, hx: Any = None, lengths: Any = None) -> tuple[Tensor, Any]:
        """``(output, h_n)`` (``(output, (h_n, c_n))`` for LSTM), as in PyTorch.

        ``lengths`` (B,) marks each sequence's true length in a padded batch: steps beyond it
        leave the state unchanged and give zero output, so ``h_n`` is each sequence's state at
        its own last step and padding adds nothing to any gradient (PyTorch's packed semantics).
        """
        if isinstance(input, PackedSequence):  # torch.nn.utils.rnn's packed batch: onto the lengths path below
            if lengths is not None:
                raise ValueError(f"{type(self).__name__}: a PackedSequence carries its own lengths; do not pass lengths=")
            return packed_forward(self, input, hx)
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: expected a 3-D input ({'batch, seq' if self.batch_first else 'seq, batch'}, "
                             f"features) or a 2-D unbatched one, got shape {input.shape}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input has {input.shape[-1]} features (shape {input.shape}) but input_size "
                             f"is {self.input_size}")
        dtype = self.dtype
        _check_dtype("input", input, dtype)
        if input.device != self.weight_ih_l0.device:
            raise ValueError(f"{name}: input is on {input.device} but the parameters are on {self.weight_ih_l0.device}")
        unbatched = input.ndim == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        t_, b_ = x.shape[0], x.shape[1]
        if t_ == 0:
            raise ValueError(f"{name}: the sequence is empty (input shape {input.shape})")
        lstm = self.mode == "lstm"
        if hx is None:
            z = zeros(self.num_layers * self.num_directions, b_, self.hidden_size, dtype=dtype, device=input.device)
            h0, c0 = z, (z if lstm else None)
        elif lstm:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{name}: hx must be a tuple (h_0, c_0)")
            h0 = self._check_state(hx[0], "h_0", b_, unbatched, dtype, input.device)
            c0 = self._check_state(hx[1], "c_0", b_, unbatched, dtype, input.device)
        else:
            h0 = self._check_state(hx, "h_0", b_, unbatched, dtype, input.device)
            c0 = None
        mask = lengths_mask(lengths, t_, b_, dtype, type(self).__name__)
        if self.fused:
            out, hs, cs = self._forward_fused(x, h0, c0, mask)
            self.last_path = "fused"
        else:
            out, hs, cs = self._forward_composite(x, h0, c0, mask)
            self.last_path = "composite"
        h_n = stack(hs, 0)
        c_n = stack(cs, 0) if lstm else None
        if unbatched:
            out = out.squeeze(1)
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if lstm else None
        elif self.batch_first:
            out = out.transpose(0, 1)
        return (out, (h_n, c_n)) if lstm else (out, h_n)

    def _between_layers(self, out: Tensor, layer: int) -> Tensor:
        if self.dropout > 0 and self.training and layer < self.num_layers - 1:
            return F.dropout(out, self.dropout, True, generator=self.dropout_generator)
        return out

    def _layers(self, x: Tensor, h0: Tensor, c0: Tensor | None, direction: Any) -> tuple[Tensor, list, list]:
        """Run every layer and direction with ``direction(inp, h, c, weights, reverse)`` -> ``(out, h_n, c_n)``;
        the directions' outputs are joined along features, dropout applied between layers."""
        hs, cs = [], []
        inp = x
        for layer in range(self.num_layers):
            outs = []
            for d, suffix in enumerate(self._suffixes()):
                k = layer * self.num_directions + d
                out, h, c = direction(inp, h0[k], None if c0 is None else c0[k], self.layer_weights(layer, suffix), d == 1)
                outs.append(out)
                hs.append(h)
                if c is not None:
                    cs.append(c)
            inp = outs[0] if len(outs) == 1 else cat(outs, dim=2)
            inp = self._between_layers(inp, layer)
        return inp, hs, cs

    def _forward_fused(self, x: Tensor, h0: Tensor, c0: Tensor | None, mask: Any):
        be = x._be
        mask_arr = be.asarray(mask) if mask is not None else be.xp.ones((x.shape[0], x.shape[1]), dtype=x.dtype)
        grad_mode = is_grad_enabled()

        def direction(inp: Tensor, h: Tensor, c: Tensor | None, weights: list, reverse: bool) -> tuple:
            args = [inp, h] + ([c] if c is not None else []) + weights
            # forward-only (no store kept) exactly when the node will not be recorded
            train = grad_mode and any(a.requires_grad for a in args)
            res = FusedRecurrence.apply(*args, mode=self.mode, mask=mask_arr, reverse=reverse, has_bias=self.bias,
                                        train=train, masked=mask is not None)
            return res[0], res[1], (res[2] if c is not None else None)

        return self._layers(x, h0, c0, direction)

    def _forward_composite(self, x: Tensor, h0: Tensor, c0: Tensor | None, mask: Any):
        lstm = self.mode == "lstm"
        t_ = x.shape[0]
        zero = Tensor(np.zeros((), dtype=x.dtype), device=x.device)
        keep = None if mask is None else [Tensor(mask[t][:, None] > 0, device=x.device) for t in range(t_)]

        def direction(inp: Tensor, h: Tensor, c: Tensor | None, w: list, reverse: bool) -> tuple:
            w_ih, w_hh = w[0], w[1]
            b_ih, b_hh = (w[2], w[3]) if self.bias else (None, None)
            steps: list[Tensor | None] = [None] * t_
            for t in (range(t_ - 1, -1, -1) if reverse else range(t_)):
                xt = inp[t] if keep is None else where(keep[t], inp[t], zero)
                if lstm:
                    h_new, c_new = lstm_cell(xt, h, c, w_ih, w_hh, b_ih, b_hh)
                elif self.mode == "gru":
                    h_new = gru_cell(xt, h, w_ih, w_hh, b_ih, b_hh)
                else:
                    h_new = rnn_cell(xt, h, w_ih, w_hh, b_ih, b_hh, "relu" if self.mode == "rnn_relu" else "tanh")
                if keep is None:
                    h, steps[t] = h_new, h_new
                    if lstm:
                        c = c_new
                else:
                    steps[t] = where(keep[t], h_new, zero)
                    h = where(keep[t], h_new, h)
                    if lstm:
                        c = where(keep[t], c_new, c)
            return stack(steps, 0), h, c

        return self._layers(x, h0, c0, direction)

class RNN(RNNBase):
    """Elman RNN: ``nn.RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', ...)``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh", **kw: Any):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(f"rnn_{nonlinearity}", input_size, hidden_size, num_layers, **kw)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """``nn.LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0, bidirectional=False)``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, **kw: Any):
        super().__init__("lstm", input_size, hidden_size, num_layers, **kw)


class GRU(RNNBase):
    """``nn.GRU(...)`` with PyTorch's gate order r, z, n."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, **kw: Any):
        super().__init__("gru", input_size, hidden_size, num_layers, **kw)
