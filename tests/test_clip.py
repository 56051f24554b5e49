"""Gradient clipping and flat parameter vectors (tinygrad_rnn.nn.utils): by hand, by property,
and against torch.nn.utils."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tr
from tinygrad_rnn.nn.utils import clip_grad_norm_, clip_grad_value_, parameters_to_vector, vector_to_parameters


@pytest.fixture
def torch():
    import torch  # the parity extra installs it: never a skip

    return torch


def _with_grads(grads, dtype=np.float64):
    params = []
    for g in grads:
        p = tr.Tensor(np.zeros(np.shape(g), dtype=dtype), requires_grad=True)
        p.grad = tr.Tensor(np.array(g, dtype=dtype))
        params.append(p)
    return params


def test_clip_grad_norm_by_hand():
    # grads [3, 4] and [12]: total 2-norm sqrt(9 + 16 + 144) = 13
    a, b = _with_grads([[3.0, 4.0], [12.0]])
    total = clip_grad_norm_([a, b], max_norm=6.5)
    assert isinstance(total, tr.Tensor) and total.shape == () and total.dtype == np.float64
    assert total.item() == pytest.approx(13.0, rel=1e-15)
    coef = 6.5 / (13.0 + 1e-6)
    np.testing.assert_allclose(a.grad.numpy(), [3 * coef, 4 * coef], rtol=1e-15)
    np.testing.assert_allclose(b.grad.numpy(), [12 * coef], rtol=1e-15)


def test_no_scaling_below_max_norm_and_grad_none_skipped():
    a, b = _with_grads([[3.0, 4.0], [0.0]])
    b.grad = None
    before = a.grad.numpy().copy()
    total = clip_grad_norm_((p for p in [a, b]), max_norm=5.0 + 2e-6)  # coef = 5.000002/5.000001 > 1
    assert total.item() == pytest.approx(5.0)
    np.testing.assert_array_equal(a.grad.numpy(), before)
    assert b.grad is None
    clip_grad_norm_(a, max_norm=5.0)  # a single tensor is accepted; coef just below 1 scales
    assert np.all(a.grad.numpy() < before)


def test_inf_and_p_norms_by_hand():
    a, b = _with_grads([[3.0, -7.0], [2.0, 1.0]])
    assert clip_grad_norm_([a, b], 100.0, norm_type=math.inf).item() == 7.0
    assert clip_grad_norm_([a, b], 100.0, norm_type="inf").item() == 7.0
    assert clip_grad_norm_([a, b], 100.0, norm_type=1).item() == pytest.approx(13.0)
    want = (3 ** 3 + 7 ** 3 + 2 ** 3 + 1) ** (1 / 3)
    assert clip_grad_norm_([a, b], 100.0, norm_type=3).item() == pytest.approx(want, rel=1e-14)
    total = clip_grad_norm_([a, b], 1.0, norm_type=math.inf)
    assert total.item() == 7.0
    assert np.abs(np.concatenate([a.grad.numpy(), b.grad.numpy()])).max() == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="norm_type"):
        clip_grad_norm_([a], 1.0, norm_type=0)


def test_no_grads_returns_zero():
    p = tr.Tensor(np.ones(3), requires_grad=True)
    assert clip_grad_norm_([p], 1.0).item() == 0.0
    assert clip_grad_norm_([], 1.0).item() == 0.0


def test_nonfinite_norm():
    a, b = _with_grads([[1.0, np.nan], [2.0]])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_([a, b], 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(b.grad.numpy(), [2.0])  # nothing was scaled before raising
    a, b = _with_grads([[1.0, np.inf], [2.0]])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_([a, b], 1.0, error_if_nonfinite=True)
    total = clip_grad_norm_([a, b], 1.0)  # PyTorch: scaled by 1/(inf) = 0 anyway
    assert math.isinf(total.item())
    np.testing.assert_array_equal(b.grad.numpy(), [0.0])


def test_float32_grads_keep_their_dtype():
    (a,) = _with_grads([np.full(1000, 1e3)], dtype=np.float32)
    total = clip_grad_norm_([a], 1.0)
    assert total.dtype == np.float32 and a.grad.dtype == np.float32
    assert total.item() == pytest.approx(1e3 * math.sqrt(1000), rel=1e-6)
    assert float(np.linalg.norm(a.grad.numpy().astype(np.float64))) == pytest.approx(1.0, rel=1e-5)


@settings(deadline=None, max_examples=40)
@given(st.lists(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=6), min_size=1, max_size=4),
       st.floats(1e-3, 1e3), st.sampled_from([1.0, 2.0, 3.0, math.inf]))
def test_clipped_norm_is_at_most_max_norm_and_direction_kept(grads, max_norm, norm_type):
    params = _with_grads(grads)
    flat0 = np.concatenate([np.asarray(g, dtype=np.float64) for g in grads])
    total = clip_grad_norm_(params, max_norm, norm_type=norm_type).item()
    assert total == pytest.approx(np.linalg.norm(flat0, norm_type), rel=1e-12, abs=1e-300)
    flat = np.concatenate([p.grad.numpy() for p in params])
    assert np.linalg.norm(flat, norm_type) <= max_norm * (1 + 1e-12) or np.array_equal(flat, flat0)
    scale = min(1.0, max_norm / (total + 1e-6))
    np.testing.assert_allclose(flat, flat0 * scale, rtol=1e-12, atol=1e-300)


@pytest.mark.torch
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.5])
@pytest.mark.parametrize("max_norm", [0.1, 1e6])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, rng, torch):
    grads = [rng.standard_normal(s) for s in [(3, 4), (7,), (2, 2, 2)]]
    ours = _with_grads(grads)
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for t, g in zip(theirs, grads):
        t.grad = torch.tensor(g)
    total = clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert total.item() == pytest.approx(ttotal.item(), rel=1e-13)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-13)


@pytest.mark.torch
def test_clip_grad_value_matches_torch(rng, torch):
    grads = [rng.standard_normal(s) * 3 for s in [(4, 5), (6,)]]
    ours = _with_grads(grads)
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for t, g in zip(theirs, grads):
        t.grad = torch.tensor(g)
    clip_grad_value_(ours, 1.5)
    torch.nn.utils.clip_grad_value_(theirs, 1.5)
    for p, t in zip(ours, theirs):
        np.testing.assert_array_equal(p.grad.numpy(), t.grad.numpy())


def test_clip_grad_value_by_hand():
    a, b = _with_grads([[-3.0, 0.5, 2.0], [1.0]])
    b.grad = None
    clip_grad_value_([a, b], 1.0)
    np.testing.assert_array_equal(a.grad.numpy(), [-1.0, 0.5, 1.0])
    clip_grad_value_(a, 0.25)
    np.testing.assert_array_equal(a.grad.numpy(), [-0.25, 0.25, 0.25])


def test_parameters_to_vector_round_trip(rng):
    params = [tr.Tensor(rng.standard_normal(s), requires_grad=True) for s in [(2, 3), (4,), ()]]
    vec = parameters_to_vector(params)
    assert vec.shape == (11,)
    np.testing.assert_array_equal(vec.numpy(), np.concatenate([p.numpy().ravel() for p in params]))
    vec.sum().backward()  # differentiable, as in PyTorch
    assert all(np.all(p.grad.numpy() == 1.0) for p in params)
    new = tr.Tensor(np.arange(11.0))
    vector_to_parameters(new, params)
    np.testing.assert_array_equal(params[0].numpy(), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(params[2].numpy(), 10.0)
    with pytest.raises(ValueError, match="12 elements"):
        vector_to_parameters(tr.Tensor(np.zeros(5)), params + [tr.Tensor(np.zeros(1))])


# ---------------------------------------------------------------------------------------
# in-place scaling bumps the gradient's version; the CPU norm runs without a float64 copy


def test_clip_bumps_the_version_of_the_gradients_it_changes():
    a, b = _with_grads([[3.0, 4.0], [12.0]])
    before = (a.grad._version, b.grad._version)
    clip_grad_norm_([a, b], max_norm=1.0)
    assert a.grad._version > before[0] and b.grad._version > before[1]
    seen = a.grad._version
    clip_grad_norm_([a, b], max_norm=100.0)  # nothing to clip: nothing changed, no bump
    assert a.grad._version == seen
    clip_grad_value_([a, b], 0.01)
    assert a.grad._version > seen


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_grad_norm_cpu_kernel_accumulates_in_float64(monkeypatch, rng, dtype):
    """float32 gradients: the 2-norm is the float64 norm of their values, to float64 rounding."""
    grads = [rng.standard_normal(s).astype(dtype) * 1e3 for s in [(1000, 37), (5,), (3, 4, 5)]]
    params = _with_grads(grads, dtype)
    calls = []
    be = params[0].grad._be
    real = be.sum_squares
    monkeypatch.setattr(be, "sum_squares", lambda a: calls.append(a.shape) or real(a), raising=False)
    total = clip_grad_norm_(params, max_norm=1e9).item()
    want = np.linalg.norm(np.concatenate([g.astype(np.float64).ravel() for g in grads]))
    assert calls == [g.shape for g in grads]  # the kernel path was taken, once per gradient
    np.testing.assert_allclose(total, want, rtol=1e-7 if dtype == np.float32 else 1e-14)  # result rounded to dtype
    assert be.sum_squares(np.array([np.nan, 1.0], dtype=dtype)) != be.sum_squares(np.array([np.nan, 1.0], dtype=dtype))
    assert be.sum_squares(np.array([np.inf, 1.0], dtype=dtype)) == np.inf
    assert be.sum_squares(np.zeros(0, dtype=dtype)) == 0.0
    # a strided gradient gives the same sum
    x = grads[0]
    assert be.sum_squares(x.T) == pytest.approx(float((x.astype(np.float64) ** 2).sum()), rel=1e-13)
