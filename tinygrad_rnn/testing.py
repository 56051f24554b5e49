"""Hypothesis strategies for property-testing code built on tinygrad_rnn.

Needs the ``test`` extra (``pip install 'tinygrad_rnn[test]'``); ``import tinygrad_rnn`` never
imports this module. Values are bounded and can be kept away from kinks (``away_from=(0,)`` for
relu/abs) or made pairwise distinct (``distinct=True`` for max/min), so a gradient check fails
only on a real bug, never on a non-differentiable point.

    >>> from hypothesis import given
    >>> from tinygrad_rnn.testing import tensors
    >>> @given(tensors((2, 3), requires_grad=True))
    ... def test_double(t): assert (t + t).shape == (2, 3)
"""
from __future__ import annotations

import os
from typing import Any, NamedTuple, Sequence

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from .gradcheck import gradcheck
from .tensor import Tensor, float32, float64, zeros

__all__ = ["shapes", "broadcastable_shapes", "broadcasting_pairs", "expandable_shapes", "arrays", "tensors",
           "matmul_shapes", "MatmulShapes", "check_op", "register_profiles", "load_profile", "PROFILES"]

Shape = tuple[int, ...]


# ---------------------------------------------------------------------------------------
# shapes


def shapes(min_dims: int = 0, max_dims: int = 4, min_side: int = 1, max_side: int = 5) -> st.SearchStrategy[Shape]:
    """Array shapes, e.g. ``(3, 1, 2)``: ``shapes(max_dims=2).example()`` -> ``(4, 1)``."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(shape: Shape, min_dims: int = 0, max_dims: int | None = None, min_side: int = 1,
                         max_side: int = 5) -> st.SearchStrategy[Shape]:
    """Shapes that broadcast against ``shape`` (size-1 dims, missing or extra leading dims).

    ``broadcastable_shapes((3, 4)).example()`` -> ``(1, 4)``
    """
    max_dims = len(shape) + 1 if max_dims is None else max_dims
    return hnp.broadcastable_shapes(shape, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcasting_pairs(min_dims: int = 0, max_dims: int = 4, min_side: int = 1,
                       max_side: int = 5) -> st.SearchStrategy[tuple[Shape, Shape]]:
    """Two shapes that broadcast together: ``broadcasting_pairs().example()`` -> ``((2, 1, 3), (4, 1))``."""
    return hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                                             max_side=max_side).map(lambda b: tuple(b.input_shapes))


@st.composite
def expandable_shapes(draw: Any, target: Shape) -> Shape:
    """Shapes that ``expand``/broadcast *to exactly* ``target``: ``expandable_shapes((2, 3)).example()`` -> ``(1, 3)``."""
    drop = draw(st.integers(0, len(target)))
    return tuple(1 if draw(st.booleans()) else s for s in target[drop:])


class MatmulShapes(NamedTuple):
    a: Shape
    b: Shape
    out: Shape


@st.composite
def matmul_shapes(draw: Any, max_batch_dims: int = 2, min_side: int = 1, max_side: int = 5,
                  allow_1d: bool = True) -> MatmulShapes:
    """Operand shapes for ``a @ b``: 2-D, batched with broadcast batch dims, or 1-D on either side.

    ``matmul_shapes().example()`` -> ``MatmulShapes(a=(2, 1, 3, 4), b=(5, 4, 2), out=(2, 5, 3, 2))``
    """
    side = st.integers(min_side, max_side)
    n, k, m = draw(side), draw(side), draw(side)
    batch_a, batch_b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=max_batch_dims,
                                                              min_side=1, max_side=max_side)).input_shapes
    a_1d = allow_1d and draw(st.integers(0, 4)) == 0
    b_1d = allow_1d and draw(st.integers(0, 4)) == 0
    a = (k,) if a_1d else batch_a + (n, k)
    b = (k,) if b_1d else batch_b + (k, m)
    out = np.matmul(np.zeros(a), np.zeros(b)).shape
    return MatmulShapes(a, b, tuple(out))


# ---------------------------------------------------------------------------------------
# values


def _allowed_intervals(low: float, high: float, away_from: Sequence[float], min_distance: float) -> list[tuple[float, float]]:
    """[low, high] minus the open balls of radius ``min_distance`` around each kink."""
    if not low < high:
        raise ValueError(f"need low < high, got {low} and {high}")
    cuts = sorted((k - min_distance, k + min_distance) for k in away_from)
    out, start = [], low
    for a, b in cuts:
        if b <= start or a >= high:
            continue
        if a > start:
            out.append((start, a))
        start = max(start, b)
    if start < high:
        out.append((start, high))
    if not out:
        raise ValueError(f"no values in [{low}, {high}] are {min_distance} away from {tuple(away_from)}")
    return out


def _to_allowed(u: np.ndarray, intervals: list[tuple[float, float]]) -> np.ndarray:
    """Map u in [0, 1] monotonically onto the union of ``intervals`` (gaps in u keep their order)."""
    lengths = np.array([b - a for a, b in intervals])
    starts = np.array([a for a, _ in intervals])
    cum = np.concatenate([[0.0], np.cumsum(lengths)])
    pos = np.clip(u, 0.0, 1.0) * cum[-1]
    i = np.clip(np.searchsorted(cum, pos, side="right") - 1, 0, len(intervals) - 1)
    return np.minimum(starts[i] + (pos - cum[i]), starts[i] + lengths[i])


def arrays(shape: Shape | st.SearchStrategy[Shape], dtype: Any = np.float64, low: float = -3.0, high: float = 3.0,
           away_from: Sequence[float] = (), min_distance: float = 0.05, distinct: bool = False) -> st.SearchStrategy[np.ndarray]:
    """NumPy arrays with values in [low, high], at least ``min_distance`` from every point of ``away_from``.

    ``distinct=True`` makes all values pairwise separated (no ties for max/min) by at least
    ``(high - low - excluded) / (2 * size)``. Integer dtypes draw integers in [low, high].

    ``arrays((2, 3), away_from=(0,)).example()`` -> an array with no entry in (-0.05, 0.05)
    """
    dt = np.dtype(dtype)
    shapes_ = shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(shape))
    if dt.kind in "iu":
        elements = st.integers(int(np.ceil(low)), int(np.floor(high)))
        return shapes_.flatmap(lambda s: hnp.arrays(dt, s, elements=elements))
    if dt.kind == "b":
        return shapes_.flatmap(lambda s: hnp.arrays(dt, s))
    intervals = _allowed_intervals(float(low), float(high), away_from, float(min_distance))  # fails here, not mid-test
    return _float_arrays(shapes_, dt, intervals, distinct)


@st.composite
def _float_arrays(draw: Any, shapes_: st.SearchStrategy[Shape], dt: np.dtype, intervals: list[tuple[float, float]],
                  distinct: bool) -> np.ndarray:
    shp = draw(shapes_)
    n = int(np.prod(shp))
    if distinct:
        # a random permutation of n evenly spaced slots, each jittered inside its slot
        perm = np.array(draw(st.permutations(range(n))), dtype=np.float64)
        jitter = draw(hnp.arrays(np.float64, n, elements=st.floats(0.25, 0.75)))
        u = ((perm + jitter) / max(n, 1)).reshape(shp)
    else:
        u = draw(hnp.arrays(np.float64, shp, elements=st.floats(0.0, 1.0)))
    return np.asarray(_to_allowed(u, intervals), dtype=dt)


def tensors(shape: Shape | st.SearchStrategy[Shape], dtype: Any = np.float64, requires_grad: bool = False,
            low: float = -3.0, high: float = 3.0, away_from: Sequence[float] = (), min_distance: float = 0.05,
            distinct: bool = False) -> st.SearchStrategy[Tensor]:
    """Tensors built from :func:`arrays` (same arguments): ``tensors((3,), requires_grad=True).example()``."""
    if requires_grad and np.dtype(dtype).kind != "f":
        raise ValueError(f"tensors: only float tensors can require grad, got dtype {np.dtype(dtype)}")
    return arrays(shape, dtype=dtype, low=low, high=high, away_from=away_from, min_distance=min_distance,
                  distinct=distinct).map(lambda a: Tensor(a, requires_grad=requires_grad))


# ---------------------------------------------------------------------------------------
# one-call op check


def _outputs(out: Any) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def check_op(fn: Any, np_fn: Any, *arrays_in: np.ndarray, grad: bool = True, float32_check: bool = True,
             eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    """Assert ``fn(*tensors)`` equals ``np_fn(*arrays)`` in float64, passes a float64 gradcheck, and
    that a float32 run stays float32 (values and leaf gradients) and agrees within float32 rounding.

    ``check_op(lambda x: x.tanh(), np.tanh, np.random.randn(3, 2))``
    """
    xs = [Tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in arrays_in]
    outs, refs = _outputs(fn(*xs)), _outputs(np_fn(*arrays_in))
    assert len(outs) == len(refs), f"{len(outs)} outputs, expected {len(refs)}"
    for o, r in zip(outs, refs):
        r = np.asarray(r)
        assert o.dtype == float64, f"float64 inputs gave a {o.dtype} output"
        assert o.shape == r.shape, f"output shape {o.shape}, expected {r.shape}"
        np.testing.assert_allclose(o.numpy(), r, rtol=1e-12, atol=1e-13)
    if not grad:
        return
    assert gradcheck(fn, xs, eps=eps, atol=atol, rtol=rtol)
    if not float32_check:
        return
    x32 = [Tensor(np.asarray(a, dtype=np.float32), requires_grad=True) for a in arrays_in]
    x64 = [Tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in arrays_in]
    o32, o64 = _outputs(fn(*x32)), _outputs(fn(*x64))
    for a, b in zip(o32, o64):
        assert a.dtype == float32, f"float32 inputs gave a {a.dtype} output"
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    weights = [np.linspace(-1.0, 1.5, b.numel()).reshape(b.shape) for b in o64]
    sum(((a * w.astype(np.float32)).sum() for a, w in zip(o32, weights)), zeros((), dtype=float32)).backward()
    sum(((b * w).sum() for b, w in zip(o64, weights)), zeros((), dtype=float64)).backward()
    for a, b in zip(x32, x64):
        assert a.grad is not None and a.grad.dtype == float32, "a float32 leaf must get a float32 gradient"
        g64 = b.grad.numpy()
        np.testing.assert_allclose(a.grad.numpy(), g64, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(g64).max(initial=0))))


# ---------------------------------------------------------------------------------------
# settings profiles

# deadline=None everywhere: the first example of a test may pay for a Numba compile or cache load
PROFILES: dict[str, dict[str, Any]] = {
    "default": dict(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]),
    "ci": dict(max_examples=100, deadline=None, derandomize=True, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow]),
    "dev": dict(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]),
    "thorough": dict(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]),
}


def register_profiles(**overrides: Any) -> None:
    """Register the ``default``/``ci``/``dev``/``thorough`` Hypothesis profiles (``overrides`` apply to all)."""
    for name, kw in PROFILES.items():
        settings.register_profile(name, **{**kw, **overrides})


def load_profile(name: str | None = None) -> str:
    """Register the profiles and load ``name`` (default: ``$HYPOTHESIS_PROFILE`` or ``"default"``)."""
    register_profiles()
    name = name or os.environ.get("HYPOTHESIS_PROFILE", "default")
    settings.load_profile(name)
    return name
