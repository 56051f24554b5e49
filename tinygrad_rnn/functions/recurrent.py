"""The fused recurrences: the whole sequence as one node per layer and direction (its time loop in the
backend), and one cell step as one node (the cells' fused path)."""
from __future__ import annotations

from typing import Any

from ..backend import precision
from ..backend.recurrence import GATES, STORE_GATES
from ..tensor import Function


class FusedRecurrence(Function):
    """One layer, one direction, the whole sequence. Inputs (time-major):
    ``x (T, B, D), h0 (B, H), [c0 (B, H) for LSTM], w_ih (G*H, D), w_hh (G*H, H), [b_ih, b_hh]``.
    Outputs ``out (T, B, H)``, ``h_n (B, H)`` and, for the LSTM, ``c_n``.

    ``train`` (from the caller: grad mode is on and an input requires grad) is False for a
    forward-only pass: the backend then keeps no store and no per-step cell state, and nothing
    is saved here.
    """

    saves_outputs = True  # ``out`` shares memory with the saved h_all: an in-place change must be caught
    # every gradient is a new array (the backend's dh0/dc0, GEMM results, sums, a copy): a weight's first
    # .grad takes it without the defensive copy
    fresh_grads = True

    def forward(self, *arrays, mode, mask, reverse, has_bias, train, masked=False):
        xp = self.xp
        self.bf16 = precision.bf16_active()  # autocast: backward multiplies as forward did
        lstm = mode == "lstm"
        x, h0 = arrays[0], arrays[1]
        k = 2
        c0 = None
        if lstm:
            c0 = arrays[2]
            k = 3
        w_ih, w_hh = arrays[k], arrays[k + 1]
        b_ih, b_hh = (arrays[k + 2], arrays[k + 3]) if has_bias else (None, None)
        t_, b_, d_ = x.shape
        h_ = h0.shape[1]
        if reverse:
            x = x[::-1]
            mask = mask[::-1]
        if masked:
            # padding may hold anything (even NaN): keep it out of the products, as packed sequences do
            x = xp.where(mask[:, :, None] != 0, x, xp.zeros((), dtype=x.dtype))
        x2 = xp.ascontiguousarray(x).reshape(t_ * b_, d_)
        bias, b_hn = self.be.rnn_biases(mode, b_ih, b_hh, h_, x.dtype)
        mask = xp.ascontiguousarray(mask)
        h0, c0 = xp.ascontiguousarray(h0), None if c0 is None else xp.ascontiguousarray(c0)
        # the backend projects the input (x W_ih^T + bias) itself: per step inside its loop, or at once
        h_all, c_all, store = self.be.rnn_forward(mode, x2.reshape(t_, b_, d_), w_ih, bias, w_hh, b_hn, h0, c0, mask,
                                                  train=train)
        if train:
            self.mode, self.reverse, self.has_bias, self.lstm = mode, reverse, has_bias, lstm
            self.x2, self.w_ih, self.w_hh, self.h_all, self.c_all, self.store, self.mask = \
                x2, w_ih, w_hh, h_all, c_all, store, mask
            self.shape = (t_, b_, d_, h_)
        else:
            del x2
        out = h_all[1:]
        if masked:
            out = out * mask[:, :, None]
        if reverse:
            out = out[::-1]
        # h_all[1:] is already contiguous: no copy unless masked or reversed
        out = xp.ascontiguousarray(out)
        if lstm:
            return out, h_all[t_].copy(), c_all[-1].copy()
        return out, h_all[t_].copy()

    def backward(self, dout, dh_n, dc_n=None):
        with precision.using(self.bf16):
            return self._backward(dout, dh_n, dc_n)

    def _backward(self, dout, dh_n, dc_n):
        xp = self.xp
        t_, b_, d_, h_ = self.shape
        if self.reverse:
            dout = dout[::-1]
        dout = xp.ascontiguousarray(dout)
        dxw, dhw, dh0, dc0 = self.be.rnn_backward(self.mode, self.w_hh, self.store, self.h_all, self.c_all, self.mask,
                                                  dout, xp.ascontiguousarray(dh_n),
                                                  None if dc_n is None else xp.ascontiguousarray(dc_n))
        g = dxw.shape[-1]
        dxw2 = dxw.reshape(t_ * b_, g)
        dhw2 = dhw.reshape(t_ * b_, g)
        grads: list[Any] = []
        needs = self.needs
        k = 3 if self.lstm else 2
        # operands of up to three products each (dx, dW_ih; dW_hh): made ready once (rounded once under autocast)
        dxw_op = self.be.mm_operand(dxw2) if needs[0] + needs[k] + (needs[k + 1] and dhw is dxw) > 1 else dxw2
        dhw_op = dxw_op if dhw is dxw else dhw2
        dx = None
        if needs[0]:
            dx = self.be.mm(dxw_op, self.w_ih).reshape(t_, b_, d_)
            if self.reverse:
                dx = dx[::-1]
        grads.append(dx)
        grads.append(dh0)
        if self.lstm:
            grads.append(dc0)
        k = len(grads)
        grads.append(self.be.mm(dxw_op.T, self.x2) if needs[k] else None)
        grads.append(self.be.mm(dhw_op.T, self.h_all[:-1].reshape(t_ * b_, h_)) if needs[k + 1] else None)
        if self.has_bias:
            db_ih = dxw2.sum(axis=0) if needs[k + 2] or (needs[k + 3] and dhw is dxw) else None
            if dhw is dxw:  # LSTM / RNN: both biases get the same gradient; sum once, own copy each
                db_hh = db_ih.copy() if needs[k + 3] else None
            else:
                db_hh = dhw2.sum(axis=0) if needs[k + 3] else None
            grads.append(db_ih if needs[k + 2] else None)
            grads.append(db_hh)
        return tuple(grads)


class CompiledRecurrence(Function):
    """A user's cell compiled over the whole sequence (``tinygrad_rnn.compiler``), one node. Inputs
    (time-major): ``x (T, B, D)``, the initial states, the step's boundary tensors; outputs: the
    stacked per-step outputs and the final states. ``program`` (the compiler's ``CompiledCell``) holds
    the generated kernels and runs them; being a node, it gets version checks and anomaly mode."""

    # a compiled cell's generated kernels multiply in float32; under autocast its projections do too
    # (bfloat16 products for compiled cells are not built yet), so the whole node is one precision

    def forward(self, x, *arrays, program, train, **kw):
        with precision.using(False):
            outs, self.saved = program.forward(self.be, x, arrays, train=train, **kw)
        self.program = program
        return outs

    def backward(self, dout, *dstates):
        with precision.using(False):
            return self.program.backward(self.be, self.needs, self.saved, dout, dstates)



class FusedCell(Function):
    """One step of an RNN/LSTM/GRU cell as one node: the fused path of ``nn.RNNCell``/``LSTMCell``/``GRUCell``.

    Inputs ``x (B, D), h (B, H), [c (B, H) for the LSTM], w_ih (G*H, D), w_hh (G*H, H), [b_ih, b_hh]``;
    outputs ``h'`` (and ``c'`` for the LSTM). Forward is one step of the fused layers: the two products
    ``x W_ih^T + biases`` and ``h W_hh^T`` through ``be.mm``, then the backend's step kernel
    (``be.rnn_step_forward``) for all the gate math at once; backward is ``be.rnn_step_backward`` and
    the GEMMs for the input, the state and the weights. Equal to the composite cell (``fused=False``).
    ``train`` (from the caller: grad mode on and an input requires grad) False keeps nothing for backward.
    """

    fresh_grads = True  # every gradient is a new array (GEMM results, sums, the kernel's outputs)

    def forward(self, *arrays, mode, has_bias, train=True):
        xp, be = self.xp, self.be
        self.bf16 = precision.bf16_active()
        lstm = mode == "lstm"
        x, h = xp.ascontiguousarray(arrays[0]), xp.ascontiguousarray(arrays[1])
        k = 3 if lstm else 2
        c = xp.ascontiguousarray(arrays[2]) if lstm else None
        w_ih, w_hh = arrays[k], arrays[k + 1]
        b_ih, b_hh = (arrays[k + 2], arrays[k + 3]) if has_bias else (None, None)
        b_, h_ = h.shape
        dt = x.dtype
        bias, b_hn = be.rnn_biases(mode, b_ih, b_hh, h_, dt)
        xw = be.mm(x, w_ih.T, bias)
        hw = be.mm(h, w_hh.T)
        mask = xp.ones(b_, dtype=dt)
        sg = STORE_GATES[mode]
        store = xp.empty((b_, sg * h_), dtype=dt) if sg else None
        h_out = xp.empty((b_, h_), dtype=dt)
        c_out = xp.empty((b_, h_), dtype=dt) if lstm else None
        be.rnn_step_forward(mode, xw, hw, b_hn, h, c, mask, store, h_out, c_out)
        if not train:  # (no gradient wanted: nothing to keep)
            return (h_out, c_out) if lstm else h_out
        self.mode, self.lstm, self.has_bias = mode, lstm, has_bias
        self.x, self.h, self.c, self.w_ih, self.w_hh, self.store, self.mask = x, h, c, w_ih, w_hh, store, mask
        # backward reads h' (RNN) or c' (LSTM): its own copies, so the caller may change the outputs in place
        self.h_t = h_out.copy() if mode.startswith("rnn") else None
        self.c_t = c_out.copy() if lstm else None
        return (h_out, c_out) if lstm else h_out

    def backward(self, dh, dc=None):
        with precision.using(self.bf16):
            return self._backward(dh, dc)

    def _backward(self, dh, dc):
        xp, be, mode, lstm = self.xp, self.be, self.mode, self.lstm
        b_, h_ = self.h.shape
        dt = self.h.dtype
        gh = GATES[mode] * h_
        dxw = xp.empty((b_, gh), dtype=dt)
        dhw = xp.empty((b_, gh), dtype=dt) if mode == "gru" else dxw
        dh_pass = xp.empty((b_, h_), dtype=dt)
        dc_prev = xp.empty((b_, h_), dtype=dt) if lstm else None
        zero = xp.zeros((b_, h_), dtype=dt)  # no carry: the kernel's dh is dout + carry
        be.rnn_step_backward(mode, self.store, self.h, self.h_t, self.c, self.c_t, self.mask,
                             xp.ascontiguousarray(dh, dtype=dt), zero,
                             xp.ascontiguousarray(dc, dtype=dt) if lstm else None, dxw, dhw, dh_pass, dc_prev)
        needs = self.needs
        k = 3 if lstm else 2
        # an operand of up to three products (dx, dW_ih; dW_hh): made ready once (rounded once under autocast)
        dxw_op = be.mm_operand(dxw) if needs[0] + needs[k] + (needs[k + 1] and dhw is dxw) > 1 else dxw
        grads: list[Any] = [be.mm(dxw_op, self.w_ih) if needs[0] else None]
        if needs[1]:
            be.gemm(dhw, xp.ascontiguousarray(self.w_hh), dh_pass, 1)  # dh = dh_pass + dhw W_hh
            grads.append(dh_pass)
        else:
            grads.append(None)
        if lstm:
            grads.append(dc_prev if needs[2] else None)
        k = len(grads)
        grads.append(be.mm(dxw_op.T, self.x) if needs[k] else None)
        grads.append(be.mm((dxw_op if dhw is dxw else dhw).T, self.h) if needs[k + 1] else None)
        if self.has_bias:
            db_ih = dxw.sum(axis=0) if needs[k + 2] or (needs[k + 3] and dhw is dxw) else None
            if dhw is dxw:  # LSTM / RNN: both biases get the same gradient
                db_hh = db_ih.copy() if needs[k + 3] else None
            else:
                db_hh = dhw.sum(axis=0) if needs[k + 3] else None
            grads.append(db_ih if needs[k + 2] else None)
            grads.append(db_hh)
        return tuple(grads)
