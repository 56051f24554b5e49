"""The time loop of a fused recurrent layer, written once for every backend.

Per step: one recurrent GEMM (``be.gemm``: BLAS, cuBLAS, or NumPy in the emulated GPU backend)
and one fused pointwise kernel (``be.rnn_step_forward`` / ``be.rnn_step_backward``). Backward folds
``dh = dhw[t] @ W_hh + dh_pass`` into the GEMM (beta = 1 onto the kernel's dh_pass), so it too is
one GEMM and one kernel per step. The loops allocate everything before the first step, so the CUDA
backend can capture them whole into a CUDA graph. The input projection before the loop and the weight
gradients after it are whole-sequence GEMMs (``Backend.rnn_forward``, the caller's backward). A
backend may replace the whole loop (the CPU backend runs it inside one Numba kernel, rnn_kernels.py).

``GATES`` is the one gate-count table: ``"lstm"`` (G=4: i, f, g, o), ``"gru"`` (G=3: r, z, n),
``"rnn_tanh"`` / ``"rnn_relu"`` (G=1); ``GATE_NAMES`` names them in PyTorch's order.
"""
from __future__ import annotations

from typing import Any

GATE_NAMES = {"lstm": "ifgo", "gru": "rzn", "rnn_tanh": "", "rnn_relu": ""}
# gates per step: one pre-activation for a plain RNN (no named gates), one per named gate otherwise
GATES = {mode: max(1, len(names)) for mode, names in GATE_NAMES.items()}
STORE_GATES = {"lstm": 4, "gru": 4, "rnn_tanh": 0, "rnn_relu": 0}


def alloc_forward(xp: Any, mode: str, t: int, b: int, h: int, dtype: Any, train: bool = True) -> tuple[Any, Any, Any]:
    """``(h_all (T+1, B, H), c_all, store)``. Training: c_all (T+1, B, H) and store (T, B, S*H) for
    backward. Forward-only (``train=False``): c_all is a ping-pong pair (2, B, H) and the store one
    scratch row (1, B, S*H), indexed modulo their first axis, so nothing grows with T but h_all."""
    h_all = xp.empty((t + 1, b, h), dtype=dtype)
    c_all = xp.empty((t + 1 if train else 2, b, h), dtype=dtype) if mode == "lstm" else None
    sg = STORE_GATES[mode]
    store = xp.empty((t if train else 1, b, sg * h), dtype=dtype) if sg else None
    return h_all, c_all, store


def last_state(c_all: Any, t: int) -> Any:
    """c_all with c_n last: a forward-only ping-pong pair holds c_n at row T % 2 (reversed view if 0)."""
    if c_all is None or c_all.shape[0] == t + 1 or t % c_all.shape[0] == c_all.shape[0] - 1:
        return c_all
    return c_all[::-1]


def recurrence_forward(be: Any, mode: str, xw: Any, w_hh: Any, b_hn: Any, h0: Any, c0: Any, mask: Any,
                       train: bool = True) -> tuple[Any, Any, Any]:
    """Run the recurrence over time. Returns ``(h_all, c_all, store)``; ``h_all[0] = h0``,
    ``h_all[-1]`` is h_n and ``c_all[-1]`` c_n. ``train=False`` keeps nothing for backward
    (``store`` is None, ``c_all`` only the last state(s)); see ``alloc_forward``."""
    xp = be.xp
    t_, b_, gh = xw.shape
    h_ = h0.shape[1]
    h_all, c_all, store = alloc_forward(xp, mode, t_, b_, h_, xw.dtype, train)
    h_all[0] = h0
    nc = 0 if c_all is None else c_all.shape[0]
    ns = 0 if store is None else store.shape[0]
    if c_all is not None:
        c_all[0] = c0
    w_t = xp.ascontiguousarray(w_hh.T)
    hw = xp.empty((b_, gh), dtype=xw.dtype)
    gemm, step = be.gemm, be.rnn_step_forward
    for t in range(t_):
        gemm(h_all[t], w_t, hw, 0)
        step(mode, xw[t], hw, b_hn, h_all[t], None if c_all is None else c_all[t % nc], mask[t],
             None if store is None else store[t % ns], h_all[t + 1], None if c_all is None else c_all[(t + 1) % nc])
    return h_all, last_state(c_all, t_), store if train else None


def recurrence_backward(be: Any, mode: str, w_hh: Any, store: Any, h_all: Any, c_all: Any, mask: Any,
                        dout: Any, dh_n: Any, dc_n: Any) -> tuple[Any, Any, Any, Any]:
    """Backprop through time. Returns ``(dxw, dhw, dh0, dc0)``: gradients of the input projection,
    of the recurrent pre-activations (the same array except for the GRU), and of the initial state.
    The step kernel writes dh_pass into the next carry buffer and the GEMM accumulates onto it."""
    xp = be.xp
    t_, b_, h_ = dout.shape
    gh = GATES[mode] * h_
    lstm = mode == "lstm"
    dxw = xp.empty((t_, b_, gh), dtype=dout.dtype)
    dhw = xp.empty((t_, b_, gh), dtype=dout.dtype) if mode == "gru" else dxw
    w = xp.ascontiguousarray(w_hh)
    dh, dh_next = xp.array(dh_n, copy=True), xp.empty_like(dh_n)
    dc = xp.array(dc_n, copy=True) if lstm else None
    dc_next = xp.empty_like(dc) if lstm else None
    gemm, step = be.gemm, be.rnn_step_backward
    for t in range(t_ - 1, -1, -1):
        step(mode, None if store is None else store[t], h_all[t], h_all[t + 1],
             None if c_all is None else c_all[t], None if c_all is None else c_all[t + 1],
             mask[t], dout[t], dh, dc, dxw[t], dhw[t], dh_next, dc_next)
        gemm(dhw[t], w, dh_next, 1)
        dh, dh_next = dh_next, dh
        if lstm:
            dc, dc_next = dc_next, dc
    return dxw, dhw, dh, dc
