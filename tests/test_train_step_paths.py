"""The training step's fast paths: one-GEMM Linear / stacked matmul, cross-entropy, clipping, optimizer kernels.

Each fast path is checked by the same means as the general one (values against NumPy in float64,
tr.gradcheck, float32 against float64), plus a check that the fast path is the one taken.
"""
import numpy as np
import pytest

import tinygrad_rnn as tr
import tinygrad_rnn.nn.functional as F
from tinygrad_rnn import nn, ops
from tinygrad_rnn.testing import check_op


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------------------------------------
# matmul of a stack of matrices with one matrix, and F.linear / nn.Linear


@pytest.mark.parametrize("sa,sb", [
    ((2, 3, 4), (4, 5)),          # the LM output projection's layout: (B, T, H) @ (H, V)
    ((2, 1, 3, 4), (4, 2)),       # 4-D stack
    ((3, 4), (2, 4, 5)),          # broadcasting the other way: general path
    ((2, 3, 4), (1, 4, 5)),       # a batch dimension of 1 broadcast: general path
    ((2, 3, 4), (2, 4, 5)),       # batched
    ((0, 3, 4), (4, 5)),          # empty stack
    ((2, 3, 0), (0, 5)),          # empty inner dimension
])
def test_matmul_stack_times_matrix(rng, sa, sb):
    check_op(lambda a, b: a @ b, np.matmul, rng.standard_normal(sa), rng.standard_normal(sb))


def test_matmul_stack_times_matrix_is_one_gemm(monkeypatch, rng):
    """The (..., M, K) @ (K, N) backward never reduces a stacked weight gradient."""
    a = tr.tensor(rng.standard_normal((3, 4, 5)), requires_grad=True)
    b = tr.tensor(rng.standard_normal((5, 6)), requires_grad=True)

    def refuse(*args, **kwargs):
        raise AssertionError("sum_to_shape called: the stacked weight gradient was materialised")

    monkeypatch.setattr(ops, "sum_to_shape", refuse)
    (a @ b).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), a.numpy().reshape(-1, 5).T @ np.ones((12, 6)), rtol=1e-12)
    np.testing.assert_allclose(a.grad.numpy(), np.ones((3, 4, 6)) @ b.numpy().T, rtol=1e-12)


@pytest.mark.parametrize("lead", [(), (1,), (4,), (2, 3), (2, 1, 3), (0,), (3, 0)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_one_gemm_matches_numpy(rng, lead, bias):
    x, w, b = rng.standard_normal(lead + (4,)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    if bias:
        check_op(F.linear, lambda x_, w_, b_: x_ @ w_.T + b_, x, w, b)
    else:
        check_op(F.linear, lambda x_, w_: x_ @ w_.T, x, w)


def test_linear_uses_the_fused_op_and_gives_contiguous_weight_grads(rng):
    lin = nn.Linear(5, 7, seed=0)
    x = tr.tensor(rng.standard_normal((3, 4, 5)).astype(np.float32), requires_grad=True)
    out = lin(x)
    assert type(out._ctx).__name__ == "Linear" and out.shape == (3, 4, 7)
    out.sum().backward()
    # in the parameter's own (out, in) layout: the optimizer needs no copy to flatten it
    assert lin.weight.grad.numpy().flags.c_contiguous and lin.weight.grad.shape == (7, 5)
    assert lin.weight.grad.dtype == np.float32 and lin.bias.grad.dtype == np.float32
    np.testing.assert_allclose(lin.bias.grad.numpy(), np.full(7, 12.0), rtol=1e-6)


def test_linear_general_cases_still_work(rng):
    x = rng.standard_normal((2, 4))
    # mixed dtypes promote to float64, as matmul does
    out = F.linear(tr.tensor(x.astype(np.float32)), tr.tensor(rng.standard_normal((3, 4))))
    assert out.dtype == np.float64
    # a broadcastable (1, out) bias and a 1-D weight, as PyTorch allows
    w, b = rng.standard_normal((3, 4)), rng.standard_normal((1, 3))
    check_op(F.linear, lambda x_, w_, b_: x_ @ w_.T + b_, x, w, b)
    check_op(F.linear, lambda x_, w_: x_ @ w_, x, rng.standard_normal(4))


def test_linear_bad_input_is_named(rng):
    with pytest.raises(ValueError, match="do not match"):
        F.linear(tr.ones(2, 3), tr.ones(4, 5))
    with pytest.raises(ValueError, match="at least 1 dimension"):
        F.linear(tr.tensor(1.0), tr.ones(4, 1))
    with pytest.raises(TypeError, match="weight must be a Tensor"):
        F.linear(tr.ones(2, 3), np.ones((4, 3)))
    with pytest.raises(TypeError, match="bias must be a Tensor"):
        F.linear(tr.ones(2, 3), tr.ones(4, 3), np.ones(4))


# ---------------------------------------------------------------------------------------------
# cross-entropy with huge tied logits (issue 9): softmax rebuilt from max and log-sum kept apart


@pytest.mark.parametrize("magnitude", [1e14, 1e16, -1e15, 3e300])
@pytest.mark.parametrize("classes", [2, 3, 7])
def test_cross_entropy_tied_huge_logits(magnitude, classes):
    """All logits equal: softmax is exactly 1/C whatever their size; the loss is log(C).

    The saved log-sum-exp m + log(C) rounds to m (or m + a few ulps) once |m| >= 1e14, and
    rebuilding softmax from it gave exp(0) = 1 per class (gradient off by C) before the fix."""
    z = np.full((4, classes), magnitude)
    z[1] *= 0.5  # a second magnitude in the same batch
    t = np.array([0, classes - 1, 1, 0])
    x = tr.tensor(z, requires_grad=True)
    loss = F.cross_entropy(x, t)
    loss.backward()
    np.testing.assert_allclose(loss.item(), np.log(classes), rtol=1e-15)
    want = (np.full_like(z, 1.0 / classes) - np.eye(classes)[t]) / len(t)
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-14, atol=1e-17)


def test_cross_entropy_huge_near_ties_match_float64_reference():
    """Logits around 1e14 that differ by O(1): loss and gradient to float64 rounding of the differences."""
    rng = np.random.default_rng(1)
    d = rng.standard_normal((5, 6))
    z = 1e14 + d  # exact differences survive: spacing at 1e14 is 1/64
    t = rng.integers(0, 6, 5)
    x = tr.tensor(z, requires_grad=True)
    F.cross_entropy(x, t, reduction="sum").backward()
    dz = z - z.max(axis=1, keepdims=True)  # exact in float64
    p = np.exp(dz) / np.exp(dz).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(x.grad.numpy(), p - np.eye(6)[t], rtol=1e-13, atol=1e-16)
    rows = F.cross_entropy(tr.tensor(z), t, reduction="none").numpy()
    want = np.log(np.exp(dz).sum(axis=1)) - dz[np.arange(5), t]
    np.testing.assert_allclose(rows, want, rtol=1e-13)


def test_cross_entropy_huge_ties_match_torch():
    import torch
    z = np.full((3, 4), 1e15)
    t = np.array([0, 1, 3])
    x = tr.tensor(z, requires_grad=True)
    F.cross_entropy(x, t).backward()
    tz = torch.tensor(z, requires_grad=True)
    torch.nn.functional.cross_entropy(tz, torch.tensor(t)).backward()
    np.testing.assert_allclose(x.grad.numpy(), tz.grad.numpy(), rtol=1e-14, atol=1e-17)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_huge_ties_on_the_cuda_description(dtype):
    """The GPU backend's kernel descriptions (run with NumPy on the host) keep max and log-sum apart too."""
    from tinygrad_rnn.backend.cuda import CUDABackend

    emu = CUDABackend(xp=np)
    z = np.full((2, 3), 1e14 if dtype == np.float64 else 1e30, dtype=dtype)
    t = np.array([0, 2])
    loss, mx, ls = emu.softmax_xent(z, t, -100)
    np.testing.assert_allclose(loss, np.log(3), rtol=1e-6)
    grad = emu.softmax_xent_backward(z, mx, ls, t, -100, np.ones(2))
    np.testing.assert_allclose(grad, np.full((2, 3), 1 / 3) - np.eye(3)[t], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True), (False, True, True)])
def test_linear_gradients_when_only_some_inputs_require_grad(rng, needs):
    x, w, b = rng.standard_normal((2, 3, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    ts = [tr.tensor(a, requires_grad=n) for a, n in zip((x, w, b), needs)]
    F.linear(*ts).sum().backward()
    g = np.ones((2, 3, 4))
    want = (g @ w, g.reshape(-1, 4).T @ x.reshape(-1, 5), g.reshape(-1, 4).sum(axis=0))
    for t, n, ref in zip(ts, needs, want):
        if n:
            np.testing.assert_allclose(t.grad.numpy(), ref, rtol=1e-12)
        else:
            assert t.grad is None
