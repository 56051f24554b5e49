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

import llvmlite.binding as llb
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .bf16 import gemm_bf16_packed
from .blas import gemm, gemm_packed

__all__ = [
    "activations_f", "lstm_step_forward", "lstm_step_backward", "lstm_seq_forward", "lstm_seq_backward",
    "gru_step_forward", "gru_step_backward", "gru_seq_forward", "gru_seq_backward",
    "rnn_step_forward", "rnn_step_backward", "rnn_seq_forward", "rnn_seq_backward",
]

# fastmath without "nnan"/"ninf"/"afn": FMA contraction and no signed-zero care let LLVM
# vectorise the pointwise loops, while NaN checks and the exactness of float64 libm calls stay
_FAST = {"contract", "nsz"}
# error_model="numpy": a float division by zero gives inf/nan as in NumPy, with no per-division
# Python check (that check alone stops LLVM vectorising a loop)
_jit = numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")


# ------------------------------------------------------------------------------------------
# gate activations. float64: libm (exact to rounding, the gradient checks run there). float32:
# a branch-free exp with a polynomial core, from which sigmoid and tanh follow; LLVM vectorises
# it (this Numba has no SVML, so libm tanh/exp would be one scalar call per element). Accurate
# to a few ulp over the whole float32 range, subnormal results included; +-inf and NaN as libm.

_F32 = np.float32
_LOG2E = _F32(1.4426950408889634)
_LN2_HI = _F32(0.693145751953125)  # 16 significant bits: k * _LN2_HI is exact for |k| <= 256
_LN2_LO = _F32(1.428606765330187e-06)
_ROUND = _F32(12582912.0)  # 1.5 * 2**23: adding and subtracting it rounds to an integer
_EXP_HI, _EXP_LO = _F32(88.8), _F32(-104.0)  # beyond these exp overflows / rounds to 0
# Taylor coefficients of exp on |r| <= ln2/2 (degree 7: truncation below 1e-8 relative)
_E2, _E3, _E4, _E5, _E6, _E7 = (_F32(1 / 2), _F32(1 / 6), _F32(1 / 24), _F32(1 / 120), _F32(1 / 720), _F32(1 / 5040))
# tanh(x) = x + x^3 P(x^2) for |x| < 0.625 (least-squares fit of relative error, < 1 ulp there)
_T0, _T1, _T2, _T3, _T4 = (_F32(-0.3333328068256378), _F32(0.133314311504364), _F32(-0.053739145398139954),
                           _F32(0.020637817680835724), _F32(-0.005703992675989866))
_TANH_SMALL = _F32(0.625)
_ONE, _TWO, _ZERO = _F32(1.0), _F32(2.0), _F32(0.0)


@intrinsic
def _pow2_f32(typingctx, n):
    """2.0**n as float32 for an integer n in [-126, 127], built from its exponent bits."""
    if not isinstance(n, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        v = args[0]
        v = builder.trunc(v, i32) if v.type.width > 32 else builder.sext(v, i32) if v.type.width < 32 else v
        bits = builder.shl(builder.add(v, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(n), codegen


@intrinsic
def _select(typingctx, cond, a, b):
    """``a if cond else b`` as one LLVM select, no branch: the helpers below are inlined into
    loops many times, and Numba's IR-level ternaries there both hinder vectorising and trip
    its SSA checks."""
    if not isinstance(cond, types.Boolean) or a != b:
        return None

    def codegen(context, builder, sig, args):
        return builder.select(args[0], args[1], args[2])

    return a(cond, a, b), codegen


# LLVM vectorises these loops 256 bits wide by default even on AVX-512 CPUs (Skylake-era clock throttling);
# on this round's Xeon 512-bit vectors made the LSTM gate kernel 17-20% faster (H = 256: 29.7 -> 24.5 us a
# step; H = 128: 16.5 -> 13.3), bit for bit the same results (no reductions: every element alone).
_WIDE = "avx512f" in {f.lstrip("+") for f in llb.get_host_cpu_features().flatten().split(",") if f.startswith("+")}


@intrinsic
def _vectors_512(typingctx):
    """Ask LLVM for 512-bit vectors in the function calling this (its loops), on a CPU with AVX-512:
    the function attributes ``prefer-vector-width`` and ``min-legal-vector-width``. A tuning hint only:
    where llvmlite refuses it, or the CPU has no AVX-512, nothing changes."""
    def codegen(context, builder, sig, args):
        if _WIDE:
            try:
                attrs = builder.function.attributes
                set.add(attrs, '"prefer-vector-width"="512"')  # llvmlite's add() knows only LLVM's enum attributes
                set.add(attrs, '"min-legal-vector-width"="512"')
            except Exception:  # noqa: BLE001 - pragma: no cover - a llvmlite without set-based attributes
                pass
        return context.get_dummy_value()

    return types.none(), codegen


@numba.njit(cache=True, inline="always", fastmath=_FAST, error_model="numpy")
def _exp_f32(x):  # pragma: no cover - jit
    """exp(x) for float32 x: x = k ln2 + r, exp(r) by Horner, 2**k applied as two factors so
    results in the subnormal range round correctly. NaN in, NaN out."""
    xc = _select(x < _EXP_HI, x, _EXP_HI)
    xc = _select(xc > _EXP_LO, xc, _EXP_LO)
    kf = (xc * _LOG2E + _ROUND) - _ROUND
    r = (xc - kf * _LN2_HI) - kf * _LN2_LO
    p = _E6 + r * _E7
    p = _E5 + r * p
    p = _E4 + r * p
    p = _E3 + r * p
    p = _E2 + r * p
    p = _ONE + r * p
    p = _ONE + r * p
    k = np.int32(kf)
    k1 = k >> 1
    y = p * _pow2_f32(k1) * _pow2_f32(k - k1)
    return _select(x == x, y, x)


@numba.njit(cache=True, inline="always", fastmath=_FAST, error_model="numpy")
def _sigmoid_f32(x):  # pragma: no cover - jit
    # exp of -|x| only (never overflows); e/(1+e) keeps full relative accuracy for x << 0
    e = _exp_f32(-abs(x))
    d = _ONE + e
    return _select(x >= _ZERO, _ONE, e) / d


@numba.njit(cache=True, inline="always", fastmath=_FAST, error_model="numpy")
def _tanh_f32(x):  # pragma: no cover - jit
    ax = abs(x)
    x2 = x * x
    small = x + x * x2 * (_T0 + x2 * (_T1 + x2 * (_T2 + x2 * (_T3 + x2 * _T4))))
    # 1 - 2/(e^{2|x|} + 1): no cancellation worth an ulp once |x| >= 0.625; e = inf gives 1
    large = _ONE - _TWO / (_exp_f32(_TWO * ax) + _ONE)
    large = _select(x >= _ZERO, large, -large)
    y = _select(ax < _TANH_SMALL, small, large)
    return _select(x == x, y, x)


@numba.njit(cache=True, inline="always")
def _sigmoid_libm(x):  # pragma: no cover - jit
    # exp of a non-positive number only, so no overflow for large |x|; 1/(1+e) or e/(1+e)
    # chosen by a select, not a branch (inlined branches trip Numba's SSA checks)
    e = math.exp(-abs(x))
    return _select(x >= 0, 1.0, e) / (1.0 + e)


@numba.njit(cache=True, inline="always")
def _tanh_libm(x):  # pragma: no cover - jit
    return math.tanh(x)


def _sigmoid(x):  # pragma: no cover - dispatched by the overload below
    raise NotImplementedError


def _tanh(x):  # pragma: no cover - dispatched by the overload below
    raise NotImplementedError


# the dtype picks the implementation when a kernel is compiled: float32 the vectorisable one
@overload(_sigmoid, inline="always", jit_options={"fastmath": _FAST, "error_model": "numpy"})
def _sigmoid_impl(x):
    return (lambda x: _sigmoid_f32(x)) if x == types.float32 else (lambda x: _sigmoid_libm(x))


@overload(_tanh, inline="always", jit_options={"fastmath": _FAST, "error_model": "numpy"})
def _tanh_impl(x):
    return (lambda x: _tanh_f32(x)) if x == types.float32 else (lambda x: _tanh_libm(x))


@_jit
def activations_f(x, out_sigmoid, out_tanh):  # pragma: no cover - jit
    """Elementwise sigmoid and tanh of a 1-D array with the kernels' own activations (tests)."""
    for i in range(x.shape[0]):
        out_sigmoid[i] = _sigmoid(x[i])
        out_tanh[i] = _tanh(x[i])


@numba.njit(cache=True, inline="always")
def _recurrent_product(hp, w_hh_t, hw):  # pragma: no cover - jit
    """hw = hp @ w_hh_t in plain loops: for the small layers these kernels serve, a BLAS call
    per step costs more than the arithmetic. Four rows of w_hh_t per pass over a row of hw, so
    the (vectorised) inner loop loads and stores hw a quarter as often (measured 1.1-1.8x)."""
    b_, g = hw.shape
    n = hp.shape[1]
    for b in range(b_):
        o = hw[b]
        for j in range(g):
            o[j] = 0.0
        k = 0
        while k + 4 <= n:
            h0, h1, h2, h3 = hp[b, k], hp[b, k + 1], hp[b, k + 2], hp[b, k + 3]
            w0, w1, w2, w3 = w_hh_t[k], w_hh_t[k + 1], w_hh_t[k + 2], w_hh_t[k + 3]
            for j in range(g):
                o[j] += h0 * w0[j] + h1 * w1[j] + h2 * w2[j] + h3 * w3[j]
            k += 4
        while k < n:
            hk = hp[b, k]
            wk = w_hh_t[k]
            for j in range(g):
                o[j] += hk * wk[j]
            k += 1


@numba.njit(cache=True, inline="always")
def _carry_back(dg, w_hh, dh_pass, dh):  # pragma: no cover - jit
    """dh = dh_pass + dg @ w_hh: the gradient reaching h_{t-1}; zero rows of dg (padding) are skipped.
    Kept one row per pass: the four-row form of ``_recurrent_product`` measured 3x slower here."""
    b_, g = dg.shape
    for b in range(b_):
        for k in range(dh.shape[1]):
            dh[b, k] = dh_pass[b, k]
        for j in range(g):
            d = dg[b, j]
            if d != 0.0:
                for k in range(dh.shape[1]):
                    dh[b, k] += d * w_hh[j, k]


def _packed_product(a, packed, c, beta):  # pragma: no cover - dispatched by the overload below
    raise NotImplementedError


@overload(_packed_product, inline="always")
def _packed_product_impl(a, packed, c, beta):
    """c = a @ B + beta * c over a weight packed once for the pass: by ``blas.pack_b`` (float32/float64), or
    rounded to bfloat16 and packed by ``bf16.pack_b`` (uint16: autocast; bf16 operands, float32 accumulation)."""
    if isinstance(packed, types.Array) and packed.dtype == types.uint16:
        return lambda a, packed, c, beta: gemm_bf16_packed(a, packed, c, beta)
    return lambda a, packed, c, beta: gemm_packed(a, packed, c, beta)


@numba.njit(cache=True, inline="always")
def _product(hp, w_hh_t, w_pack, hw, use_blas):  # pragma: no cover - jit
    """hw = hp @ W_hh^T: BLAS (called from the compiled loop, see blas.py; from W_hh packed once for the
    pass when ``w_pack`` is not empty -- in bfloat16 under autocast, see ``_packed_product`` -- else from
    W_hh itself in the ``w_hh_t`` slot, read transposed) or, for small layers, the plain loops above over
    ``w_hh_t`` = W_hh^T."""
    if use_blas and w_pack.size:
        _packed_product(hp, w_pack, hw, 0.0)
    elif use_blas:  # unpacked under BLAS the slot holds W_hh itself (G*H, H): multiplied transposed, no copy
        gemm(hp, w_hh_t, hw, False, True, 0.0)
    else:
        _recurrent_product(hp, w_hh_t, hw)


@numba.njit(cache=True, inline="always")
def _carry(dg, w_hh, w_pack, dh_pass, dh, use_blas):  # pragma: no cover - jit
    """dh = dh_pass + dg @ w_hh, by BLAS (w_hh packed when ``w_pack`` is not empty, see ``_packed_product``)
    or by the plain loops of ``_carry_back``."""
    if use_blas:
        dh[:, :] = dh_pass
        if w_pack.size:
            _packed_product(dg, w_pack, dh, 1.0)
        else:
            gemm(dg, w_hh, dh, False, False, 1.0)
    else:
        _carry_back(dg, w_hh, dh_pass, dh)


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _project_step(x, w_ih_t, wi_pack, bias, use_blas, t, b0, b1, buf):  # pragma: no cover - jit
    """The input projection of step t for rows b0:b1, made inside the time loop: buf = bias +
    x_t W_ih^T by one BLAS call (W_ih packed when ``wi_pack`` is not empty) or, for small layers,
    the plain loops of ``_recurrent_product`` -- no (T, B, G*H) projection array, and each row
    block's thread does its own part. (Not inlined: an inlined branch here trips Numba's SSA check.)"""
    xr = x[t][b0:b1]
    if use_blas:
        for i in range(buf.shape[0]):
            buf[i, :] = bias
        if wi_pack.size:
            _packed_product(xr, wi_pack, buf, 1.0)
        else:  # W_ih itself (G*H, D), as _product's W_hh
            gemm(xr, w_ih_t, buf, False, True, 1.0)
    else:
        _recurrent_product(xr, w_ih_t, buf)
        for i in range(buf.shape[0]):
            for j in range(buf.shape[1]):
                buf[i, j] += bias[j]


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _step_inputs(xw, x, w_ih_t, wi_pack, bias, fuse, w_hh_t, w_pack, hp, hw, xbuf, use_blas, t, b0,
                 b1):  # pragma: no cover - jit
    """Both products of step t for rows b0:b1: hw = h_{t-1} W_hh^T, and the input projection --
    returned: ``xw[t]``'s rows, or (``fuse``) made into ``xbuf`` by ``_project_step``."""
    _product(hp, w_hh_t, w_pack, hw, use_blas)
    if fuse:
        _project_step(x, w_ih_t, wi_pack, bias, use_blas, t, b0, b1, xbuf)
        return xbuf
    return xw[t][b0:b1]


# ------------------------------------------------------------------------------------------
# LSTM


@_jit
def lstm_step_forward(xw, hw, h_prev, c_prev, mask, gates, h_out, c_out):  # pragma: no cover - jit
    _vectors_512()
    # one short loop per gate block and per output, each over contiguous rows: LLVM
    # vectorises these (one loop over all four gates at once does not vectorise)
    b_, g4 = xw.shape
    h_ = g4 // 4
    for b in range(b_):
        xr, hr, gr = xw[b], hw[b], gates[b]
        for j in range(2 * h_):
            gr[j] = _sigmoid(xr[j] + hr[j])
        for j in range(2 * h_, 3 * h_):
            gr[j] = _tanh(xr[j] + hr[j])
        for j in range(3 * h_, g4):
            gr[j] = _sigmoid(xr[j] + hr[j])
        co, ho, cp = c_out[b], h_out[b], c_prev[b]
        if mask[b] != 0.0:
            for j in range(h_):
                co[j] = gr[h_ + j] * cp[j] + gr[j] * gr[2 * h_ + j]
            for j in range(h_):
                ho[j] = gr[3 * h_ + j] * _tanh(co[j])
        else:
            co[:] = cp
            ho[:] = h_prev[b]


@_jit
def lstm_step_backward(gates, c_prev, tanh_c, mask, dout, dh_carry, dc_carry, dgates, dh_pass, dc_prev):  # pragma: no cover
    """dgates: pre-activation gradients; dh_pass: the part of dh_{t-1} that bypasses W_hh.

    ``tanh_c`` is tanh(c_t), computed by the caller with a vectorised ufunc. One short loop
    per quantity, each touching few arrays, so that LLVM vectorises every one (dh_pass and
    dc_prev serve as scratch for dh_t and dc_t on the way)."""
    _vectors_512()
    b_, g4 = gates.shape
    h_ = g4 // 4
    for b in range(b_):
        if mask[b] == 0.0:
            dgates[b, :] = 0.0
            dh_pass[b, :] = dh_carry[b, :]
            dc_prev[b, :] = dc_carry[b, :]
            continue
        gr, dg, tc, cp = gates[b], dgates[b], tanh_c[b], c_prev[b]
        dh, dc = dh_pass[b], dc_prev[b]
        do, dhc, dcc = dout[b], dh_carry[b], dc_carry[b]
        for j in range(h_):
            dh[j] = do[j] + dhc[j]
        for j in range(h_):
            t = tc[j]
            dc[j] = dcc[j] + dh[j] * gr[3 * h_ + j] * (1.0 - t * t)
        for j in range(h_):
            i = gr[j]
            dg[j] = dc[j] * gr[2 * h_ + j] * i * (1.0 - i)
        for j in range(h_):
            f = gr[h_ + j]
            dg[h_ + j] = dc[j] * cp[j] * f * (1.0 - f)
        for j in range(h_):
            g = gr[2 * h_ + j]
            dg[2 * h_ + j] = dc[j] * gr[j] * (1.0 - g * g)
        for j in range(h_):
            o = gr[3 * h_ + j]
            dg[3 * h_ + j] = dh[j] * tc[j] * o * (1.0 - o)
        for j in range(h_):
            dc[j] *= gr[h_ + j]
            dh[j] = 0.0


@_jit
def lstm_seq_forward(xw, x, w_ih_t, wi_pack, bias, fuse, w_hh_t, w_pack, h0, c0, mask, gates, h_all, c_all, use_blas, b0,
                     b1):  # pragma: no cover - jit
    """Whole sequence for batch rows b0:b1: w_hh_t is W_hh^T (H, 4H); h_all/c_all (T+1, B, H) with
    [0] = h0/c0 (forward-only: gates (1, B, 4H), c_all (2, B, H), see the module docstring).
    Rows are independent sequences, so disjoint row ranges may run in parallel threads. The input
    projection is ``xw`` (T, B, 4H), or with ``fuse`` made per step from x (T, B, D), W_ih^T and
    the bias (see ``_project_step``)."""
    _vectors_512()
    t_ = mask.shape[0]
    g = 4 * h_all.shape[2]
    hw = np.empty((b1 - b0, g), dtype=h_all.dtype)
    xbuf = np.empty((b1 - b0 if fuse else 0, g), dtype=h_all.dtype)
    ns, nc = gates.shape[0], c_all.shape[0]
    h_all[0][b0:b1] = h0[b0:b1]
    c_all[0][b0:b1] = c0[b0:b1]
    for t in range(t_):
        hp = h_all[t][b0:b1]
        xr = _step_inputs(xw, x, w_ih_t, wi_pack, bias, fuse, w_hh_t, w_pack, hp, hw, xbuf, use_blas, t, b0, b1)
        lstm_step_forward(xr, hw, hp, c_all[t % nc][b0:b1], mask[t][b0:b1], gates[t % ns][b0:b1],
                          h_all[t + 1][b0:b1], c_all[(t + 1) % nc][b0:b1])


@_jit
def lstm_seq_backward(w_hh, w_pack, gates, c_all, tanh_c, mask, dout, dh_n, dc_n, dgates, dh0, dc0, use_blas, b0,
                      b1):  # pragma: no cover - jit
    """Reverse time over batch rows b0:b1; w_hh is (4H, H), tanh_c = tanh(c_all[1:]). Writes
    dgates (T, B, 4H), dh0, dc0 on those rows."""
    _vectors_512()
    t_ = gates.shape[0]
    dh = dh_n[b0:b1].copy()
    dc = dc_n[b0:b1].copy()
    dh_pass = dh.copy()
    dc_prev = dc.copy()
    for t in range(t_ - 1, -1, -1):
        dg = dgates[t][b0:b1]
        lstm_step_backward(gates[t][b0:b1], c_all[t][b0:b1], tanh_c[t][b0:b1], mask[t][b0:b1], dout[t][b0:b1], dh, dc,
                           dg, dh_pass, dc_prev)
        _carry(dg, w_hh, w_pack, dh_pass, dh, use_blas)
        dc[:] = dc_prev
    dh0[b0:b1] = dh
    dc0[b0:b1] = dc


# ------------------------------------------------------------------------------------------
# GRU


@_jit
def gru_step_forward(xw, hw, b_hn, h_prev, mask, store, h_out):  # pragma: no cover - jit
    """store[b] = (r, z, n, hn) with hn = W_hn h + b_hn; h' = (1 - z) n + z h = n + z (h - n)."""
    _vectors_512()
    b_, g3 = xw.shape
    h_ = g3 // 3
    for b in range(b_):
        xr, hr, sr, hp, ho = xw[b], hw[b], store[b], h_prev[b], h_out[b]
        for j in range(2 * h_):
            sr[j] = _sigmoid(xr[j] + hr[j])
        for j in range(h_):
            sr[3 * h_ + j] = hr[2 * h_ + j] + b_hn[j]
        for j in range(h_):
            sr[2 * h_ + j] = _tanh(xr[2 * h_ + j] + sr[j] * sr[3 * h_ + j])
        if mask[b] != 0.0:
            for j in range(h_):
                n = sr[2 * h_ + j]
                ho[j] = n + sr[h_ + j] * (hp[j] - n)
        else:
            ho[:] = hp


@_jit
def gru_step_backward(store, h_prev, mask, dout, dh_carry, dxw, dhw, dh_pass):  # pragma: no cover - jit
    """dxw: gradient of the input projection (r, z, n); dhw: of W_hh h + b_hh (r, z, hn).
    Short loops over few arrays each, so LLVM vectorises them (dh_pass holds dh_t meanwhile)."""
    _vectors_512()
    b_, g4 = store.shape
    h_ = g4 // 4
    for b in range(b_):
        if mask[b] == 0.0:
            dxw[b, :] = 0.0
            dhw[b, :] = 0.0
            dh_pass[b, :] = dh_carry[b, :]
            continue
        sr, hp, dx, dw, dh = store[b], h_prev[b], dxw[b], dhw[b], dh_pass[b]
        do, dhc = dout[b], dh_carry[b]
        for j in range(h_):
            dh[j] = do[j] + dhc[j]
        for j in range(h_):
            z, n = sr[h_ + j], sr[2 * h_ + j]
            dx[2 * h_ + j] = dh[j] * (1.0 - z) * (1.0 - n * n)
        for j in range(h_):
            z, n = sr[h_ + j], sr[2 * h_ + j]
            dx[h_ + j] = dh[j] * (hp[j] - n) * z * (1.0 - z)
        for j in range(h_):
            r = sr[j]
            dx[j] = dx[2 * h_ + j] * sr[3 * h_ + j] * r * (1.0 - r)
        for j in range(2 * h_):
            dw[j] = dx[j]
        for j in range(h_):
            dw[2 * h_ + j] = dx[2 * h_ + j] * sr[j]
        for j in range(h_):
            dh[j] *= sr[h_ + j]


@_jit
def gru_seq_forward(xw, x, w_ih_t, wi_pack, bias, fuse, w_hh_t, w_pack, b_hn, h0, mask, store, h_all, use_blas, b0,
                    b1):  # pragma: no cover - jit
    _vectors_512()
    t_ = mask.shape[0]
    g = 3 * h_all.shape[2]
    hw = np.empty((b1 - b0, g), dtype=h_all.dtype)
    xbuf = np.empty((b1 - b0 if fuse else 0, g), dtype=h_all.dtype)
    ns = store.shape[0]
    h_all[0][b0:b1] = h0[b0:b1]
    for t in range(t_):
        hp = h_all[t][b0:b1]
        xr = _step_inputs(xw, x, w_ih_t, wi_pack, bias, fuse, w_hh_t, w_pack, hp, hw, xbuf, use_blas, t, b0, b1)
        gru_step_forward(xr, hw, b_hn, hp, mask[t][b0:b1], store[t % ns][b0:b1], h_all[t + 1][b0:b1])


@_jit
def gru_seq_backward(w_hh, w_pack, store, h_all, mask, dout, dh_n, dxw, dhw, dh0, use_blas, b0, b1):  # pragma: no cover - jit
    _vectors_512()
    t_ = dxw.shape[0]
    dh = dh_n[b0:b1].copy()
    dh_pass = dh.copy()
    for t in range(t_ - 1, -1, -1):
        dw = dhw[t][b0:b1]
        gru_step_backward(store[t][b0:b1], h_all[t][b0:b1], mask[t][b0:b1], dout[t][b0:b1], dh, dxw[t][b0:b1], dw,
                          dh_pass)
        _carry(dw, w_hh, w_pack, dh_pass, dh, use_blas)
    dh0[b0:b1] = dh


# ------------------------------------------------------------------------------------------
# Elman RNN (tanh or relu)


@_jit
def rnn_step_forward(xw, hw, h_prev, mask, relu, h_out):  # pragma: no cover - jit
    _vectors_512()
    b_, h_ = xw.shape
    for b in range(b_):
        xr, hr, ho = xw[b], hw[b], h_out[b]
        if mask[b] == 0.0:
            ho[:] = h_prev[b]
        elif relu:
            for j in range(h_):
                a = xr[j] + hr[j]
                ho[j] = 0.0 if a <= 0.0 else a  # a NaN stays NaN, as PyTorch's relu (and the composite cell)
        else:
            for j in range(h_):
                ho[j] = _tanh(xr[j] + hr[j])


@_jit
def rnn_step_backward(h_t, mask, relu, dout, dh_carry, dpre, dh_pass):  # pragma: no cover - jit
    _vectors_512()
    b_, h_ = h_t.shape
    for b in range(b_):
        if mask[b] == 0.0:
            dpre[b, :] = 0.0
            dh_pass[b, :] = dh_carry[b, :]
            continue
        y, do, dhc, dp = h_t[b], dout[b], dh_carry[b], dpre[b]
        if relu:
            for j in range(h_):
                dp[j] = 0.0 if y[j] <= 0.0 else (do[j] + dhc[j])  # the composite's mask: passes through a NaN
        else:
            for j in range(h_):
                dp[j] = (do[j] + dhc[j]) * (1.0 - y[j] * y[j])
        dh_pass[b, :] = 0.0


@_jit
def rnn_seq_forward(xw, x, w_ih_t, wi_pack, bias, fuse, w_hh_t, w_pack, h0, mask, relu, h_all, use_blas, b0,
                    b1):  # pragma: no cover - jit
    _vectors_512()
    t_ = mask.shape[0]
    g = h_all.shape[2]
    hw = np.empty((b1 - b0, g), dtype=h_all.dtype)
    xbuf = np.empty((b1 - b0 if fuse else 0, g), dtype=h_all.dtype)
    h_all[0][b0:b1] = h0[b0:b1]
    for t in range(t_):
        hp = h_all[t][b0:b1]
        xr = _step_inputs(xw, x, w_ih_t, wi_pack, bias, fuse, w_hh_t, w_pack, hp, hw, xbuf, use_blas, t, b0, b1)
        rnn_step_forward(xr, hw, hp, mask[t][b0:b1], relu, h_all[t + 1][b0:b1])


@_jit
def rnn_seq_backward(w_hh, w_pack, h_all, mask, relu, dout, dh_n, dpre, dh0, use_blas, b0, b1):  # pragma: no cover - jit
    _vectors_512()
    t_ = dpre.shape[0]
    dh = dh_n[b0:b1].copy()
    dh_pass = dh.copy()
    for t in range(t_ - 1, -1, -1):
        dp = dpre[t][b0:b1]
        rnn_step_backward(h_all[t + 1][b0:b1], mask[t][b0:b1], relu, dout[t][b0:b1], dh, dp, dh_pass)
        _carry(dp, w_hh, w_pack, dh_pass, dh, use_blas)
    dh0[b0:b1] = dh
