"""The Tensor surface: factories, dtypes, conversions, random numbers; and the testing strategies themselves."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_rnn as tr
from tinygrad_rnn.testing import (
    arrays,
    broadcastable_shapes,
    broadcasting_pairs,
    expandable_shapes,
    matmul_shapes,
    shapes,
    tensors,
)

# ---------------------------------------------------------------------------------------
# factories and default dtypes


@pytest.mark.parametrize("data, dtype", [
    ([1.0, 2.0], tr.float32), ([[1, 2], [3, 4]], tr.int64), ([True, False], tr.bool_), (3.0, tr.float32), (3, tr.int64),
    (True, tr.bool_), (np.float64(1.5), tr.float64), (np.float32(1.5), tr.float32), (np.int32(2), tr.int32),
    (np.ones(2), tr.float64), (np.ones(2, np.float32), tr.float32), (np.arange(3, dtype=np.int32), tr.int32),
    (np.arange(3, dtype=np.uint8), tr.int64), ([1, 2.5], tr.float32),
])
def test_tensor_default_dtypes(data, dtype):
    t = tr.tensor(data)
    assert t.dtype == dtype
    np.testing.assert_array_equal(t.numpy(), np.asarray(data))


@pytest.mark.parametrize("spelling, dtype", [("float", tr.float32), ("double", tr.float64), ("long", tr.int64),
                                             (float, tr.float32), (int, tr.int64), (np.float64, tr.float64),
                                             ("float64", tr.float64), (tr.int32, tr.int32)])
def test_dtype_spellings(spelling, dtype):
    assert tr.tensor([1, 2], dtype=spelling).dtype == dtype
    assert tr.zeros(2, dtype=spelling).dtype == dtype


def test_tensor_from_tensor_and_ndarray_memory():
    a = np.arange(4.0)
    t = tr.tensor(a)
    assert not np.shares_memory(t.numpy(), a)  # tr.tensor copies, as torch.tensor (issue 18)
    assert np.shares_memory(tr.from_numpy(a).numpy(), a)  # from_numpy shares, as torch's
    u = tr.Tensor(t, requires_grad=True)
    assert u.requires_grad and u.shape == (4,)


@pytest.mark.parametrize("factory", ["zeros", "ones", "randn", "rand"])
def test_shape_factories(factory):
    fn = getattr(tr, factory)
    for args, shape in [((2, 3), (2, 3)), (((2, 3),), (2, 3)), (([4],), (4,)), ((), ()), ((0, 2), (0, 2))]:
        t = fn(*args)
        assert t.shape == shape and t.dtype == tr.float32 and not t.requires_grad and t.is_leaf
    t = fn(2, dtype=tr.float64, requires_grad=True)
    assert t.dtype == tr.float64 and t.requires_grad
    assert fn(3, dtype="float64").dtype == tr.float64


def test_factory_values():
    np.testing.assert_array_equal(tr.zeros(2, 2).numpy(), 0)
    np.testing.assert_array_equal(tr.ones(3).numpy(), 1)
    np.testing.assert_array_equal(tr.full((2, 2), 7.5).numpy(), 7.5)
    assert tr.full((2,), 1, dtype=tr.int64).dtype == tr.int64
    r = tr.rand(1000, seed=0).numpy()
    assert r.min() >= 0 and r.max() < 1 and 0.4 < r.mean() < 0.6
    n = tr.randn(20_000, seed=0, dtype=tr.float64).numpy()
    assert abs(n.mean()) < 0.05 and abs(n.std() - 1) < 0.05
    i = tr.randint(2, 5, (100,), seed=0)
    assert i.dtype == tr.int64 and i.numpy().min() >= 2 and i.numpy().max() < 5


def test_arange_and_eye():
    a = tr.arange(5)
    assert a.dtype == tr.int64 and a.tolist() == [0, 1, 2, 3, 4]
    assert tr.arange(2, 8, 2).tolist() == [2, 4, 6]
    f = tr.arange(0, 1, 0.25)
    assert f.dtype == tr.float32 and f.tolist() == [0.0, 0.25, 0.5, 0.75]
    assert tr.arange(3, dtype=tr.float64).dtype == tr.float64
    e = tr.eye(3)
    assert e.dtype == tr.float32
    np.testing.assert_array_equal(e.numpy(), np.eye(3))
    assert tr.eye(2, 4).shape == (2, 4)


@pytest.mark.parametrize("dtype", [tr.float32, tr.float64, tr.int64])
def test_like_factories_keep_shape_and_dtype(dtype):
    src = tr.zeros(2, 3, dtype=dtype)
    for fn in (tr.zeros_like, tr.ones_like, lambda t: tr.full_like(t, 2)):
        out = fn(src)
        assert out.shape == (2, 3) and out.dtype == dtype
    assert tr.zeros_like(src, dtype=tr.float64).dtype == tr.float64
    assert tr.full_like(src, 3).numpy().max() == 3
    if dtype != tr.int64:
        for fn in (tr.randn_like, tr.rand_like):
            out = fn(src)
            assert out.shape == (2, 3) and out.dtype == dtype
        assert tr.ones_like(src, requires_grad=True).requires_grad


# ---------------------------------------------------------------------------------------
# random numbers


def test_seed_and_generator_reproducibility():
    np.testing.assert_array_equal(tr.randn(5, seed=3).numpy(), tr.randn(5, seed=3).numpy())
    assert not np.array_equal(tr.randn(5, seed=3).numpy(), tr.randn(5, seed=4).numpy())
    g1, g2 = tr.Generator(11), tr.Generator(11)
    seq1 = [tr.randn(3, generator=g1).numpy() for _ in range(3)]
    seq2 = [tr.randn(3, generator=g2).numpy() for _ in range(3)]
    np.testing.assert_array_equal(np.stack(seq1), np.stack(seq2))
    assert not np.array_equal(seq1[0], seq1[1])  # the generator advances
    g1.manual_seed(11)
    np.testing.assert_array_equal(tr.randn(3, generator=g1).numpy(), seq1[0])
    tr.manual_seed(5)
    a = tr.rand(4).numpy()
    tr.manual_seed(5)
    np.testing.assert_array_equal(tr.rand(4).numpy(), a)
    # the values do not depend on the dtype asked for, only on the seed
    np.testing.assert_allclose(tr.randn(4, seed=1).numpy(), tr.randn(4, seed=1, dtype=tr.float64).numpy(), rtol=1e-6)


# ---------------------------------------------------------------------------------------
# properties and conversions


def test_properties_and_conversions():
    t = tr.tensor(np.arange(6.0).reshape(2, 3))
    assert t.shape == (2, 3) and t.size() == (2, 3) and t.size(1) == 3 and t.ndim == 2 and t.dim() == 2
    assert t.numel() == 6 and len(t) == 2 and t.device == "cpu"
    assert t.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    s = t.sum()
    assert s.item() == 15.0 and float(s) == 15.0 and int(s) == 15 and bool(tr.tensor([1.0]))
    assert t.float().dtype == tr.float32 and t.double().dtype == tr.float64 and t.long().dtype == tr.int64
    assert t.astype("float32").dtype == tr.float32 and t.type_as(tr.ones(1)).dtype == tr.float32
    assert t.to("cpu") is t and t.cpu() is t
    c = t.clone()
    assert not np.shares_memory(c.numpy(), t.numpy())


def test_repr():
    assert repr(tr.tensor([1.0, 2.0])).startswith("tensor([1., 2.], dtype=float32")
    assert "requires_grad=True" in repr(tr.ones(2, requires_grad=True))
    assert "grad_fn=<Mul>" in repr(tr.ones(2, requires_grad=True) * 2)


def test_comparisons_give_bool_tensors_without_graph():
    a = tr.tensor([1.0, 2.0, 3.0], requires_grad=True)
    for got, want in [(a < 2, [True, False, False]), (a <= 2, [True, True, False]), (a > 2, [False, False, True]),
                      (a >= 2, [False, True, True]), (a == 2, [False, True, False]), (a != 2, [True, False, True]),
                      (a == tr.tensor([1.0, 0.0, 3.0]), [True, False, True])]:
        assert got.dtype == tr.bool_ and not got.requires_grad
        assert got.tolist() == want
    assert hash(a) == id(a)


def test_in_place_helpers_record_nothing():
    t = tr.ones(2, 2)
    assert t.zero_().numpy().sum() == 0
    assert t.fill_(3.0).numpy().sum() == 12
    t.copy_(np.arange(4.0).reshape(2, 2))
    assert t.tolist() == [[0, 1], [2, 3]]
    t.copy_(tr.full((2, 2), 5.0))
    assert t.numpy().max() == 5 and t.dtype == tr.float32


def test_importing_the_library_does_not_import_hypothesis():
    code = ("import sys, tinygrad_rnn; "
            "assert 'hypothesis' not in sys.modules and 'tinygrad_rnn.testing' not in sys.modules, 'test extra leaked'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(Path(__file__).parents[1]))


# ---------------------------------------------------------------------------------------
# the strategies in tinygrad_rnn.testing produce what they promise


@given(shape=shapes(min_dims=1, max_dims=3, min_side=2, max_side=4))
def test_shapes_respect_bounds(shape):
    assert 1 <= len(shape) <= 3 and all(2 <= s <= 4 for s in shape)


@given(pair=broadcasting_pairs())
def test_broadcasting_pairs_broadcast(pair):
    np.broadcast_shapes(*pair)


@given(data=st.data(), shape=shapes())
def test_broadcastable_and_expandable_shapes(data, shape):
    np.broadcast_shapes(shape, data.draw(broadcastable_shapes(shape)))
    assert np.broadcast_shapes(shape, data.draw(expandable_shapes(shape))) == shape


@given(ms=matmul_shapes())
def test_matmul_shapes_are_valid(ms):
    assert np.matmul(np.zeros(ms.a), np.zeros(ms.b)).shape == ms.out


@given(a=arrays(shapes(max_dims=3), low=-2.0, high=2.0, away_from=(0.0, 1.0), min_distance=0.1))
def test_arrays_stay_in_bounds_and_away_from_kinks(a):
    assert a.dtype == np.float64 and isinstance(a, np.ndarray)
    assert np.all((a >= -2.0) & (a <= 2.0))
    assert np.all(np.abs(a) >= 0.1 - 1e-12) and np.all(np.abs(a - 1.0) >= 0.1 - 1e-12)


@given(a=arrays(shapes(min_dims=1, max_dims=3), distinct=True, away_from=(0.0,)))
def test_distinct_arrays_have_no_near_ties(a):
    v = np.sort(a.reshape(-1))
    assert np.all(np.diff(v) >= 5.9 * 0.5 / (2 * v.size))  # (6 - 0.1) / (2 n) at the least
    assert np.all(np.abs(v) >= 0.05 - 1e-12)


@given(t=tensors((2, 3), dtype=np.float32, requires_grad=True, low=0.5, high=1.0),
       i=tensors(shapes(max_dims=2), dtype=np.int64, low=0, high=4))
def test_tensors_strategy(t, i):
    assert t.dtype == tr.float32 and t.requires_grad and t.shape == (2, 3)
    assert np.all((t.numpy() >= 0.5) & (t.numpy() <= 1.0))
    assert i.dtype == tr.int64 and np.all((i.numpy() >= 0) & (i.numpy() <= 4))


def test_arrays_rejects_an_empty_value_range():
    with pytest.raises(ValueError, match="no values"):
        arrays((2,), low=-0.1, high=0.1, away_from=(0.0,), min_distance=0.5)
    with pytest.raises(ValueError, match="require grad"):
        tensors((2,), dtype=np.int64, requires_grad=True)
