"""Cells for the compiler's tests, examples and benchmarks: the textbook ones written as modules,
and a generator of random cells from the compilable ops (the property test's subject)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

import tinygrad_rnn as tr
from tinygrad_rnn import nn
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.nn.rnn import gru_cell, lstm_cell, rnn_cell


def _param(rng: np.random.Generator, shape: tuple, dtype: Any, scale: float) -> nn.Parameter:
    return nn.Parameter(tr.tensor(rng.uniform(-scale, scale, size=shape), dtype=dtype))


class LayerCell(nn.Module):
    """One direction of layer 0 of a built-in nn.RNN/LSTM/GRU written as a cell over its own weights."""

    def __init__(self, layer: Any, suffix: str = ""):
        super().__init__()
        self.mode = layer.mode
        w = layer.layer_weights(0, suffix)
        self.w_ih, self.w_hh = w[0], w[1]
        self.b_ih, self.b_hh = (w[2], w[3]) if len(w) == 4 else (None, None)
        self.state_size = (layer.hidden_size,) * 2 if self.mode == "lstm" else layer.hidden_size

    def forward(self, x: tr.Tensor, state: Any) -> tuple:
        if self.mode == "lstm":
            h, c = lstm_cell(x, state[0], state[1], self.w_ih, self.w_hh, self.b_ih, self.b_hh)
            return h, (h, c)
        if self.mode == "gru":
            h = gru_cell(x, state, self.w_ih, self.w_hh, self.b_ih, self.b_hh)
        else:
            h = rnn_cell(x, state, self.w_ih, self.w_hh, self.b_ih, self.b_hh, self.mode[4:])
        return h, h


class PeepholeLSTM(nn.Module):
    """Gers & Schmidhuber: i, f peek at c_{t-1}, o at c_t (diagonal peephole weights)."""

    def __init__(self, input_size: int, hidden_size: int, dtype: Any = None, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        k = 1 / math.sqrt(hidden_size)
        self.ih = nn.Linear(input_size, 4 * hidden_size, dtype=dtype, seed=seed)
        self.hh = nn.Linear(hidden_size, 4 * hidden_size, bias=False, dtype=dtype, seed=seed + 1)
        self.peep = _param(rng, (3, hidden_size), dtype or tr.float32, k)
        self.state_size = (hidden_size, hidden_size)

    def forward(self, x: tr.Tensor, state: tuple) -> tuple:
        h, c = state
        i, f, g, o = (self.ih(x) + self.hh(h)).chunk(4, -1)
        i = (i + self.peep[0] * c).sigmoid()
        f = (f + self.peep[1] * c).sigmoid()
        c = f * c + i * g.tanh()
        o = (o + self.peep[2] * c).sigmoid()
        h = o * c.tanh()
        return h, (h, c)


class CoupledLSTM(nn.Module):
    """Coupled input and forget gates (f = 1 - i; Greff et al.'s CIFG)."""

    def __init__(self, input_size: int, hidden_size: int, dtype: Any = None, seed: int = 0):
        super().__init__()
        self.ih = nn.Linear(input_size, 3 * hidden_size, dtype=dtype, seed=seed)
        self.hh = nn.Linear(hidden_size, 3 * hidden_size, bias=False, dtype=dtype, seed=seed + 1)
        self.state_size = (hidden_size, hidden_size)

    def forward(self, x: tr.Tensor, state: tuple) -> tuple:
        h, c = state
        i, g, o = (self.ih(x) + self.hh(h)).chunk(3, -1)
        i = i.sigmoid()
        c = (1 - i) * c + i * g.tanh()
        h = o.sigmoid() * c.tanh()
        return h, (h, c)


class LayerNormLSTM(nn.Module):
    """LSTM with layer normalisation of the gate pre-activations and of c (Ba et al. 2016)."""

    def __init__(self, input_size: int, hidden_size: int, dtype: Any = None, seed: int = 0, eps: float = 1e-5):
        super().__init__()
        dt = dtype or tr.float32
        self.ih = nn.Linear(input_size, 4 * hidden_size, dtype=dtype, seed=seed)
        self.hh = nn.Linear(hidden_size, 4 * hidden_size, bias=False, dtype=dtype, seed=seed + 1)
        self.g_gates = nn.Parameter(tr.ones(4 * hidden_size, dtype=dt))
        self.b_gates = nn.Parameter(tr.zeros(4 * hidden_size, dtype=dt))
        self.g_c, self.b_c = nn.Parameter(tr.ones(hidden_size, dtype=dt)), nn.Parameter(tr.zeros(hidden_size, dtype=dt))
        self.eps = eps
        self.state_size = (hidden_size, hidden_size)

    def norm(self, v: tr.Tensor, g: tr.Tensor, b: tr.Tensor) -> tr.Tensor:
        m = v.mean(-1, keepdim=True)
        d = v - m
        return d / ((d * d).mean(-1, keepdim=True) + self.eps).sqrt() * g + b

    def forward(self, x: tr.Tensor, state: tuple) -> tuple:
        h, c = state
        gates = self.norm(self.ih(x) + self.hh(h), self.g_gates, self.b_gates)
        i, f, g, o = gates.chunk(4, -1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * self.norm(c, self.g_c, self.b_c).tanh()
        return h, (h, c)


class IndRNN(nn.Module):
    """Independently recurrent: h = relu(W x + u * h + b), a diagonal recurrence (Li et al. 2018)."""

    def __init__(self, input_size: int, hidden_size: int, dtype: Any = None, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.ih = nn.Linear(input_size, hidden_size, dtype=dtype, seed=seed)
        self.u = nn.Parameter(tr.tensor(rng.uniform(0, 1, size=hidden_size), dtype=dtype or tr.float32))
        self.state_size = hidden_size

    def forward(self, x: tr.Tensor, h: tr.Tensor) -> tuple:
        h = (self.ih(x) + self.u * h).relu()
        return h, h


class LSTMCellModule(nn.Module):
    """The built-in LSTM's cell (PyTorch's gate order) as a user cell: ``lstm_cell`` over own weights."""

    def __init__(self, input_size: int, hidden_size: int, dtype: Any = None, seed: int = 0):
        super().__init__()
        self.cell = nn.LSTMCell(input_size, hidden_size, dtype=dtype, seed=seed)
        self.state_size = (hidden_size, hidden_size)

    def forward(self, x: tr.Tensor, state: tuple) -> tuple:
        c = self.cell
        h, c2 = lstm_cell(x, state[0], state[1], c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh)
        return h, (h, c2)


CELLS = {"peephole": PeepholeLSTM, "coupled": CoupledLSTM, "layernorm": LayerNormLSTM, "indrnn": IndRNN,
         "lstm": LSTMCellModule}


# ------------------------------------------------------------------------------------------------
# random cells: a recipe (plain data, drawn by Hypothesis) and the module it builds

UNARY = ["sigmoid", "tanh", "relu", "abs", "exp", "sqrt", "sq", "cube", "neg", "clamp", "softmax", "logsoftmax",
         "layernorm", "center_max", "sumnorm", "log", "maxdim", "rowsum", "rsub", "scale"]
BINARY = ["add", "sub", "mul", "div", "maximum", "minimum", "where", "peep", "alpha", "pow", "catslice", "rowbias"]


class RandomCell(nn.Module):
    """A cell built from ``recipe``: gates from hoisted and per-step products, then a random
    program of elementwise ops, reductions, slices and broadcast parameters over a pool of values."""

    def __init__(self, recipe: dict, dtype: Any = tr.float64):
        super().__init__()
        self.r = r = recipe
        rng = np.random.default_rng(r["seed"])
        d, h, g = r["D"], r["H"], r["G"]
        self.w_ih = _param(rng, (g * h, d), dtype, 0.7)
        self.b_ih = _param(rng, (g * h,), dtype, 0.3)
        if r["hh"] == "linear":
            self.w_hh = _param(rng, (g * h, h), dtype, 0.5)
        elif r["hh"] == "matmul":
            self.w_hh = _param(rng, (h, g * h), dtype, 0.5)
        else:
            self.u = _param(rng, (h,), dtype, 0.9)
        self.brow = _param(rng, (1, g * h), dtype, 0.3)
        self.p = _param(rng, (3, h), dtype, 0.5)
        self.alpha = _param(rng, (), dtype, 1.0)
        self.gamma, self.beta = _param(rng, (h,), dtype, 1.0), _param(rng, (1, h), dtype, 0.2)
        self.w2 = _param(rng, (h, h), dtype, 0.5)
        self.state_size = (h, h) if r["two_states"] else h

    def op(self, name: str, a: tr.Tensor, b: tr.Tensor, k: int) -> tr.Tensor:
        h = a.shape[-1]
        if name == "sigmoid":
            return a.sigmoid()
        if name == "tanh":
            return a.tanh()
        if name == "relu":
            return a.relu()
        if name == "abs":
            return a.abs()
        if name == "exp":
            return a.clamp(-3.0, 3.0).exp()
        if name == "sqrt":
            return (a * a + 1).sqrt()
        if name == "sq":
            return a ** 2
        if name == "cube":
            return (a.tanh() ** 3) * 2
        if name == "neg":
            return -a
        if name == "clamp":
            return a.clamp(min=-0.5, max=0.6) if k % 2 else a.clip(max=0.3)
        if name == "softmax":
            return a.softmax(-1)
        if name == "logsoftmax":
            return a.log_softmax(-1)
        if name == "layernorm":
            m = a.mean(-1, keepdim=True)
            dv = a - m
            return dv / ((dv * dv).mean(-1, keepdim=True) + 1e-3).sqrt() * self.gamma + self.beta
        if name == "center_max":
            return a - tr.amax(a, -1, keepdim=True)
        if name == "sumnorm":
            return a / (a.abs().sum(-1, keepdim=True) + 1)
        if name == "log":
            return (a * a + 1).log()
        if name == "maxdim":
            return a - a.max(-1, keepdim=True).values
        if name == "rowsum":
            return a * a.tanh().sum(-1).unsqueeze(-1)
        if name == "rsub":
            return 1 - a
        if name == "scale":
            return a * 0.7 - 0.1
        if name == "add":
            return a + b
        if name == "sub":
            return a - b
        if name == "mul":
            return a * b
        if name == "div":
            return a / (b * b + 1.0)
        if name == "maximum":
            return tr.maximum(a, b)
        if name == "minimum":
            return tr.minimum(a, b)
        if name == "where":
            return tr.where(a > b, a, b * 0.5)
        if name == "peep":
            return a + self.p[k % 3] * b
        if name == "alpha":
            return a * self.alpha + b
        if name == "pow":
            return (a.abs() + 1) ** b.sigmoid()
        if name == "catslice":
            return tr.cat([a[:, : k % h], b[:, k % h:]], dim=-1) if k % h else tr.cat([b[:, :1], a[..., 1:]], -1)
        if name == "rowbias":
            return a + self.beta * b
        raise ValueError(name)

    def forward(self, x: tr.Tensor, state: Any) -> tuple:
        r = self.r
        two = r["two_states"]
        h, c = state if two else (state, None)
        pre = F.linear(x, self.w_ih, self.b_ih)
        if r["hh"] == "linear":
            pre = pre + F.linear(h, self.w_hh)
        elif r["hh"] == "matmul":
            pre = pre + h @ self.w_hh
        if r["brow"]:
            pre = pre + self.brow
        gates = list(pre.chunk(r["G"], -1)) if r["G"] > 1 else [pre]
        if r["hh"] == "none":
            gates[0] = gates[0] + self.u * h
        pool = gates + [h] + ([c] if two else [])
        for name, i, j, k in r["steps"]:
            pool.append(self.op(name, pool[i % len(pool)], pool[j % len(pool)], k))
        if r["second_gemm"]:
            pool.append(F.linear(pool[-1].sigmoid() * h, self.w2))
        new_h = (pool[-1] + gates[-1]).tanh()
        out = pool[r["out"] % len(pool)] * 0.5 + new_h
        if not two:
            return out, new_h
        new_c = c * pool[len(pool) // 2].sigmoid() + pool[-1].tanh()
        return out, (new_h, new_c)
