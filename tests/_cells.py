"""Cells for the compiler's tests: the example's cell zoo (examples/custom_cell.py), the built-in layers
written as cells, and a generator of random cells from the compilable ops (the property test's subject)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

import tinygrad_rnn as tr
from tinygrad_rnn import nn
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.nn.rnn import gru_cell, lstm_cell, rnn_cell

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from custom_cell import CELLS, CoupledLSTM, IndRNN, LayerNormLSTM, PeepholeLSTM  # noqa: E402  (the example's cells)

__all__ = ["CELLS", "CoupledLSTM", "IndRNN", "LayerNormLSTM", "PeepholeLSTM", "LayerCell", "RandomCell", "UNARY",
           "BINARY"]


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
