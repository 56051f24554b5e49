"""The reverse-mode engine: accumulation, graph order, long chains, memory, grad modes, detach, dtypes."""
import gc
import inspect
import sys
import threading
import weakref

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_rnn as tr
from tinygrad_rnn import gradcheck
from tinygrad_rnn.testing import arrays, shapes

TOL = dict(eps=1e-6, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# accumulation and graph order


@given(coefs=st.lists(st.floats(-3, 3), min_size=1, max_size=8), shape=shapes(max_dims=2, max_side=3))
def test_tensor_used_k_times_gets_the_sum(coefs, shape):
    x = tr.tensor(np.ones(shape), requires_grad=True)
    loss = tr.zeros((), dtype=tr.float64)
    for c in coefs:
        loss = loss + (x * c).sum()
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(shape, sum(coefs)), rtol=1e-12, atol=1e-12)


def test_leaf_grad_accumulates_across_backward_calls_until_zeroed():
    x = tr.tensor([1.0, 2.0, 3.0], dtype=tr.float64, requires_grad=True)
    (x * x).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 4 * x.numpy())
    x.zero_grad()
    assert x.grad is None
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0, 3.0])


def test_first_grad_is_a_writable_copy():
    # Add hands the same array to both inputs; optimizers scale .grad in place
    a = tr.tensor([1.0, 2.0], requires_grad=True)
    b = tr.tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad.data *= 10
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])
    s = tr.tensor(2.0, requires_grad=True)  # a 0-d leaf's grad is an array too, not a NumPy scalar
    (s * s).backward()
    s.grad.zero_()
    assert s.grad.item() == 0.0


def test_node_reached_along_two_paths_gets_both_contributions():
    # the graph order must put `b` after *all* of its consumers, whichever is seen first
    for order in ("b_first", "a_first"):
        x = tr.tensor(np.array([0.5, -1.0]), requires_grad=True)
        b = x.exp()
        a = b * 2.0
        r = b + a if order == "b_first" else a + b
        r.sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), 3 * np.exp(x.numpy()), rtol=1e-14)


@st.composite
def random_programs(draw):
    """A random DAG: each step combines two earlier values; every value feeds the loss."""
    n_inputs = draw(st.integers(1, 3))
    steps = []
    for k in range(draw(st.integers(1, 10))):
        n = n_inputs + k
        steps.append((draw(st.sampled_from(["add", "mul", "sub", "tanh", "sigmoid", "exp_scaled"])),
                      draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))))
    return n_inputs, steps


def _step(op, a, b):
    if op == "add":
        return a + b
    if op == "mul":
        return a * b
    if op == "sub":
        return a - b
    if op == "tanh":
        return (a + b).tanh()
    if op == "sigmoid":
        return a.sigmoid() * b
    return (a * 0.1).exp() * b


def _run_program(n_inputs, steps, xs):
    vals = list(xs)
    for op, i, j in steps:
        vals.append(_step(op, vals[i], vals[j]))
    return sum((v * (k + 1) for k, v in enumerate(vals[n_inputs:])), vals[0] * 0.0)


@given(prog=random_programs(), data=st.data())
def test_random_dags_pass_gradcheck(prog, data):
    n_inputs, steps = prog
    xs = [tr.tensor(data.draw(arrays((3,), low=-1.0, high=1.0)), requires_grad=True) for _ in range(n_inputs)]
    assert gradcheck(lambda *t: _run_program(n_inputs, steps, t), xs, **TOL)


def test_unused_and_non_grad_leaves():
    x = tr.tensor([1.0, 2.0], requires_grad=True)
    unused = tr.tensor([1.0, 2.0], requires_grad=True)
    const = tr.tensor([5.0, 6.0])
    (x * const).sum().backward()
    assert unused.grad is None and const.grad is None
    np.testing.assert_array_equal(x.grad.numpy(), [5.0, 6.0])


def test_requires_grad_propagation_and_leaves():
    x = tr.tensor([1.0], requires_grad=True)
    c = tr.tensor([2.0])
    assert not (c * 2).requires_grad and (c * 2).grad_fn is None
    y = x * c
    assert y.requires_grad and not y.is_leaf and x.is_leaf and type(y.grad_fn).__name__ == "Mul"
    with pytest.raises(ValueError, match="does not require grad"):
        (c * 2).sum().backward()
    x.sum().backward()  # backward on a leaf seeds its own grad
    np.testing.assert_array_equal(x.grad.numpy(), [1.0])


# ---------------------------------------------------------------------------------------
# long chains: BPTT against a hand-written NumPy backward


def _rnn_chain(h0, w, x, v):
    """h_t = tanh(h_{t-1} @ W + x_t), loss = sum_t <V_t, h_t>; every x_t from one Split node."""
    xs = x.split(1, dim=0) if x.shape[0] > 1 else (x,)
    h, hs = h0, []
    for xt in xs:
        h = (h @ w + xt).tanh()
        hs.append(h)
    return (tr.stack(hs) * v).sum()


def _numpy_bptt(h0, w, x, v):
    hs = [h0]
    for t in range(x.shape[0]):
        hs.append(np.tanh(hs[-1] @ w + x[t:t + 1]))
    dw, dx = np.zeros_like(w), np.zeros_like(x)
    dh = np.zeros_like(h0)
    for t in range(x.shape[0], 0, -1):
        da = (dh + v[t - 1]) * (1 - hs[t] ** 2)
        dw += hs[t - 1].T @ da
        dx[t - 1] = da[0]
        dh = da @ w.T
    return dh, dw, dx


def _chain_inputs(rng, steps, hidden):
    return (rng.standard_normal((1, hidden)), rng.standard_normal((hidden, hidden)) * 0.6 / np.sqrt(hidden),
            rng.standard_normal((steps, hidden)), rng.standard_normal((steps, 1, hidden)))


@pytest.mark.parametrize("steps", [1, 2, 3, 7])
def test_short_bptt_gradcheck(steps, rng):
    h0, w, x, v = _chain_inputs(rng, steps, 3)
    ts = [tr.tensor(a, requires_grad=True) for a in (h0, w, x)]
    assert gradcheck(lambda a, b, c: _rnn_chain(a, b, c, tr.tensor(v)), ts, **TOL)


def test_ten_thousand_step_chain_backprops_and_matches_numpy_bptt(rng):
    steps, hidden = 10_000, 4
    h0, w, x, v = _chain_inputs(rng, steps, hidden)
    th0, tw, tx = (tr.tensor(a, requires_grad=True) for a in (h0, w, x))
    limit = sys.getrecursionlimit()
    # a little above the current depth: an accidental recursive walk would need >= 30,000 frames
    sys.setrecursionlimit(len(inspect.stack(0)) + 150)
    try:
        _rnn_chain(th0, tw, tx, tr.tensor(v)).backward()
    finally:
        sys.setrecursionlimit(limit)
    dh0, dw, dx = _numpy_bptt(h0, w, x, v)
    np.testing.assert_allclose(tw.grad.numpy(), dw, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tx.grad.numpy(), dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(th0.grad.numpy(), dh0, rtol=1e-10, atol=1e-12)


def test_dropping_a_long_unbackwarded_graph_is_fine():
    w = tr.tensor(np.eye(3) * 0.5, requires_grad=True)
    h = tr.ones(1, 3, dtype=tr.float64)
    for _ in range(20_000):
        h = (h @ w).tanh()
    ref = weakref.ref(h)
    del h
    gc.collect()
    assert ref() is None


def test_truncated_bptt_with_detach():
    """Carrying detach()ed state across chunks: each chunk backprops alone, no retain_graph needed."""
    rng = np.random.default_rng(0)
    w = tr.tensor(rng.standard_normal((3, 3)) * 0.5, requires_grad=True)
    h = tr.zeros(1, 3, dtype=tr.float64)
    for _chunk in range(3):
        for _ in range(4):
            h = (h @ w + 1.0).tanh()
        h.sum().backward()
        h = h.detach()
        assert h.is_leaf and not h.requires_grad
    assert w.grad is not None and np.all(np.isfinite(w.grad.numpy()))


# ---------------------------------------------------------------------------------------
# memory and retain_graph


def test_backward_frees_saved_arrays():
    x = tr.tensor(np.random.default_rng(0).standard_normal(1000), requires_grad=True)
    mid = x.exp()
    out = (mid * mid).sum()
    ref = weakref.ref(mid.numpy())  # saved by Exp (as its output) and twice by Mul
    del mid
    gc.collect()
    assert ref() is not None, "the graph must keep what backward needs"
    out.backward()
    gc.collect()
    assert ref() is None, "backward without retain_graph must free the saved arrays"


def test_second_backward_raises_mentioning_retain_graph():
    x = tr.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_backward_through_a_partly_freed_graph_raises():
    x = tr.tensor([1.0, 2.0], requires_grad=True)
    shared = x.tanh() * 3
    shared.sum().backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        (shared * 2).sum().backward()


def test_retain_graph_allows_second_backward_with_doubled_grads():
    x = tr.tensor(np.array([0.3, -0.7]), requires_grad=True)
    y = (x.tanh() * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    y.backward(retain_graph=True)
    np.testing.assert_allclose(x.grad.numpy(), 2 * first, rtol=1e-15)
    y.backward()  # the last one may free
    np.testing.assert_allclose(x.grad.numpy(), 3 * first, rtol=1e-15)
    with pytest.raises(RuntimeError):
        y.backward()


# ---------------------------------------------------------------------------------------
# grad modes


def test_no_grad_records_nothing():
    x = tr.tensor([1.0, 2.0], requires_grad=True)
    with tr.no_grad():
        assert not tr.is_grad_enabled()
        y = (x * 2).exp().sum()
        a, b = x.split(1)
    assert tr.is_grad_enabled()
    for t in (y, a, b):
        assert not t.requires_grad and t.grad_fn is None


def test_no_grad_as_decorator_nested_and_after_exceptions():
    @tr.no_grad()
    def infer(t):
        with tr.enable_grad():
            inner = (t * 2).requires_grad
        return t * 2, inner, tr.is_grad_enabled()

    x = tr.tensor([1.0], requires_grad=True)
    out, inner, enabled = infer(x)
    assert not out.requires_grad and inner and not enabled and tr.is_grad_enabled()

    @tr.no_grad()
    def recurse(n):
        return tr.is_grad_enabled() if n == 0 else recurse(n - 1)

    assert recurse(3) is False
    assert tr.is_grad_enabled(), "a recursive no_grad function must restore grad mode"
    with pytest.raises(ZeroDivisionError):
        with tr.no_grad():
            raise ZeroDivisionError
    assert tr.is_grad_enabled()


def test_grad_mode_is_per_thread():
    seen = []
    with tr.no_grad():
        t = threading.Thread(target=lambda: seen.append(tr.is_grad_enabled()))
        t.start()
        t.join()
    assert seen == [True]


def test_detach_cuts_the_graph_and_shares_memory():
    x = tr.tensor(np.array([1.0, 2.0]), requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and d.is_leaf
    assert np.shares_memory(d.numpy(), x.numpy())
    (x * x.detach()).sum().backward()  # only one factor carries a gradient
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 2.0])
    y = x * 3
    y.detach_()
    assert y.is_leaf and not y.requires_grad


def test_retain_grad_on_non_leaf():
    x = tr.tensor(np.array([1.0, -2.0]), requires_grad=True)
    h = x * 2
    h.retain_grad()
    other = x * 5  # not retained
    (h * h + h + other).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * h.numpy() + 1)  # both uses of h summed
    assert other.grad is None
    np.testing.assert_allclose(x.grad.numpy(), 2 * (2 * h.numpy() + 1) + 5)


def test_split_with_unused_outputs():
    x = tr.tensor(np.arange(6.0), requires_grad=True)
    a, b, c = x.split(2)
    (c * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0, 0, 0, 3, 3])
    y = tr.tensor(np.arange(6.0), requires_grad=True)
    p, q = y.chunk(2)
    (q * 2 + p.sum()).sum().backward()  # outputs used out of order and by different consumers
    np.testing.assert_array_equal(y.grad.numpy(), [3, 3, 3, 2, 2, 2])


@pytest.mark.parametrize("spelling", ["tensor", "ndarray", "list"])
def test_backward_with_gradient_for_non_scalar(spelling):
    x = tr.tensor(np.array([[1.0, 2.0], [3.0, 4.0]]), requires_grad=True)
    y = x * x
    g = np.array([[1.0, 0.5], [-1.0, 2.0]])
    y.backward(gradient={"tensor": tr.tensor(g), "ndarray": g, "list": g.tolist()}[spelling])
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() * g)


# ---------------------------------------------------------------------------------------
# dtypes


def test_float32_plus_float64_promotes_and_grads_keep_leaf_dtype():
    a = tr.tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    b = tr.tensor(np.array([3.0, 4.0]), requires_grad=True)
    y = a * b + a
    assert y.dtype == tr.float64
    y.sum().backward()
    assert a.grad.dtype == tr.float32 and b.grad.dtype == tr.float64
    np.testing.assert_array_equal(a.grad.numpy(), [4.0, 5.0])
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 2.0])


def test_to_dtype_is_differentiable_and_python_scalars_keep_dtype():
    a = tr.tensor(np.array([1.5, 2.5], dtype=np.float32), requires_grad=True)
    d = a.double()
    assert d.dtype == tr.float64 and d.requires_grad
    (d * d).sum().backward()
    assert a.grad.dtype == tr.float32
    np.testing.assert_array_equal(a.grad.numpy(), [3.0, 5.0])
    assert (a * 2.0).dtype == tr.float32 and (2 ** a).dtype == tr.float32 and (a / 3).dtype == tr.float32
    assert a.to(tr.float32) is a
    n = a.long()
    assert n.dtype == tr.int64 and not n.requires_grad


def test_float32_graph_stays_float32():
    x = tr.randn(4, 3, seed=0, requires_grad=True)
    w = tr.randn(3, 5, seed=1, requires_grad=True)
    loss = tr.nn.functional.cross_entropy((x @ w).tanh() * 2.0, [0, 1, 4, 2])
    assert loss.dtype == tr.float32
    loss.backward()
    assert x.grad.dtype == tr.float32 and w.grad.dtype == tr.float32
