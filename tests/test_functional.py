"""tr.nn.functional: losses, embedding, dropout, linear; against NumPy, gradcheck and (where installed) PyTorch."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_rnn as tr
import tinygrad_rnn.nn.functional as F
from tinygrad_rnn import gradcheck
from tinygrad_rnn.testing import arrays, check_op, shapes

TOL = dict(eps=1e-6, atol=1e-6, rtol=1e-5)


def _np_log_softmax(x, axis=-1):
    s = x - x.max(axis=axis, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


def _np_cross_entropy(z, t, ignore_index=-100, reduction="mean"):
    """Reference for (N, C) logits: mean over the rows that are not ignored (0 when all are)."""
    keep = t != ignore_index
    rows = np.where(keep, -_np_log_softmax(z)[np.arange(len(t)), np.where(keep, t, 0)], 0.0)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / max(int(keep.sum()), 1)


@st.composite
def classification(draw, max_n=6, max_c=6, ignore_index=-100):
    """(logits (N, C), targets (N,) with some rows = ignore_index)."""
    n, c = draw(st.integers(1, max_n)), draw(st.integers(1, max_c))
    z = draw(arrays((n, c), low=-5.0, high=5.0))
    t = np.array(draw(st.lists(st.one_of(st.integers(0, c - 1), st.just(ignore_index)), min_size=n, max_size=n)),
                 dtype=np.int64)
    return z, t


# ---------------------------------------------------------------------------------------
# cross_entropy


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [-100, 2])
@given(data=st.data())
def test_cross_entropy_values_and_grads(reduction, ignore_index, data):
    z, t = data.draw(classification(ignore_index=ignore_index))
    check_op(lambda x: F.cross_entropy(x, t, ignore_index=ignore_index, reduction=reduction),
             lambda x: _np_cross_entropy(x, t, ignore_index, reduction), z)


@given(data=st.data(), n=st.integers(1, 3), c=st.integers(2, 4), extra=shapes(min_dims=1, max_dims=2, max_side=3))
def test_cross_entropy_spatial_layout(data, n, c, extra):
    """(N, C, d1, ...) logits with (N, d1, ...) targets, as in PyTorch: the class dim is dim 1."""
    z = data.draw(arrays((n, c) + extra, low=-4.0, high=4.0))
    t = data.draw(arrays((n,) + extra, dtype=np.int64, low=0, high=c - 1))
    t.reshape(-1)[0] = -100  # one ignored position

    def np_fn(x, reduction):
        flat_z = np.moveaxis(x, 1, -1).reshape(-1, c)
        out = _np_cross_entropy(flat_z, t.reshape(-1), reduction=reduction)
        return out.reshape(t.shape) if reduction == "none" else out

    for reduction in ("mean", "none"):
        check_op(lambda x, r=reduction: F.cross_entropy(x, t, reduction=r), lambda x, r=reduction: np_fn(x, r), z)


def test_cross_entropy_single_sample_1d_input():
    z = np.array([0.5, -1.0, 2.0])
    check_op(lambda x: F.cross_entropy(x, np.array(2)), lambda x: _np_cross_entropy(x[None], np.array([2])), z)
    out = F.cross_entropy(tr.tensor(z), tr.tensor(1), reduction="none")
    assert out.shape == ()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_all_targets_ignored_is_zero_with_zero_grad(reduction):
    """An all-padding batch: loss 0 and gradient 0, never 0/0 = NaN."""
    x = tr.tensor(np.random.default_rng(0).standard_normal((4, 5)), requires_grad=True)
    loss = F.cross_entropy(x, [-100] * 4, reduction=reduction)
    np.testing.assert_array_equal(loss.numpy(), np.zeros(loss.shape))
    loss.sum().backward()
    assert np.all(np.isfinite(x.grad.numpy()))
    np.testing.assert_array_equal(x.grad.numpy(), 0.0)


def test_cross_entropy_padded_rows_get_no_gradient_and_do_not_count():
    z = np.random.default_rng(1).standard_normal((4, 3))
    x = tr.tensor(z, requires_grad=True)
    t = np.array([0, -100, 2, -100])
    loss = F.cross_entropy(x, t)
    np.testing.assert_allclose(loss.item(), _np_cross_entropy(z[[0, 2]], t[[0, 2]]), rtol=1e-13)
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy()[[1, 3]], 0.0)
    p = np.exp(_np_log_softmax(z[[0, 2]]))
    p[[0, 1], [0, 2]] -= 1
    np.testing.assert_allclose(x.grad.numpy()[[0, 2]], p / 2, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_huge_logits_finite(dtype):
    z = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4], [3e4, 3e4, 0.0]], dtype=dtype)
    x = tr.tensor(z, requires_grad=True)
    loss = F.cross_entropy(x, [2, 0, 1], reduction="none")
    assert loss.dtype == dtype
    np.testing.assert_allclose(loss.numpy(), [2e4, np.log(3), np.log(2)], rtol=1e-6)
    loss.sum().backward()
    assert x.grad.dtype == dtype and np.all(np.isfinite(x.grad.numpy()))
    np.testing.assert_allclose(x.grad.numpy()[0], [1, 0, -1], atol=1e-6)


@given(data=st.data())
def test_cross_entropy_target_spellings_agree(data):
    z, t = data.draw(classification())
    x = tr.tensor(z)
    ref = F.cross_entropy(x, t).item()
    assert F.cross_entropy(x, t.tolist()).item() == ref
    assert F.cross_entropy(x, tr.tensor(t)).item() == ref
    assert F.cross_entropy(x, tr.tensor(t.astype(np.int32))).item() == ref


@given(data=st.data())
def test_nll_loss_of_log_softmax_equals_cross_entropy(data):
    z, t = data.draw(classification())
    for reduction in ("mean", "sum", "none"):
        check_op(lambda x, r=reduction: F.nll_loss(x.log_softmax(dim=1), t, reduction=r),
                 lambda x, r=reduction: _np_cross_entropy(x, t, reduction=r), z)
        a = F.nll_loss(tr.tensor(z).log_softmax(1), t, reduction=reduction).numpy()
        b = F.cross_entropy(tr.tensor(z), t, reduction=reduction).numpy()
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_nll_loss_all_ignored_is_zero():
    x = tr.tensor(np.full((3, 4), -1.5), requires_grad=True)
    loss = F.nll_loss(x, [-100, -100, -100])
    assert loss.item() == 0.0
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), 0.0)


# ---------------------------------------------------------------------------------------
# embedding


@st.composite
def embedding_case(draw):
    v, d = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    ids = draw(arrays(draw(shapes(min_dims=0, max_dims=2, max_side=5)), dtype=np.int64, low=0, high=v - 1))
    w = draw(arrays((v, d)))
    return w, ids


@given(case=embedding_case())
def test_embedding_gathers_rows_and_scatter_adds_grads(case):
    w, ids = case
    check_op(lambda weight: F.embedding(ids, weight), lambda weight: weight[ids], w)
    check_op(lambda weight: F.embedding(tr.tensor(ids), weight), lambda weight: weight[ids], w, grad=False)


@given(case=embedding_case(), data=st.data())
def test_embedding_padding_idx_gets_no_gradient(case, data):
    w, ids = case
    v = w.shape[0]
    pad = data.draw(st.integers(-v, v - 1))
    weight = tr.tensor(w, requires_grad=True)
    out = F.embedding(ids, weight, padding_idx=pad)
    np.testing.assert_array_equal(out.numpy(), w[ids])  # the forward still reads the row
    g = np.random.default_rng(0).standard_normal(out.shape)
    out.backward(gradient=g)
    expected = np.zeros_like(w)
    np.add.at(expected, ids.reshape(-1), g.reshape(-1, w.shape[1]))
    expected[pad % v] = 0.0
    np.testing.assert_allclose(weight.grad.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_embedding_repeated_ids_accumulate_float32():
    weight = tr.ones(3, 2, requires_grad=True)
    F.embedding([[0, 2, 2], [2, 0, 2]], weight).sum().backward()
    assert weight.grad.dtype == tr.float32
    np.testing.assert_array_equal(weight.grad.numpy(), [[2, 2], [0, 0], [4, 4]])


# ---------------------------------------------------------------------------------------
# mse_loss, linear


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(data=st.data(), shape=shapes(max_dims=3, max_side=4))
def test_mse_loss(reduction, data, shape):
    a, b = data.draw(arrays(shape)), data.draw(arrays(shape))
    ref = {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction]
    check_op(lambda x, y: F.mse_loss(x, y, reduction=reduction), lambda x, y: ref((x - y) ** 2), a, b)
    check_op(lambda x: F.mse_loss(x, b, reduction=reduction), lambda x: ref((x - b) ** 2), a, grad=False)


@given(data=st.data(), lead=shapes(min_dims=0, max_dims=2, max_side=3), fin=st.integers(1, 4), fout=st.integers(1, 4),
       bias=st.booleans())
def test_linear(data, lead, fin, fout, bias):
    x = data.draw(arrays(lead + (fin,)))
    w = data.draw(arrays((fout, fin)))
    if bias:
        b = data.draw(arrays((fout,)))
        check_op(F.linear, lambda x_, w_, b_: x_ @ w_.T + b_, x, w, b)
    else:
        check_op(F.linear, lambda x_, w_: x_ @ w_.T, x, w)


def test_activation_aliases():
    z = np.array([-2.0, -0.5, 0.5, 2.0])
    x = tr.tensor(z)
    np.testing.assert_allclose(F.relu(x).numpy(), np.maximum(z, 0))
    np.testing.assert_allclose(F.tanh(x).numpy(), np.tanh(z))
    np.testing.assert_allclose(F.sigmoid(x).numpy(), 1 / (1 + np.exp(-z)), rtol=1e-14)


# ---------------------------------------------------------------------------------------
# dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_mask_statistics_and_scaling(p):
    n = 200_000
    x = tr.ones(n, dtype=tr.float64, requires_grad=True)
    y = F.dropout(x, p, training=True, seed=123)
    out = y.numpy()
    kept = out != 0
    # the dropped fraction is p within 5 standard deviations of a Binomial(n, p) / n
    assert abs((1 - kept.mean()) - p) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(out[kept], 1.0 / (1.0 - p), rtol=1e-15)
    assert abs(out.mean() - 1.0) < 5 * np.sqrt(p / (1 - p) / n)  # inverted dropout keeps the mean
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), out)  # d(x * mask)/dx = mask


def test_dropout_eval_and_p0_are_identity_and_p1_zeroes():
    x = tr.tensor(np.random.default_rng(0).standard_normal((5, 4)), requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0, training=True) is x
    y = F.dropout(x, 1.0, training=True)
    np.testing.assert_array_equal(y.numpy(), 0.0)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 0.0)
    assert np.all(np.isfinite(x.grad.numpy()))


def test_dropout_reproducible_with_seed_or_generator_and_float32_kept():
    x = tr.ones(1000)
    a = F.dropout(x, 0.5, seed=7).numpy()
    np.testing.assert_array_equal(a, F.dropout(x, 0.5, seed=7).numpy())
    assert not np.array_equal(a, F.dropout(x, 0.5, seed=8).numpy())
    g1, g2 = tr.Generator(3), tr.Generator(3)
    np.testing.assert_array_equal(F.dropout(x, 0.3, generator=g1).numpy(), F.dropout(x, 0.3, generator=g2).numpy())
    assert F.dropout(x, 0.3, seed=1).dtype == tr.float32


@given(data=st.data(), shape=shapes(min_dims=1, max_dims=3, max_side=4), p=st.floats(0.05, 0.95))
def test_dropout_gradcheck_with_fixed_mask(data, shape, p):
    a = data.draw(arrays(shape))
    x = tr.tensor(a, requires_grad=True)
    assert gradcheck(lambda t: F.dropout(t, p, seed=11), (x,), **TOL)


# ---------------------------------------------------------------------------------------
# against PyTorch


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(data=st.data())
def test_cross_entropy_matches_torch(reduction, data):
    import torch
    z, t = data.draw(classification())
    if reduction == "mean" and np.all(t == -100):
        t[0] = 0  # PyTorch gives 0/0 = nan here; ours gives 0 (tested above)
    x = tr.tensor(z, requires_grad=True)
    loss = F.cross_entropy(x, t, reduction=reduction)
    g = np.random.default_rng(0).standard_normal(loss.shape)
    loss.backward(gradient=g)
    xt = torch.tensor(z, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(xt, torch.tensor(t), reduction=reduction)
    lt.backward(torch.tensor(g))
    np.testing.assert_allclose(loss.numpy(), lt.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_spatial_matches_torch(dtype, rng):
    import torch
    z = rng.standard_normal((3, 5, 4, 2)).astype(dtype)
    t = rng.integers(0, 5, (3, 4, 2))
    t[0, 0, 0] = t[2, 1, 1] = -100
    x = tr.tensor(z, requires_grad=True)
    loss = F.cross_entropy(x, t)
    loss.backward()
    xt = torch.tensor(z, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(xt, torch.tensor(t))
    lt.backward()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss.item(), lt.item(), rtol=tol)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=tol, atol=tol * 1e-2)
    assert x.grad.dtype == dtype


@pytest.mark.torch
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data(), shape=shapes(min_dims=1, max_dims=3, max_side=4))
def test_softmax_family_matches_torch(name, data, shape):
    import torch
    a = data.draw(arrays(shape, low=-8.0, high=8.0))
    d = data.draw(st.integers(-len(shape), len(shape) - 1))
    g = data.draw(arrays(shape))
    x = tr.tensor(a, requires_grad=True)
    y = getattr(F, name)(x, dim=d)
    y.backward(gradient=g)
    xt = torch.tensor(a, requires_grad=True)
    yt = getattr(torch.nn.functional, name)(xt, dim=d)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.torch
@given(case=embedding_case(), data=st.data(), use_pad=st.booleans())
def test_embedding_matches_torch(case, data, use_pad):
    import torch
    w, ids = case
    pad = data.draw(st.integers(0, w.shape[0] - 1)) if use_pad else None
    weight = tr.tensor(w, requires_grad=True)
    out = F.embedding(ids, weight, padding_idx=pad)
    g = np.random.default_rng(0).standard_normal(out.shape)
    out.backward(gradient=g)
    wt = torch.tensor(w, requires_grad=True)
    ot = torch.nn.functional.embedding(torch.tensor(ids), wt, padding_idx=pad)
    ot.backward(torch.tensor(g))
    np.testing.assert_array_equal(out.numpy(), ot.detach().numpy())
    np.testing.assert_allclose(weight.grad.numpy(), wt.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.torch
def test_nll_and_mse_and_linear_match_torch(rng):
    import torch
    tf = torch.nn.functional
    z = rng.standard_normal((6, 4))
    t = np.array([0, 3, -100, 1, 1, 2])
    lp = _np_log_softmax(z)
    for reduction in ("mean", "sum", "none"):
        np.testing.assert_allclose(F.nll_loss(tr.tensor(lp), t, reduction=reduction).numpy(),
                                   tf.nll_loss(torch.tensor(lp), torch.tensor(t), reduction=reduction).numpy(), rtol=1e-12)
        np.testing.assert_allclose(F.mse_loss(tr.tensor(z), tr.tensor(lp), reduction=reduction).numpy(),
                                   tf.mse_loss(torch.tensor(z), torch.tensor(lp), reduction=reduction).numpy(), rtol=1e-12)
    w, b = rng.standard_normal((3, 4)), rng.standard_normal(3)
    np.testing.assert_allclose(F.linear(tr.tensor(z), tr.tensor(w), tr.tensor(b)).numpy(),
                               tf.linear(torch.tensor(z), torch.tensor(w), torch.tensor(b)).numpy(), rtol=1e-12)


# ---------------------------------------------------------------------------------------
# the CPU backend's softmax cross-entropy kernels against a float64 reference


def _xent_float64_reference(z, t, ignore_index, g):
    """(loss, lse, grad) in float64 from the given (possibly float32) logits."""
    x = z.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
    keep = t != ignore_index
    rows = np.flatnonzero(keep)
    loss = np.zeros(len(t))
    loss[rows] = lse[rows] - x[rows, t[rows]]
    grad = np.exp(x - lse[:, None]) * np.where(keep, g, 0.0)[:, None]
    grad[rows, t[rows]] -= g[rows]
    return loss, lse, grad


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(9, 11), (40, 700), (6, 5000)])
@pytest.mark.parametrize("numpy_max", [False, True])
@pytest.mark.parametrize("block", [None, 1000])  # 1000: many blocks per call, down to one row per block
def test_cpu_softmax_xent_matches_float64_reference(dtype, shape, numpy_max, block):
    from tinygrad_rnn.backend.cpu import CPUBackend

    be = CPUBackend()
    be.XENT_NUMPY_MAX_COLS = 1 if numpy_max else 1 << 30
    if block:
        be.XENT_BLOCK = block
    n, c = shape
    rng = np.random.default_rng(n * c)
    z = 3 * rng.standard_normal((n, c))
    z[0] *= 1e4  # spread over +-3e4: one class takes (nearly) all the mass
    z[1] += 1e4  # ordinary spread around +1e4: lse ~ 1e4 exceeds float32's precision
    z[2] -= 1e4
    z[3, 1] = 1e4  # one huge logit among ordinary ones
    z[4] = z[4, 0]  # all equal: uniform softmax
    z = z.astype(dtype)
    t = rng.integers(0, c, n)
    t[3] = 2  # the target is not the huge logit: loss ~ 1e4
    t[5::4] = -100  # ignored rows
    g = rng.uniform(-2, 2, n)  # any sign, as reduction="none" can pass
    ref_loss, ref_lse, ref_grad = _xent_float64_reference(z, t, -100, g)
    eps = np.finfo(np.float64).eps

    loss, mx, ls = be.softmax_xent(z, t, -100)
    assert loss.dtype == dtype and loss.shape == (n,) and mx.dtype == ls.dtype == np.float64 and ls.shape == (n,)
    lse = mx + ls
    # float64: lse is exact to float64 rounding. float32: the row max is exact and the log-sum adds up
    # float32 exps (each within 2 float32 ulps, as the backward makes them) in float64, so log_sum is
    # off by at most ~2.4e-7 absolute whatever the logits' magnitude
    ls_err = 0.0 if dtype == np.float64 else 4e-7
    np.testing.assert_allclose(lse, ref_lse, rtol=8 * eps, atol=8 * eps + ls_err)
    np.testing.assert_allclose(ls, ref_lse - mx, rtol=0, atol=16 * eps * np.abs(ref_lse).max() + ls_err)
    # loss = lse - z_t cancels up to |lse| ~ 3e4: its absolute error follows lse's
    atol = 16 * eps * np.abs(ref_lse).max() + ls_err
    rtol = 8 * eps if dtype == np.float64 else 2.0 ** -23  # float32: rounded once from float64
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=atol)
    assert np.all(loss[t == -100] == 0)

    grad = be.softmax_xent_backward(z, mx, ls, t, -100, g)
    assert grad.dtype == dtype and grad.shape == z.shape
    assert np.all(grad[t == -100] == 0)
    if dtype == np.float64:  # exp(z - lse): lse's few ulps at |lse| ~ 3e4 are ~1e-12 relative
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-15)
    else:  # float32 exp of a float32 difference: a few float32 ulps plus |z - lse| * 2**-24 relative
        np.testing.assert_allclose(grad, ref_grad, rtol=2e-6, atol=1e-7 * np.abs(g).max())
    # each kept row sums to g * (1 - 1) = 0, to the rounding of c terms and of lse
    row_sums = np.abs(grad.astype(np.float64).sum(axis=1))
    assert np.all(row_sums <= 4 * np.finfo(dtype).eps * (c + np.abs(ref_lse)) * np.abs(g)), row_sums

    # a scalar row gradient broadcasts (reduction="sum"); strided logits give the same values
    gs = be.softmax_xent_backward(z, mx, ls, t, -100, np.float64(0.5))
    np.testing.assert_allclose(gs, _xent_float64_reference(z, t, -100, np.full(n, 0.5))[2],
                               rtol=1e-11 if dtype == np.float64 else 2e-6, atol=1e-7)
    zf = np.asfortranarray(z)
    loss_f, mx_f, ls_f = be.softmax_xent(zf, t, -100)
    np.testing.assert_array_equal(loss_f, loss)
    np.testing.assert_array_equal(mx_f + ls_f, lse)
    np.testing.assert_array_equal(be.softmax_xent_backward(zf, mx, ls, t, -100, g), grad)


@pytest.mark.parametrize("shape", [(9, 11), (700, 1000), (3, 4, 33), (6, 1)])
def test_log_softmax_float32_rows_match_float64_and_the_generic_form(shape):
    """The CPU backend's fused float32 log_softmax (one pass per row, float32 exps summed in float64) and
    its backward against float64 NumPy, and its inf/nan rows as the array-library form gives them."""
    from tinygrad_rnn.backend import Backend

    rng = np.random.default_rng(sum(shape))
    x = (5 * rng.standard_normal(shape)).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    t = tr.tensor(x, requires_grad=True)
    y = t.log_softmax(-1)
    y.backward(tr.tensor(g))
    x64 = x.astype(np.float64)
    ref = x64 - x64.max(-1, keepdims=True)
    ref -= np.log(np.exp(ref).sum(-1, keepdims=True))
    gref = g - np.exp(ref) * g.sum(-1, keepdims=True)
    assert y.dtype == tr.float32 and t.grad.dtype == tr.float32
    # a few float32 ulps of the largest |output| (the shift by max and log-sum is exact to rounding)
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=4 * np.finfo(np.float32).eps * max(1.0, np.abs(ref).max()))
    np.testing.assert_allclose(t.grad.numpy(), gref, rtol=0, atol=1e-6 * max(1.0, np.abs(gref).max()) * 8)
    be = tr.get_backend("cpu")
    edge = np.array([[0, -np.inf, 1, 2], [-np.inf] * 4, [np.nan, 1, 2, 3], [np.inf, 1, 2, 3], [1e30, -1e30, 0, 5]],
                    np.float32)
    with np.errstate(all="ignore"):
        got, want = be.log_softmax(edge, -1), Backend.log_softmax(be, edge, -1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(want), rtol=1e-6)
