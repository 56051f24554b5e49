"""Every primitive op: forward against NumPy, a float64 gradient check, and float32 against float64.

``check_op`` (``tinygrad_rnn.testing``) does all three. Inputs are bounded, kept away from kinks
(relu/abs at 0, log/sqrt/pow of non-positive numbers, small divisors) and, for max/min, free of ties.
"""
import operator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_rnn as tr
from tinygrad_rnn.testing import arrays, broadcasting_pairs, check_op, expandable_shapes, matmul_shapes, shapes

SMALL = shapes(max_dims=3, max_side=4)
NONEMPTY = shapes(min_dims=1, max_dims=3, max_side=4)
PAIRS = broadcasting_pairs(max_dims=3, max_side=4)


# ---------------------------------------------------------------------------------------
# binary ops, every one over broadcasting pairs

BINARY = {
    # name: (tensor op, numpy op, kwargs for a's values, kwargs for b's values)
    "add": (operator.add, np.add, {}, {}),
    "sub": (operator.sub, np.subtract, {}, {}),
    "mul": (operator.mul, np.multiply, {}, {}),
    "div": (operator.truediv, np.divide, {}, dict(away_from=(0.0,), min_distance=0.5)),
    "pow": (operator.pow, np.power, dict(low=0.5, high=3.0), dict(low=-2.0, high=2.0)),
}


@pytest.mark.parametrize("name", list(BINARY))
@given(data=st.data(), shapes_ab=PAIRS)
def test_binary_broadcasting(name, data, shapes_ab):
    op, np_op, ka, kb = BINARY[name]
    a = data.draw(arrays(shapes_ab[0], **ka), label="a")
    b = data.draw(arrays(shapes_ab[1], **kb), label="b")
    check_op(op, np_op, a, b)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "pow"])
@given(data=st.data(), shape=SMALL, c=st.floats(-2.5, 2.5).filter(lambda v: abs(v) > 0.3))
def test_binary_with_python_scalar_both_sides(name, data, shape, c):
    op, np_op, _, _ = BINARY[name]
    x_kw = dict(low=0.5, high=3.0) if name == "pow" else dict(away_from=(0.0,), min_distance=0.5)
    a = data.draw(arrays(shape, **x_kw))
    check_op(lambda x: op(x, c), lambda x: np_op(x, c), a)
    base = abs(c) if name == "pow" else c  # c ** x needs a positive base
    check_op(lambda x: op(base, x), lambda x: np_op(base, x), a)


@given(data=st.data(), shapes_ab=PAIRS)
def test_ndarray_operand_defers_to_tensor(data, shapes_ab):
    a = data.draw(arrays(shapes_ab[0]))
    b = data.draw(arrays(shapes_ab[1]))
    # ndarray * Tensor must call Tensor.__rmul__ (not broadcast the tensor as an object array);
    # a float64 array operand promotes a float32 tensor as NumPy would, so no float32 leg here
    check_op(lambda x: b * x - b / 3.0, lambda x: b * x - b / 3.0, a, float32_check=False)
    assert (tr.tensor(a.astype(np.float32)) * b).dtype == tr.float64


@given(data=st.data(), shape=SMALL, p=st.sampled_from([2, 3, -1, 0.5, 1.5, -0.7, 2.0]))
def test_pow_scalar_exponent(data, shape, p):
    a = data.draw(arrays(shape, low=0.3, high=3.0))
    check_op(lambda x: x ** p, lambda x: np.power(x, p), a)


# ---------------------------------------------------------------------------------------
# unary ops


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


UNARY = {
    "neg": (lambda x: -x, np.negative, {}),
    "exp": (lambda x: x.exp(), np.exp, {}),
    "log": (lambda x: x.log(), np.log, dict(low=0.2, high=4.0)),
    "tanh": (lambda x: x.tanh(), np.tanh, {}),
    "sigmoid": (lambda x: x.sigmoid(), _np_sigmoid, dict(low=-6.0, high=6.0)),
    "relu": (lambda x: x.relu(), lambda x: np.maximum(x, 0.0), dict(away_from=(0.0,))),
    "abs": (lambda x: x.abs(), np.abs, dict(away_from=(0.0,))),
    "sqrt": (lambda x: x.sqrt(), np.sqrt, dict(low=0.2, high=4.0)),
    "clone": (lambda x: x.clone(), np.copy, {}),
}


@pytest.mark.parametrize("name", list(UNARY))
@given(data=st.data(), shape=SMALL)
def test_unary(name, data, shape):
    fn, np_fn, kw = UNARY[name]
    check_op(fn, np_fn, data.draw(arrays(shape, **kw)))


def test_unary_ops_stable_at_extremes():
    x = tr.tensor(np.array([-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4]))
    s = x.sigmoid().numpy()
    assert np.all(np.isfinite(s))
    np.testing.assert_allclose(s, [0.0, 0.0, _np_sigmoid(-50.0), 0.5, 1.0, 1.0, 1.0], rtol=1e-12, atol=1e-300)
    np.testing.assert_array_equal(x.tanh().numpy(), np.tanh(x.numpy()))
    np.testing.assert_array_equal(x.relu().numpy(), np.maximum(x.numpy(), 0))


# ---------------------------------------------------------------------------------------
# matmul


@given(data=st.data(), ms=matmul_shapes(max_batch_dims=2, max_side=4))
def test_matmul_shapes_and_grads(data, ms):
    a = data.draw(arrays(ms.a))
    b = data.draw(arrays(ms.b))
    check_op(operator.matmul, np.matmul, a, b)
    check_op(lambda x, y: tr.matmul(x, y), np.matmul, a, b, grad=False)


@pytest.mark.parametrize("sa, sb", [((3, 4), (4, 2)), ((4,), (4, 2)), ((3, 4), (4,)), ((4,), (4,)),
                                     ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
                                     ((4,), (2, 4, 3)), ((2, 3, 4), (4,))])
def test_matmul_fixed_layouts(sa, sb, rng):
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    check_op(operator.matmul, np.matmul, a, b)


# ---------------------------------------------------------------------------------------
# reductions


@st.composite
def reduction_calls(draw):
    """(shape, dim as the user spells it, keepdim, spelling): dim None, an int (maybe negative) or a tuple."""
    shape = draw(SMALL)
    nd = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"])) if nd else "none"
    if kind == "none":
        dim = None
    elif kind == "int":
        dim = draw(st.integers(-nd, nd - 1))
    else:
        axes = draw(st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True))
        dim = tuple(ax - nd if draw(st.booleans()) else ax for ax in axes)
    return shape, dim, draw(st.booleans()), draw(st.sampled_from(["positional", "dim", "axis"]))


def _call_reduce(x, name, dim, keep, spelling):
    method = getattr(x, name)
    if spelling == "positional":
        return method(dim, keep)
    if spelling == "dim":
        return method(dim=dim, keepdim=keep)
    return method(axis=dim, keepdims=keep)


@pytest.mark.parametrize("name", ["sum", "mean"])
@given(data=st.data(), call=reduction_calls())
def test_sum_mean(name, data, call):
    shape, dim, keep, spelling = call
    a = data.draw(arrays(shape))
    check_op(lambda x: _call_reduce(x, name, dim, keep, spelling),
             lambda x: getattr(np, name)(x, axis=dim, keepdims=keep), a)


@pytest.mark.parametrize("name", ["max", "min"])
@given(data=st.data(), call=reduction_calls())
def test_max_min(name, data, call):
    shape, dim, keep, spelling = call
    a = data.draw(arrays(shape, distinct=True))  # no ties: the gradient is unique

    def values(x):
        out = _call_reduce(x, name, dim, keep, spelling)
        return out.values if isinstance(out, tuple) else out

    check_op(values, lambda x: getattr(np, name)(x, axis=dim, keepdims=keep), a)
    if isinstance(dim, int):  # a single dim also returns the argmax/argmin, as in PyTorch
        res = _call_reduce(tr.tensor(a), name, dim, keep, spelling)
        idx = (np.argmax if name == "max" else np.argmin)(a, axis=dim, keepdims=keep)
        assert res.indices.dtype == tr.int64
        np.testing.assert_array_equal(res.indices.numpy(), idx)


def test_max_ties_share_gradient_equally():
    # max(dim) sends a tie's gradient to the index it returns (PyTorch); max()/amax share it evenly
    x = tr.tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]), requires_grad=True)
    x.max(dim=1).values.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 1, 0], [1, 0, 0]])
    x.grad = None
    x.amax(dim=1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    y = tr.tensor(np.array([5.0, 1.0, 5.0]), requires_grad=True)
    y.max().backward()
    np.testing.assert_allclose(y.grad.numpy(), [0.5, 0.0, 0.5])


@given(data=st.data(), shape=NONEMPTY)
def test_amax_argmax(data, shape):
    a = data.draw(arrays(shape, distinct=True))
    d = data.draw(st.integers(-len(shape), len(shape) - 1))
    check_op(lambda x: x.amax(d), lambda x: np.max(x, axis=d), a)
    np.testing.assert_array_equal(tr.tensor(a).argmax(d).numpy(), np.argmax(a, axis=d))
    assert tr.tensor(a).argmax().item() == int(np.argmax(a))


# ---------------------------------------------------------------------------------------
# shape ops


@given(data=st.data(), shape=SMALL)
def test_reshape_and_view(data, shape):
    a = data.draw(arrays(shape))
    target = tuple(data.draw(st.permutations(shape))) if shape else ()
    if target and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(target) - 1))
        target = target[:i] + (-1,) + target[i + 1:]
    expected = a.reshape(target).shape
    check_op(lambda x: x.reshape(target), lambda x: x.reshape(target), a)
    check_op(lambda x: x.reshape(*target), lambda x: x.reshape(target), a, grad=False)
    check_op(lambda x: x.view(target), lambda x: x.reshape(target), a, grad=False)
    assert tr.tensor(a).reshape(target).shape == expected
    check_op(lambda x: x.reshape(-1), lambda x: x.reshape(-1), a)


@given(data=st.data(), shape=shapes(min_dims=2, max_dims=4, max_side=3))
def test_transpose_permute_T(data, shape):
    a = data.draw(arrays(shape))
    nd = len(shape)
    d0, d1 = data.draw(st.integers(-nd, nd - 1)), data.draw(st.integers(-nd, nd - 1))
    check_op(lambda x: x.transpose(d0, d1), lambda x: np.swapaxes(x, d0, d1), a)
    perm = tuple(data.draw(st.permutations(range(nd))))
    check_op(lambda x: x.permute(*perm), lambda x: np.transpose(x, perm), a)
    check_op(lambda x: x.permute(perm), lambda x: np.transpose(x, perm), a, grad=False)
    check_op(lambda x: x.T, lambda x: x.T, a)
    check_op(lambda x: x.transpose(), lambda x: np.swapaxes(x, -2, -1), a, grad=False)


@given(data=st.data(), shape=SMALL)
def test_unsqueeze(data, shape):
    a = data.draw(arrays(shape))
    d = data.draw(st.integers(-len(shape) - 1, len(shape)))
    check_op(lambda x: x.unsqueeze(d), lambda x: np.expand_dims(x, d), a)


@given(data=st.data(), shape=shapes(max_dims=4, max_side=2))
def test_squeeze(data, shape):
    a = data.draw(arrays(shape))
    check_op(lambda x: x.squeeze(), np.squeeze, a)
    if shape:
        d = data.draw(st.integers(-len(shape), len(shape) - 1))
        # PyTorch: squeezing a dim that is not 1 is a no-op
        check_op(lambda x: x.squeeze(d), lambda x: np.squeeze(x, d) if x.shape[d] == 1 else x, a)


@given(data=st.data(), shape=SMALL)
def test_flatten(data, shape):
    a = data.draw(arrays(shape))
    if not shape:
        check_op(lambda x: x.flatten(), lambda x: x.reshape(1), a)
        return
    nd = len(shape)
    s = data.draw(st.integers(0, nd - 1))
    e = data.draw(st.integers(s, nd - 1))
    check_op(lambda x: x.flatten(s, e), lambda x: x.reshape(shape[:s] + (-1,) + shape[e + 1:]), a)
    check_op(lambda x: x.flatten(), lambda x: x.reshape(-1), a, grad=False)


@given(data=st.data(), target=SMALL)
def test_expand(data, target):
    src = data.draw(expandable_shapes(target))
    a = data.draw(arrays(src))
    check_op(lambda x: x.expand(*target), lambda x: np.broadcast_to(x, target), a)
    if target:  # -1 keeps a dimension of the source
        off = len(target) - len(src)
        spelled = tuple(-1 if i >= off and src[i - off] == s and data.draw(st.booleans()) else s
                        for i, s in enumerate(target))
        check_op(lambda x: x.expand(spelled), lambda x: np.broadcast_to(x, target), a, grad=False)


# ---------------------------------------------------------------------------------------
# indexing


@given(data=st.data(), shape=SMALL)
def test_getitem_basic(data, shape):
    """ints (negative too), slices with any step (negative too), None and Ellipsis."""
    a = data.draw(arrays(shape))
    index = data.draw(hnp.basic_indices(shape, min_dims=0, allow_newaxis=True, allow_ellipsis=True), label="index")
    check_op(lambda x: x[index], lambda x: x[index], a)


@st.composite
def row_indices(draw, n, max_len=6):
    """An integer index array over a dim of size n: repeats and negative values included."""
    return np.array(draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=max_len)), dtype=np.int64)


@pytest.mark.parametrize("kind", ["list", "ndarray", "tensor", "tensor_int32", "2d"])
@given(data=st.data(), shape=shapes(min_dims=1, max_dims=3, max_side=4))
def test_getitem_integer_arrays(kind, data, shape):
    a = data.draw(arrays(shape))
    idx = data.draw(row_indices(shape[0]))
    np_idx = idx
    if kind == "list":
        index = idx.tolist()
    elif kind == "ndarray":
        index = idx
    elif kind == "tensor":
        index = tr.tensor(idx)
    elif kind == "tensor_int32":
        index = tr.tensor(idx.astype(np.int32))
    else:
        np_idx = np.stack([idx, idx[::-1]])
        index = np_idx
    check_op(lambda x: x[index], lambda x: x[np_idx], a)


def test_getitem_repeated_rows_accumulate():
    w = tr.tensor(np.arange(12.0).reshape(4, 3), requires_grad=True)
    w[[1, 1, 3, -3, 0]].sum().backward()
    np.testing.assert_array_equal(w.grad.numpy()[:, 0], [1, 3, 0, 1])


@given(data=st.data(), shape=shapes(min_dims=2, max_dims=3, max_side=4))
def test_getitem_mixed_advanced(data, shape):
    a = data.draw(arrays(shape))
    i0 = data.draw(row_indices(shape[0]))
    i1 = data.draw(st.lists(st.integers(-shape[1], shape[1] - 1), min_size=len(i0), max_size=len(i0)))
    i1 = np.array(i1, dtype=np.int64)
    check_op(lambda x: x[:, i1], lambda x: x[:, i1], a)
    check_op(lambda x: x[i0, i1], lambda x: x[i0, i1], a)
    check_op(lambda x: x[tr.tensor(i0), 1:], lambda x: x[i0, 1:], a)
    last = [-1, 0, -1]
    check_op(lambda x: x[..., last], lambda x: x[..., last], a)
    check_op(lambda x: x[None, i0], lambda x: x[None, i0], a)


@given(data=st.data(), shape=shapes(min_dims=1, max_dims=3, max_side=4))
def test_getitem_bool_masks(data, shape):
    a = data.draw(arrays(shape))
    full = data.draw(hnp.arrays(np.bool_, shape))
    rows = data.draw(hnp.arrays(np.bool_, shape[:1]))
    check_op(lambda x: x[full], lambda x: x[full], a)
    check_op(lambda x: x[tr.tensor(full)], lambda x: x[full], a)
    check_op(lambda x: x[rows], lambda x: x[rows], a)


# ---------------------------------------------------------------------------------------
# softmax family


def _np_log_softmax(x, axis):
    s = x - x.max(axis=axis, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data(), shape=NONEMPTY)
def test_softmax_family(name, data, shape):
    a = data.draw(arrays(shape, low=-5.0, high=5.0))
    d = data.draw(st.integers(-len(shape), len(shape) - 1))
    ref = (lambda x: np.exp(_np_log_softmax(x, d))) if name == "softmax" else (lambda x: _np_log_softmax(x, d))
    check_op(lambda x: getattr(x, name)(d), ref, a)
    check_op(lambda x: getattr(tr.nn.functional, name)(x, dim=d), ref, a, grad=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_family_stable_for_huge_logits(dtype):
    z = np.array([[1e4, 0.0, -1e4], [1e4, 1e4 - 1.0, 1e4 - 2.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    x = tr.tensor(z, requires_grad=True)
    ls = x.log_softmax(dim=1)
    sm = x.softmax(dim=1)
    assert np.all(np.isfinite(ls.numpy())) and np.all(np.isfinite(sm.numpy()))
    ref = _np_log_softmax(z.astype(np.float64), 1)
    np.testing.assert_allclose(ls.numpy(), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sm.numpy(), np.exp(ref), rtol=1e-6, atol=1e-7)
    (ls.sum() + sm.sum()).backward()
    assert np.all(np.isfinite(x.grad.numpy()))


# ---------------------------------------------------------------------------------------
# cat / stack / split / chunk / where


@given(data=st.data(), shape=NONEMPTY, k=st.integers(1, 4))
def test_cat(data, shape, k):
    nd = len(shape)
    d = data.draw(st.integers(-nd, nd - 1))
    parts = []
    for _ in range(k):
        s = list(shape)
        s[d] = data.draw(st.integers(0, 3))
        parts.append(data.draw(arrays(tuple(s))))
    check_op(lambda *xs: tr.cat(xs, dim=d), lambda *xs: np.concatenate(xs, axis=d), *parts)


@given(data=st.data(), shape=SMALL, k=st.integers(1, 4))
def test_stack(data, shape, k):
    d = data.draw(st.integers(-len(shape) - 1, len(shape)))
    parts = [data.draw(arrays(shape)) for _ in range(k)]
    check_op(lambda *xs: tr.stack(list(xs), dim=d), lambda *xs: np.stack(xs, axis=d), *parts)


@given(data=st.data(), shape=NONEMPTY)
def test_split_and_chunk(data, shape):
    a = data.draw(arrays(shape))
    nd = len(shape)
    d = data.draw(st.integers(-nd, nd - 1))
    n = shape[d]
    size = data.draw(st.integers(1, n + 1))
    bounds = list(range(size, n, size))
    check_op(lambda x: x.split(size, dim=d), lambda x: np.split(x, bounds, axis=d), a)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=3)))
    sizes = [b - c for c, b in zip([0] + cuts, cuts + [n])]
    check_op(lambda x: tr.split(x, sizes, dim=d), lambda x: np.split(x, cuts, axis=d), a)
    chunks = data.draw(st.integers(1, n + 1))
    step = -(-n // chunks)
    check_op(lambda x: tr.chunk(x, chunks, dim=d), lambda x: np.split(x, list(range(step, n, step)), axis=d), a)


@given(data=st.data(), shape=NONEMPTY)
def test_split_with_unused_outputs(data, shape):
    a = data.draw(arrays(shape))
    if shape[0] < 2:
        return
    # only the last piece reaches the loss: the others get zero gradient, not an error
    check_op(lambda x: x.split(1, dim=0)[-1] * 2.0, lambda x: x[-1:] * 2.0, a)


@given(data=st.data(), bs=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=4))
def test_where(data, bs):
    sc, sa, sb = bs.input_shapes
    cond = data.draw(hnp.arrays(np.bool_, sc))
    a, b = data.draw(arrays(sa)), data.draw(arrays(sb))
    check_op(lambda x, y: tr.where(tr.tensor(cond), x, y), lambda x, y: np.where(cond, x, y), a, b)
    check_op(lambda x: tr.where(cond, x, 0.5), lambda x: np.where(cond, x, 0.5), a)
    check_op(lambda y: tr.where(cond, -1.0, y), lambda y: np.where(cond, -1.0, y), b)


# ---------------------------------------------------------------------------------------
# compositions: several ops in one graph, a node reached along several paths


@given(data=st.data(), shape=shapes(min_dims=1, max_dims=2, max_side=4))
def test_composite_diamonds(data, shape):
    a = data.draw(arrays(shape))

    def fn(x):
        b = x.tanh()
        c = b * 2.0 + b.exp()  # b feeds two consumers, both feeding one node
        return (c * b).sum(dim=-1, keepdim=True) + b.mean() * x

    def np_fn(x):
        b = np.tanh(x)
        c = b * 2.0 + np.exp(b)
        return (c * b).sum(axis=-1, keepdims=True) + b.mean() * x

    check_op(fn, np_fn, a)


def test_zero_dim_softmax_and_max_follow_pytorch():
    """A 0-d tensor is a one-element distribution; max over its dim returns it with index 0."""
    x = tr.tensor(3.0, requires_grad=True)
    assert x.softmax().item() == 1.0 and x.log_softmax(0).item() == 0.0
    values, indices = x.max(0)
    assert values.item() == 3.0 and indices.item() == 0
    x.log_softmax().backward()
    assert x.grad.item() == 0.0
