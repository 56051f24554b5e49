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
