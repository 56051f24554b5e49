"""The engine's fast paths (issue 19 item 7) give what the general paths give: the operators' same-dtype/shape
shortcut and the Python-number shortcut against the promoting path, the Python broadcast check against NumPy's,
the select-free Sigmoid and the one-buffer Tanh backward bit for bit against their textbook formulas (and the CPU
backend's fused Numba activations against the generic NumPy bodies, at every special value), in-place
leaf sums that never alias a gradient someone else holds; and a noise-free bound on the engine's Python calls
per op (cProfile), so the per-op cost cannot creep back unnoticed."""
from __future__ import annotations

import cProfile
import pstats

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tr
from tinygrad_rnn.backend import Backend
from tinygrad_rnn.backend.cpu import CPUBackend
from tinygrad_rnn.functions import Add, Mul, Sigmoid, Tanh
from tinygrad_rnn.ops import _binary, _broadcastable

SPECIAL = [0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 20.0, -20.0, 88.0, -88.0, 89.0, -89.0, 100.0, -100.0, 750.0, -750.0,
           1e30, -1e30, np.inf, -np.inf, np.nan]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=4), st.lists(st.integers(0, 3), max_size=4))
def test_python_broadcast_check_agrees_with_numpy(sa, sb):
    try:
        np.broadcast_shapes(tuple(sa), tuple(sb))
        ok = True
    except ValueError:
        ok = False
    assert _broadcastable(tuple(sa), tuple(sb)) == ok


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_select_free_sigmoid_is_bit_identical_to_the_select(dtype):
    a = np.array(SPECIAL + list(np.random.default_rng(0).standard_normal(200) * 30), dtype=dtype).reshape(-1, 1)
    with np.errstate(all="ignore"):
        e = np.exp(-np.abs(a))
        want = np.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(dtype)
    got = Sigmoid.apply(tr.tensor(a)).numpy()
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)  # NaN where NaN, every other bit equal
    for v in SPECIAL:  # 0-d inputs take their own branch
        with np.errstate(all="ignore"):
            e = np.exp(-np.abs(dtype(v)))
            w = np.where(v >= 0, 1 / (1 + e), e / (1 + e)).astype(dtype)
        np.testing.assert_array_equal(Sigmoid.apply(tr.tensor(np.array(v, dtype=dtype))).numpy(), w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_and_sigmoid_backward_are_bit_identical_to_the_formulas(dtype):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((5, 7)) * 3).astype(dtype)
    g = rng.standard_normal((5, 7)).astype(dtype)
    x = tr.tensor(a, requires_grad=True)
    Tanh.apply(x).backward(tr.tensor(g))
    out = np.tanh(a)
    np.testing.assert_array_equal(x.grad.numpy(), g * (1 - out * out))
    x = tr.tensor(a, requires_grad=True)
    y = Sigmoid.apply(x)
    y.backward(tr.tensor(g))
    s = y.numpy()
    np.testing.assert_array_equal(x.grad.numpy(), g * s * (1 - s))


@pytest.mark.parametrize("other", [2.5, 3, -1, True, np.float64(2.0), [1.0, 2.0], "float64", "shape", "int"])
def test_operator_fast_paths_equal_the_promoting_path(other):
    x = tr.tensor([[0.5, -1.5], [2.0, 3.0]], requires_grad=True)
    if other == "float64":
        other = tr.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=tr.float64, requires_grad=True)
    elif other == "shape":
        other = tr.tensor([1.0, 2.0], requires_grad=True)
    elif other == "int":
        other = tr.tensor([[1, 2], [3, 4]])
    for fn, op, method in ((Add, "add", "__add__"), (Mul, "mul", "__mul__")):
        fast = getattr(x, method)(other)
        if isinstance(other, tr.Tensor):
            slow = _binary(fn, x, other.detach() if other.requires_grad else other, op)
        else:
            # the promoting path, as it was: _as_operand, _promote, _check_broadcast
            from tinygrad_rnn.ops import _as_operand, _check_broadcast, _promote
            a, o = _promote(x, _as_operand(x, other, op))
            _check_broadcast(a, o, op)
            slow = fn.apply(a, o)
        assert fast.dtype == slow.dtype and fast.shape == slow.shape
        np.testing.assert_array_equal(fast.numpy(), slow.numpy())
        rfast = (other + x) if fn is Add else (other * x)
        if not isinstance(other, list):
            np.testing.assert_array_equal(rfast.numpy(), slow.numpy())


def test_leaf_sums_in_place_never_touch_a_gradient_held_elsewhere():
    # w feeds Add (which hands the same array to both inputs) and Mul several times: the running sum may be
    # added to in place only once it is the engine's own array
    w = tr.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x = tr.tensor([0.5, 0.25, 2.0], requires_grad=True)
    seen = []
    h = x.register_hook(lambda g: seen.append(g.numpy().copy()))
    y = x + w
    z = y * w + w * 2.0 + w
    z.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), w.numpy())
    np.testing.assert_array_equal(seen[0], w.numpy())  # the hook saw x's gradient before any sum touched it
    np.testing.assert_allclose(w.grad.numpy(), x.numpy() + 2 * w.numpy() + 3.0)
    h.remove()
    g_before = w.grad.numpy().copy()
    (w * 1.0 + w).sum().backward()  # a second pass accumulates into .grad in place
    np.testing.assert_allclose(w.grad.numpy(), g_before + 2.0)


def _calls_per_op(shape, n_ops=50):
    x = tr.randn(*shape, requires_grad=True, seed=0)
    w = tr.rand(*shape, requires_grad=True, seed=1)
    ops = (lambda y: y * w, lambda y: y + w, lambda y: y.tanh(), lambda y: y - w, lambda y: y.sigmoid())

    def run():
        y = x
        for i in range(n_ops):
            y = ops[i % len(ops)](y)
        y.sum().backward()

    run()
    prof = cProfile.Profile()
    prof.enable()
    run()
    prof.disable()
    return pstats.Stats(prof).total_calls / n_ops


def test_python_calls_per_op_stay_bounded():
    # bench/op_overhead.py --profile: 52 calls per op (forward + backward) before the fast paths, 17 after,
    # 18.9 on main before the fused activations, 17.9 after the leaf-sum and isinstance cuts, 18.7 with the
    # activations' own np.empty_like and kernel calls (one Numba pass each instead of two to four NumPy ones:
    # 0.5 us per op less at (32, 256), the same at (4, 8)).
    # Counted, not timed: the same on a loaded machine. A new per-op Python call shows here.
    assert _calls_per_op((4, 8)) <= 19


def _special_arrays(dtype, n):
    """n values: every special one (several times, so the kernels' vector loops and their tails both meet
    them) among random ones of every magnitude."""
    rng = np.random.default_rng(n)
    a = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 3, n)).astype(dtype)
    idx = rng.permutation(n)[: min(n, 3 * len(SPECIAL))]
    a[idx] = np.resize(np.array(SPECIAL, dtype=dtype), len(idx))
    return a


def _same_bits(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()  # every bit, NaN payloads and the sign of zero included


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (3,), (4, 8), (7, 13), (32, 256)])
def test_fused_cpu_activations_give_the_generic_bits(dtype, shape):
    n = int(np.prod(shape))
    a = _special_arrays(dtype, n).reshape(shape)
    g = _special_arrays(dtype, n + 1)[:n].reshape(shape)
    cpu, generic = CPUBackend(), Backend()
    generic.xp = np
    with np.errstate(all="ignore"):
        y = generic.sigmoid(a)
        _same_bits(cpu.sigmoid(a), y)
        _same_bits(cpu.sigmoid_backward(y, g), generic.sigmoid_backward(y, g))
        t = np.tanh(a)
        _same_bits(cpu.tanh_backward(t, g), generic.tanh_backward(t, g))
        # the gradient arriving with special values of its own, against the saved outputs' specials
        _same_bits(cpu.sigmoid_backward(a, g), generic.sigmoid_backward(a, g))
        _same_bits(cpu.tanh_backward(a, g), generic.tanh_backward(a, g))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_cpu_activations_fall_back_where_the_kernels_do_not_apply(dtype):
    # transposed (non-C-contiguous) input keeps NumPy's layout; a float64 gradient for float32 outputs
    # promotes as NumPy does; 0-d arrays stay arrays
    a = _special_arrays(dtype, 6 * 5).reshape(6, 5)
    cpu = CPUBackend()
    with np.errstate(all="ignore"):
        e = np.exp(-np.abs(a.T))
        want = np.maximum(e, a.T >= 0) / (e + 1)
        got = cpu.sigmoid(a.T)
        _same_bits(np.ascontiguousarray(got), np.ascontiguousarray(want.astype(dtype)))
        assert got.flags.f_contiguous
        y = cpu.sigmoid(a)
        g64 = np.linspace(-2, 2, 30).reshape(6, 5)
        _same_bits(cpu.sigmoid_backward(y, g64), g64 * y * (1 - y))
        _same_bits(cpu.tanh_backward(y, g64), g64 * (1 - y * y))
        z = np.array(dtype(-3.0))
        assert cpu.sigmoid(z).shape == () and cpu.sigmoid(z).dtype == dtype
        assert cpu.tanh_backward(z, z).shape == ()


def test_vectorised_step_sigmoid_is_bit_identical_to_the_where_form():
    """backend/cpu.py's _sigmoid_ (the float64 per-step gate math) takes its numerator as max(e, a >= 0);
    it must equal where(a >= 0, 1, e) / (1 + e) bit for bit, specials and far tails included."""
    from tinygrad_rnn.backend.cpu import _sigmoid_

    rng = np.random.default_rng(7)
    a = np.concatenate([rng.standard_normal(4000) * 40, [np.nan, np.inf, -np.inf, 0.0, -0.0, -745.0, 745.0, -1e300]])
    a = a.reshape(8, -1)
    e = np.exp(-np.abs(a))
    want = np.where(a >= 0, 1.0, e) / (1.0 + e)
    got = _sigmoid_(a.copy())
    np.testing.assert_array_equal(got, want)
    strided = a.copy()
    _sigmoid_(strided[:, : a.shape[1] // 2])  # a strided slice, as the GRU's r/z block
    np.testing.assert_array_equal(strided[:, : a.shape[1] // 2], want[:, : a.shape[1] // 2])
