"""The recurrent kernels' gate activations: float32 uses its own vectorisable sigmoid/tanh (a
polynomial-core exp), float64 calls libm. Checked against float64 NumPy over a dense sweep of
float32 bit patterns (every sign, exponent and a spread of mantissas, subnormals included) and
the special values; the float64 path must equal libm exactly.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import tinygrad_rnn as tr
from tinygrad_rnn.backend import rnn_kernels as R

SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45, 1.1754944e-38, -1.1754944e-38,
                     3.4028235e38, -3.4028235e38, 88.72, 88.73, -88.72, -87.4, -103.0, -103.98, -104.5, 0.625,
                     -0.625, 0.62499994, 9.0, -9.0, 20.0, -20.0, 1e-4, -1e-4], dtype=np.float32)


def _sweep() -> np.ndarray:
    # every 2**32 / 9973-th bit pattern (~430k values over the whole range, both signs)
    bits = (np.arange(0, 2 ** 32, 9973, dtype=np.uint64) + 12345).astype(np.uint32)
    x = bits.view(np.float32)
    return np.concatenate([x[np.isfinite(x)], SPECIALS])


def _reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(-np.abs(x64))
        sig = np.where(x64 >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return sig, np.tanh(x64)


def _ulps(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    # distance in units of the float32 spacing at the correctly rounded result
    spacing = np.spacing(np.abs(ref.astype(np.float32))).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref) / spacing


def _run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, t = np.empty_like(x), np.empty_like(x)
    R.activations_f(x, s, t)
    return s, t


def test_float32_activations_within_a_few_ulp_everywhere():
    x = _sweep()
    s, t = _run(x)
    sref, tref = _reference(x)
    finite = ~np.isnan(x)
    us, ut = _ulps(s[finite], sref[finite]), _ulps(t[finite], tref[finite])
    assert us.max() <= 3.0, (us.max(), x[finite][us.argmax()])
    assert ut.max() <= 2.0, (ut.max(), x[finite][ut.argmax()])
    # saturation and signs exactly where the true values round there
    assert np.all(t[x >= 10.0] == 1.0) and np.all(t[x <= -10.0] == -1.0)
    assert np.all(s[x >= 17.0] == 1.0)
    assert np.all((s >= 0) & (s <= 1) & (np.abs(t) <= 1) | np.isnan(x))


def test_float32_subnormal_sigmoid_and_specials():
    x = np.array([-100.0, -103.0, -87.5, -88.72], dtype=np.float32)
    s, _ = _run(x)
    ref, _ = _reference(x)
    assert np.all(s > 0)  # gradual underflow, not flushed to zero
    np.testing.assert_allclose(s, ref.astype(np.float32), rtol=0, atol=3 * 1.4e-45)
    s, t = _run(np.array([np.inf, -np.inf, np.nan, 0.0], dtype=np.float32))
    np.testing.assert_array_equal(s[:2], [1.0, 0.0])
    np.testing.assert_array_equal(t[:2], [1.0, -1.0])
    assert np.isnan(s[2]) and np.isnan(t[2])
    assert s[3] == 0.5 and t[3] == 0.0


def test_float32_activations_compute_in_float32():
    s, t = _run(np.linspace(-3, 3, 7, dtype=np.float32))
    assert s.dtype == np.float32 and t.dtype == np.float32


def test_float64_activations_are_libm():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(10000) * 10, [0.0, -0.0, np.inf, -np.inf, 1e-300, -745.0, 710.0]])
    s, t = np.empty_like(x), np.empty_like(x)
    R.activations_f(x, s, t)
    # bit for bit with C's libm (math.*; NumPy's own SIMD tanh may differ in the last bit)
    np.testing.assert_array_equal(t, [math.tanh(v) for v in x])
    e = np.array([math.exp(-abs(v)) for v in x])
    np.testing.assert_array_equal(s, np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)))


def test_the_ulp_check_can_fail():
    # negative control: a sigmoid off by a relative 1e-6 is ~8 float32 ulp and must be caught
    x = np.linspace(-5, 5, 101, dtype=np.float32)
    s, _ = _run(x)
    sref, _ = _reference(x)
    assert _ulps((s * (1 + 1e-6)).astype(np.float32), sref).max() > 3.0


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_float32_step_kernel_matches_float64(mode):
    """The vectorised float32 forward step against the float64 (libm) one on the same inputs."""
    rng = np.random.default_rng(1)
    b, h = 5, 37  # odd width: vector loops plus their scalar remainders
    g = {"lstm": 4, "gru": 3, "rnn_tanh": 1}[mode]
    # inputs representable in float32, so both runs see the same values
    f32 = lambda *a: rng.uniform(*a).astype(np.float32).astype(np.float64)  # noqa: E731
    xw, hw = f32(-6, 6, (b, g * h)), f32(-6, 6, (b, g * h))
    h_prev, c_prev, b_hn = f32(-1, 1, (b, h)), f32(-2, 2, (b, h)), f32(-1, 1, h)
    mask = np.array([1, 1, 0, 1, 1], dtype=np.float64)
    res = {}
    for dt in (np.float64, np.float32):
        a = [np.ascontiguousarray(v, dtype=dt) for v in (xw, hw, h_prev, c_prev, mask, b_hn)]
        h_out, c_out, store = np.empty((b, h), dt), np.empty((b, h), dt), np.empty((b, 4 * h), dt)
        if mode == "lstm":
            R.lstm_step_forward(a[0], a[1], a[2], a[3], a[4], store, h_out, c_out)
            res[dt] = (h_out, c_out, store)
        elif mode == "gru":
            R.gru_step_forward(a[0], a[1], a[5], a[2], a[4], store, h_out)
            res[dt] = (h_out, store)
        else:
            R.rnn_step_forward(a[0], a[1], a[2], a[4], False, h_out)
            res[dt] = (h_out,)
    for r64, r32 in zip(res[np.float64], res[np.float32]):
        np.testing.assert_allclose(r32, r64, rtol=2e-6, atol=5e-7)
    # the masked row carries the state through unchanged
    np.testing.assert_array_equal(res[np.float32][0][2], h_prev[2].astype(np.float32))


@pytest.mark.parametrize("mode", ["layer", "cell"])
def test_relu_rnn_propagates_nan_as_the_composite_and_pytorch(mode):
    """The fused relu step kept a NaN pre-activation as 0 (``a if a > 0 else 0``); PyTorch's relu and our
    composite cell give NaN there, and the backward passes the gradient through it as the composite's mask."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 5))
    x[1, 0, 2] = np.nan  # one NaN input: its pre-activations are NaN from step 1 on, in row 0 only
    if mode == "layer":
        fused = tr.nn.RNN(5, 6, nonlinearity="relu").double()
        comp = tr.nn.RNN(5, 6, nonlinearity="relu").double()
    else:
        fused = tr.nn.RNNCell(5, 6, nonlinearity="relu").double()
        comp = tr.nn.RNNCell(5, 6, nonlinearity="relu").double()
    comp.load_state_dict(fused.state_dict())
    comp.fused = False

    def run(m):
        xt = tr.tensor(x, requires_grad=True)
        if mode == "layer":
            out, _ = m(xt)
        else:
            h, outs = None, []
            for t in range(x.shape[0]):
                h = m(xt[t], h)
                outs.append(h)
            out = tr.stack(outs)
        out.sum().backward()
        return out.numpy(), xt.grad.numpy()

    (yf, gf), (yc, gc) = run(fused), run(comp)
    assert np.isnan(yf[1:, 0]).any() and not np.isnan(yf[:, 1:]).any()
    np.testing.assert_array_equal(np.isnan(yf), np.isnan(yc))
    np.testing.assert_allclose(np.nan_to_num(yf), np.nan_to_num(yc), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.isnan(gf), np.isnan(gc))
    np.testing.assert_allclose(np.nan_to_num(gf), np.nan_to_num(gc), rtol=1e-12, atol=1e-12)


def test_gate_kernels_ask_for_512_bit_vectors_on_avx512():
    """The step kernels call ``_vectors_512()``: with AVX-512 their loops are vectorised 512 bits wide (17-29%
    faster gate math measured, the same bits). Checked on a fresh (uncached) kernel of the same form."""
    import numba

    @numba.njit(fastmath=R._FAST, error_model="numpy")
    def wide(x, out):
        R._vectors_512()
        for i in range(x.shape[0]):
            out[i] = R._sigmoid(x[i])

    @numba.njit(fastmath=R._FAST, error_model="numpy")
    def plain(x, out):
        for i in range(x.shape[0]):
            out[i] = R._sigmoid(x[i])

    x = np.linspace(-5, 5, 1000, dtype=np.float32)
    a, b = np.empty_like(x), np.empty_like(x)
    wide(x, a)
    plain(x, b)
    np.testing.assert_array_equal(a, b)
    zmm = "%zmm" in wide.inspect_asm(wide.signatures[0])
    assert zmm == R._WIDE, (zmm, R._WIDE)
    assert "%zmm" not in plain.inspect_asm(plain.signatures[0])  # LLVM's default width is 256 bits
