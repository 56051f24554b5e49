"""Numba kernels for the recurrent cells: the pointwise gate math of one time step, forward
and backward, and whole-sequence loops (recurrent product included) for small layers.

Layout (time-major, one direction of one layer; G = 1 RNN, 4 LSTM, 3 GRU):
  xw    (T, B, G*H)  input projection x_t W_ih^T + biases, precomputed by one GEMM
  hw    (B, G*H)     recurrent product h_{t-1} W_hh^T of the current step (no bias)
  mask  (T, B)       1.0 where step t of sequence b is real, 0.0 on padding: a padded step
                     carries the state through unchanged and its output is zero
  LSTM gates (i, f, g, o) and GRU gates (r, z, n) in PyTorch's order. For the GRU the
  recurrent bias of the n gate (b_hn) stays inside r * (W_hn h + b_hn), as in PyTorch, so
  it is passed on its own; xw holds b_ih and b_hr, b_hz.

Stored for backward: LSTM post-activation gates (T, B, 4H) and c; GRU r, z, n and
hn = W_hn h + b_hn as (T, B, 4H); RNN nothing beyond h itself. Step kernels write into
caller-allocated rows; the whole-sequence ``*_seq_*`` kernels are used by the CPU backend
when B*G*H*H is small, where per-step Python and BLAS-call overhead would dominate.

Forward-only (inference): the sequence kernels index the store and c_all modulo their first
axis, so the caller passes a one-row store and a two-row c_all (a ping-pong pair) and the same
kernel keeps nothing for backward; ``c_all[T % len(c_all)]`` is then c_n.
"""
from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "lstm_step_forward", "lstm_step_backward", "lstm_seq_forward", "lstm_seq_backward",
    "gru_step_forward", "gru_step_backward", "gru_seq_forward", "gru_seq_backward",
    "rnn_step_forward", "rnn_step_backward", "rnn_seq_forward", "rnn_seq_backward",
]

_jit = numba.njit(cache=True, nogil=True, fastmath=False)


@numba.njit(cache=True, inline="always")
def _sigmoid(x):  # pragma: no cover - jit
    # exp of a non-positive number only, so no overflow for large |x|
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@numba.njit(cache=True, inline="always")
def _recurrent_product(hp, w_hh_t, hw):  # pragma: no cover - jit
    """hw = hp @ w_hh_t in plain loops: for the small layers these kernels serve, a BLAS call
    per step costs more than the arithmetic."""
    b_, g = hw.shape
    for b in range(b_):
        for j in range(g):
            hw[b, j] = 0.0
        for k in range(hp.shape[1]):
            hk = hp[b, k]
            for j in range(g):
                hw[b, j] += hk * w_hh_t[k, j]


@numba.njit(cache=True, inline="always")
def _carry_back(dg, w_hh, dh_pass, dh):  # pragma: no cover - jit
    """dh = dh_pass + dg @ w_hh: the gradient reaching h_{t-1}; zero rows of dg (padding) are skipped."""
    b_, g = dg.shape
    for b in range(b_):
        for k in range(dh.shape[1]):
            dh[b, k] = dh_pass[b, k]
        for j in range(g):
            d = dg[b, j]
            if d != 0.0:
                for k in range(dh.shape[1]):
                    dh[b, k] += d * w_hh[j, k]


# ------------------------------------------------------------------------------------------
# LSTM


@_jit
def lstm_step_forward(xw, hw, h_prev, c_prev, mask, gates, h_out, c_out):  # pragma: no cover - jit
    b_, g4 = xw.shape
    h_ = g4 // 4
    for b in range(b_):
        m = mask[b]
        for j in range(h_):
            i = _sigmoid(xw[b, j] + hw[b, j])
            f = _sigmoid(xw[b, h_ + j] + hw[b, h_ + j])
            g = math.tanh(xw[b, 2 * h_ + j] + hw[b, 2 * h_ + j])
            o = _sigmoid(xw[b, 3 * h_ + j] + hw[b, 3 * h_ + j])
            gates[b, j] = i
            gates[b, h_ + j] = f
            gates[b, 2 * h_ + j] = g
            gates[b, 3 * h_ + j] = o
            if m != 0.0:
                c = f * c_prev[b, j] + i * g
                c_out[b, j] = c
                h_out[b, j] = o * math.tanh(c)
            else:
                c_out[b, j] = c_prev[b, j]
                h_out[b, j] = h_prev[b, j]


@_jit
def lstm_step_backward(gates, c_prev, tanh_c, mask, dout, dh_carry, dc_carry, dgates, dh_pass, dc_prev):  # pragma: no cover
    """dgates: pre-activation gradients; dh_pass: the part of dh_{t-1} that bypasses W_hh.

    ``tanh_c`` is tanh(c_t), computed by the caller with a vectorised ufunc: a scalar libm
    tanh per element here would cost more than the rest of the kernel."""
    b_, g4 = gates.shape
    h_ = g4 // 4
    for b in range(b_):
        if mask[b] == 0.0:
            dgates[b, :] = 0.0
            dh_pass[b, :] = dh_carry[b, :]
            dc_prev[b, :] = dc_carry[b, :]
            continue
        for j in range(h_):
            i = gates[b, j]
            f = gates[b, h_ + j]
            g = gates[b, 2 * h_ + j]
            o = gates[b, 3 * h_ + j]
            tc = tanh_c[b, j]
            dh = dout[b, j] + dh_carry[b, j]
            dc = dc_carry[b, j] + dh * o * (1.0 - tc * tc)
            dgates[b, j] = dc * g * i * (1.0 - i)
            dgates[b, h_ + j] = dc * c_prev[b, j] * f * (1.0 - f)
            dgates[b, 2 * h_ + j] = dc * i * (1.0 - g * g)
            dgates[b, 3 * h_ + j] = dh * tc * o * (1.0 - o)
            dh_pass[b, j] = 0.0
            dc_prev[b, j] = dc * f


@_jit
def lstm_seq_forward(xw, w_hh_t, h0, c0, mask, gates, h_all, c_all):  # pragma: no cover - jit
    """Whole sequence: w_hh_t is W_hh^T (H, 4H); h_all/c_all (T+1, B, H) with [0] = h0/c0
    (forward-only: gates (1, B, 4H), c_all (2, B, H), see the module docstring)."""
    t_, b_, g4 = xw.shape
    hw = np.empty_like(xw[0])
    ns, nc = gates.shape[0], c_all.shape[0]
    h_all[0] = h0
    c_all[0] = c0
    for t in range(t_):
        hp = h_all[t]
        _recurrent_product(hp, w_hh_t, hw)
        lstm_step_forward(xw[t], hw, hp, c_all[t % nc], mask[t], gates[t % ns], h_all[t + 1], c_all[(t + 1) % nc])


@_jit
def lstm_seq_backward(w_hh, gates, c_all, tanh_c, mask, dout, dh_n, dc_n, dgates, dh0, dc0):  # pragma: no cover - jit
    """Reverse time; w_hh is (4H, H), tanh_c = tanh(c_all[1:]). Writes dgates (T, B, 4H), dh0, dc0."""
    t_, b_, g4 = gates.shape
    dh = dh_n.copy()
    dc = dc_n.copy()
    dh_pass = dh_n.copy()
    dc_prev = dc_n.copy()
    for t in range(t_ - 1, -1, -1):
        lstm_step_backward(gates[t], c_all[t], tanh_c[t], mask[t], dout[t], dh, dc, dgates[t], dh_pass, dc_prev)
        _carry_back(dgates[t], w_hh, dh_pass, dh)
        dc[:] = dc_prev
    dh0[:] = dh
    dc0[:] = dc


# ------------------------------------------------------------------------------------------
# GRU


@_jit
def gru_step_forward(xw, hw, b_hn, h_prev, mask, store, h_out):  # pragma: no cover - jit
    """store[b] = (r, z, n, hn) with hn = W_hn h + b_hn; h' = (1 - z) n + z h."""
    b_, g3 = xw.shape
    h_ = g3 // 3
    for b in range(b_):
        m = mask[b]
        for j in range(h_):
            r = _sigmoid(xw[b, j] + hw[b, j])
            z = _sigmoid(xw[b, h_ + j] + hw[b, h_ + j])
            hn = hw[b, 2 * h_ + j] + b_hn[j]
            n = math.tanh(xw[b, 2 * h_ + j] + r * hn)
            store[b, j] = r
            store[b, h_ + j] = z
            store[b, 2 * h_ + j] = n
            store[b, 3 * h_ + j] = hn
            if m != 0.0:
                h_out[b, j] = (1.0 - z) * n + z * h_prev[b, j]
            else:
                h_out[b, j] = h_prev[b, j]


@_jit
def gru_step_backward(store, h_prev, mask, dout, dh_carry, dxw, dhw, dh_pass):  # pragma: no cover - jit
    """dxw: gradient of the input projection (r, z, n); dhw: of W_hh h + b_hh (r, z, hn)."""
    b_, g4 = store.shape
    h_ = g4 // 4
    for b in range(b_):
        if mask[b] == 0.0:
            dxw[b, :] = 0.0
            dhw[b, :] = 0.0
            dh_pass[b, :] = dh_carry[b, :]
            continue
        for j in range(h_):
            r = store[b, j]
            z = store[b, h_ + j]
            n = store[b, 2 * h_ + j]
            hn = store[b, 3 * h_ + j]
            dh = dout[b, j] + dh_carry[b, j]
            dn = dh * (1.0 - z) * (1.0 - n * n)
            dz = dh * (h_prev[b, j] - n) * z * (1.0 - z)
            dr = dn * hn * r * (1.0 - r)
            dxw[b, j] = dr
            dxw[b, h_ + j] = dz
            dxw[b, 2 * h_ + j] = dn
            dhw[b, j] = dr
            dhw[b, h_ + j] = dz
            dhw[b, 2 * h_ + j] = dn * r
            dh_pass[b, j] = dh * z


@_jit
def gru_seq_forward(xw, w_hh_t, b_hn, h0, mask, store, h_all):  # pragma: no cover - jit
    t_, b_, g3 = xw.shape
    hw = np.empty_like(xw[0])
    ns = store.shape[0]
    h_all[0] = h0
    for t in range(t_):
        hp = h_all[t]
        _recurrent_product(hp, w_hh_t, hw)
        gru_step_forward(xw[t], hw, b_hn, hp, mask[t], store[t % ns], h_all[t + 1])


@_jit
def gru_seq_backward(w_hh, store, h_all, mask, dout, dh_n, dxw, dhw, dh0):  # pragma: no cover - jit
    t_, b_, g3 = dxw.shape
    dh = dh_n.copy()
    dh_pass = dh_n.copy()
    for t in range(t_ - 1, -1, -1):
        gru_step_backward(store[t], h_all[t], mask[t], dout[t], dh, dxw[t], dhw[t], dh_pass)
        _carry_back(dhw[t], w_hh, dh_pass, dh)
    dh0[:] = dh


# ------------------------------------------------------------------------------------------
# Elman RNN (tanh or relu)


@_jit
def rnn_step_forward(xw, hw, h_prev, mask, relu, h_out):  # pragma: no cover - jit
    b_, h_ = xw.shape
    for b in range(b_):
        m = mask[b]
        for j in range(h_):
            if m == 0.0:
                h_out[b, j] = h_prev[b, j]
                continue
            a = xw[b, j] + hw[b, j]
            if relu:
                h_out[b, j] = a if a > 0.0 else 0.0
            else:
                h_out[b, j] = math.tanh(a)


@_jit
def rnn_step_backward(h_t, mask, relu, dout, dh_carry, dpre, dh_pass):  # pragma: no cover - jit
    b_, h_ = h_t.shape
    for b in range(b_):
        if mask[b] == 0.0:
            dpre[b, :] = 0.0
            dh_pass[b, :] = dh_carry[b, :]
            continue
        for j in range(h_):
            dh = dout[b, j] + dh_carry[b, j]
            y = h_t[b, j]
            if relu:
                dpre[b, j] = dh if y > 0.0 else 0.0
            else:
                dpre[b, j] = dh * (1.0 - y * y)
            dh_pass[b, j] = 0.0


@_jit
def rnn_seq_forward(xw, w_hh_t, h0, mask, relu, h_all):  # pragma: no cover - jit
    t_, b_, h_ = xw.shape
    hw = np.empty_like(xw[0])
    h_all[0] = h0
    for t in range(t_):
        hp = h_all[t]
        _recurrent_product(hp, w_hh_t, hw)
        rnn_step_forward(xw[t], hw, hp, mask[t], relu, h_all[t + 1])


@_jit
def rnn_seq_backward(w_hh, h_all, mask, relu, dout, dh_n, dpre, dh0):  # pragma: no cover - jit
    t_, b_, h_ = dpre.shape
    dh = dh_n.copy()
    dh_pass = dh_n.copy()
    for t in range(t_ - 1, -1, -1):
        rnn_step_backward(h_all[t + 1], mask[t], relu, dout[t], dh, dpre[t], dh_pass)
        _carry_back(dpre[t], w_hh, dh_pass, dh)
    dh0[:] = dh
