"""The cells' fused step (``FusedCell``: one node per step, two GEMMs and the backend's step kernel) against
the composite cell of primitive ops (``cell.fused = False``): the same outputs and every gradient, float64 to
rounding, over single steps and loops of steps; gradcheck in float64; version counters; no graph under
``no_grad``. (Against torch's cells, both paths: tests/test_rnn_torch.py::test_cell_matches_torch.)"""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_rnn as tr
from tinygrad_rnn.functions import FusedCell

CELLS = {"rnn_tanh": (tr.nn.RNNCell, {"nonlinearity": "tanh"}), "rnn_relu": (tr.nn.RNNCell, {"nonlinearity": "relu"}),
         "lstm": (tr.nn.LSTMCell, {}), "gru": (tr.nn.GRUCell, {})}


def make(mode, d, h, bias=True, dtype=tr.float64):
    cls, kw = CELLS[mode]
    return cls(d, h, bias=bias, dtype=dtype, seed=1, **kw)


def run_loop(cell, mode, xs, state, weights):
    """Step the cell over xs (a list of tensors); loss = sum_t <w_t, h_t> (+ <w_t, c_t> for the LSTM)."""
    loss = None
    outs = []
    for t, x in enumerate(xs):
        state = cell(x, state)
        hs = state if mode == "lstm" else (state,)
        for k, s in enumerate(hs):
            term = (s * weights[t][k]).sum()
            loss = term if loss is None else loss + term
            outs.append(s)
    return outs, loss


def both_paths(mode, bias, with_state, steps, b=3, d=4, h=5, unbatched=False, needs_x=True, dtype=tr.float64):
    rng = np.random.default_rng(7)
    lead = () if unbatched else (b,)
    xs_np = [rng.uniform(-1.5, 1.5, lead + (d,)) for _ in range(steps)]
    n_state = 2 if mode == "lstm" else 1
    s_np = [rng.uniform(-1, 1, lead + (h,)) for _ in range(n_state)] if with_state else None
    w_np = [[rng.uniform(-1, 1, lead + (h,)) for _ in range(n_state)] for _ in range(steps)]
    res = {}
    for fused in (True, False):
        cell = make(mode, d, h, bias, dtype)
        cell.fused = fused
        xs = [tr.tensor(a, dtype=dtype, requires_grad=needs_x) for a in xs_np]
        s = None
        if s_np is not None:
            s = [tr.tensor(a, dtype=dtype, requires_grad=True) for a in s_np]
        state = None if s is None else (tuple(s) if mode == "lstm" else s[0])
        weights = [[tr.tensor(a, dtype=dtype) for a in row] for row in w_np]
        outs, loss = run_loop(cell, mode, xs, state, weights)
        node = outs[0].grad_fn
        if unbatched:  # the step's output reshaped back to (H,)
            node = node.parents[0].grad_fn
        assert (type(node) is FusedCell) == fused, "the switch picks the path"
        loss.backward()
        grads = [x.grad for x in xs] + ([t.grad for t in s] if s else []) + [p.grad for p in cell.parameters()]
        res[fused] = ([o.numpy() for o in outs], [None if g is None else g.numpy() for g in grads])
    return res


def assert_same(res, tol):
    (o1, g1), (o2, g2) = res[True], res[False]
    for a, b in zip(o1, o2, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    for a, b in zip(g1, g2, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("steps", [1, 2, 5])
@pytest.mark.parametrize("with_state", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("mode", list(CELLS))
def test_fused_cell_equals_composite_float64(mode, bias, with_state, steps):
    assert_same(both_paths(mode, bias, with_state, steps), 1e-12)


@pytest.mark.parametrize("mode", list(CELLS))
def test_fused_cell_unbatched_and_inputs_without_grad(mode):
    assert_same(both_paths(mode, True, True, 3, unbatched=True), 1e-12)
    assert_same(both_paths(mode, True, True, 3, needs_x=False), 1e-12)


@pytest.mark.parametrize("mode", list(CELLS))
def test_fused_cell_equals_composite_float32_wide(mode):
    # wide enough (B*G*H >= 4096) for the float64 vectorised step elsewhere; float32 here: the kernels'
    # own activations, a few ulp from NumPy's
    res = both_paths(mode, True, True, 3, b=8, d=16, h=64, dtype=tr.float32)
    (o1, g1), (o2, g2) = res[True], res[False]
    for a, b in zip(o1 + g1, o2 + g2, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("mode", list(CELLS))
def test_fused_cell_equals_composite_float64_vectorised_step(mode):
    # B * G * H >= 4096 in float64: the CPU backend's NumPy-vectorised step replaces the Numba kernel
    assert_same(both_paths(mode, True, True, 2, b=16, d=8, h=256), 1e-12)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("mode", list(CELLS))
def test_fused_cell_gradcheck(mode, bias):
    rng = np.random.default_rng(3)
    b, d, h = 2, 3, 4
    g = {"lstm": 4, "gru": 3}.get(mode, 1)
    arrays = [rng.uniform(-1, 1, (b, d)), rng.uniform(-1, 1, (b, h))]
    if mode == "lstm":
        arrays.append(rng.uniform(-1, 1, (b, h)))
    arrays += [rng.uniform(-0.8, 0.8, (g * h, d)), rng.uniform(-0.8, 0.8, (g * h, h))]
    if bias:
        arrays += [rng.uniform(-0.5, 0.5, (g * h,)), rng.uniform(-0.5, 0.5, (g * h,))]
    if mode == "rnn_relu":  # keep the pre-activations away from relu's kink
        arrays[0] = np.abs(arrays[0]) + 0.5
        arrays[1] = np.abs(arrays[1])
        arrays[2:] = [np.abs(a) for a in arrays[2:]]
    inputs = [tr.tensor(a, dtype=tr.float64, requires_grad=True) for a in arrays]

    def fn(*ts):
        out = FusedCell.apply(*ts, mode=mode, has_bias=bias)
        return out[0] * 2 + out[1] * 3 if mode == "lstm" else out

    assert tr.gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_fused_cell_version_counter_catches_a_changed_input():
    cell = make("lstm", 3, 4)
    x = tr.randn(2, 3, dtype=tr.float64)
    h = tr.randn(2, 4, dtype=tr.float64, requires_grad=True)
    c = tr.randn(2, 4, dtype=tr.float64)
    h2, c2 = cell(x, (h, c))
    with tr.no_grad():
        c.add_(1.0)  # the step read c: its backward must refuse
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation.*FusedCell\[lstm\] input 2"):
        (h2.sum() + c2.sum()).backward()


def test_fused_cell_outputs_may_change_in_place_after_the_step():
    # the node keeps its own copies of what its backward reads, so a change to an output after the step leaves
    # its gradients right (the composite tanh RNN refuses this one: its Tanh node saves the output itself)
    for mode in ("rnn_relu", "lstm", "gru"):
        res = {}
        for fused in (True, False):
            cell = make(mode, 3, 4)
            cell.fused = fused
            x = tr.tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
            out = cell(x)
            hs = out if mode == "lstm" else (out,)
            loss = sum(s.sum() * (k + 2) for k, s in enumerate(hs))  # Sum saves nothing of s
            with tr.no_grad():
                for s in hs:
                    s.mul_(0.0)
            loss.backward()
            res[fused] = x.grad.numpy()
        np.testing.assert_allclose(res[True], res[False], rtol=1e-12, atol=1e-12)


def test_fused_cell_records_nothing_under_no_grad_and_defaults_on():
    cell = make("gru", 3, 4)
    assert cell.fused is True
    x = tr.randn(2, 3, dtype=tr.float64, seed=4)
    with tr.no_grad():
        h0 = cell(x)
    assert h0.grad_fn is None and not h0.requires_grad
    h = cell(x)
    assert type(h.grad_fn) is FusedCell and h.grad_fn.name() == "FusedCell[gru]"
    np.testing.assert_array_equal(h0.numpy(), h.numpy())  # the forward-only step computes the same


def test_fused_cell_empty_batch_takes_the_composite_path():
    cell = make("lstm", 3, 4)
    h, c = cell(tr.zeros(0, 3, dtype=tr.float64))
    assert h.shape == (0, 4) and c.shape == (0, 4)


@pytest.mark.parametrize("mode", list(CELLS))
def test_fused_cell_on_the_emulated_gpu_backend_matches_cpu(mode):
    # the CUDA backend's code paths (its step kernels and GEMMs) with NumPy standing in for CuPy
    from tinygrad_rnn.backend.cuda import CUDABackend
    from tinygrad_rnn.tensor import Tensor

    rng = np.random.default_rng(11)
    b, d, h = 3, 4, 5
    g = {"lstm": 4, "gru": 3}.get(mode, 1)
    shapes = [(b, d), (b, h)] + ([(b, h)] if mode == "lstm" else []) + [(g * h, d), (g * h, h), (g * h,), (g * h,)]
    arrays = [rng.uniform(-1, 1, s) for s in shapes]
    res = {}
    for name, be in (("cpu", tr.tensor(0.0)._be), ("emulated", CUDABackend(xp=np))):
        ts = [Tensor._make(a.copy(), be, True, None, 0) for a in arrays]
        out = FusedCell.apply(*ts, mode=mode, has_bias=True)
        outs = out if mode == "lstm" else (out,)
        loss = None
        for k, o in enumerate(outs):
            term = (o * Tensor._make(np.full(o.shape, k + 1.5), be, False, None, 0)).sum()
            loss = term if loss is None else loss + term
        loss.backward()
        res[name] = [np.asarray(o._data) for o in outs] + [np.asarray(t.grad._data) for t in ts]
    for a, c in zip(res["cpu"], res["emulated"], strict=True):
        np.testing.assert_allclose(c, a, rtol=1e-12, atol=1e-12)
