"""The Backend contract (backend/__init__.py): every declared method is implemented by the CPU and
CUDA backends, and every backend attribute the library uses outside backend/ is declared.

The CUDA backend is checked as a class (and run emulated, ``CUDABackend(xp=numpy)``): no GPU needed.
"""
from __future__ import annotations

import ast
import inspect
import math
import pathlib

import numpy as np
import pytest

import tinygrad_rnn as tr
from tinygrad_rnn.backend import Backend, backend_of_array, get_backend, host_array, is_host_array
from tinygrad_rnn.backend.cpu import CPUBackend
from tinygrad_rnn.backend.cuda import CUDABackend, NumpyRunner

LIB = pathlib.Path(tr.__file__).parent


def _declared() -> list[str]:
    """Public names declared on Backend: its methods and its attributes (name, xp, is_device)."""
    return sorted(k for k in vars(Backend) if not k.startswith("_") and k != "abstract_methods")


@pytest.mark.parametrize("cls", [CPUBackend, CUDABackend], ids=["cpu", "cuda"])
def test_every_declared_method_is_implemented(cls):
    abstract = Backend.abstract_methods()
    assert {"to_host", "from_host", "gemm", "rnn_forward", "rnn_backward", "sum_squares", "adam_step"} <= set(abstract)
    inst = cls() if cls is CPUBackend else cls(xp=np)
    for name in _declared():
        if not callable(vars(Backend)[name]):  # an attribute: name, xp, is_device
            assert getattr(inst, name) is not vars(Backend)[name] or name == "is_device", name
            continue
        impl = getattr(cls, name)
        assert not getattr(impl, "__isabstractmethod__", False), f"{cls.__name__}.{name} is still abstract"
        if name in abstract:
            assert impl is not vars(Backend)[name]
            # the implementation takes the declared arguments (by name, in order)
            want = list(inspect.signature(vars(Backend)[name]).parameters)
            got = list(inspect.signature(impl).parameters)
            assert got[:len(want)] == want, f"{cls.__name__}.{name}{got} vs Backend.{name}{want}"


def test_an_incomplete_backend_names_the_missing_method():
    class Half(Backend):
        name = "half"
        xp = np

    with pytest.raises(NotImplementedError, match=r"Half does not implement Backend\.softmax_xent"):
        Half().softmax_xent(np.zeros((1, 2)), np.zeros(1, dtype=np.int64), -100)
    assert Half().mm(np.eye(2), np.ones((2, 1))).shape == (2, 1)  # generic bodies still work


def _backend_attributes_used_outside_backend(root: pathlib.Path = LIB) -> dict[str, list[str]]:
    """``<x>.<attr>`` where <x> is a backend by name: ``be``/``backend`` variables and ``._be``/``.be``
    attributes (a tensor's backend, a Function context's), in every module outside backend/."""
    used: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] == "backend":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            v = node.value
            is_be = (isinstance(v, ast.Name) and v.id in ("be", "_be", "backend")) or \
                    (isinstance(v, ast.Attribute) and v.attr in ("_be", "be"))
            if is_be:
                used.setdefault(node.attr, []).append(f"{rel}:{node.lineno}")
    return used


def test_every_backend_attribute_used_outside_backend_is_declared():
    used = _backend_attributes_used_outside_backend()
    # the scan finds the known callers (a scan that finds nothing would pass vacuously)
    assert {"xp", "mm", "to_host", "from_host", "softmax_xent", "rnn_forward", "rnn_backward", "adam_step"} <= set(used)
    undeclared = {k: v for k, v in used.items() if not hasattr(Backend, k) and not k.startswith("__")}
    assert not undeclared, f"backend attributes used but not declared on Backend: {undeclared}"


def test_the_scan_catches_an_undeclared_backend_call(tmp_path):
    """Negative control: a module calling an undeclared backend method is found (and backend/ is skipped)."""
    (tmp_path / "backend").mkdir()
    (tmp_path / "backend" / "x.py").write_text("be.private_helper()\n")
    (tmp_path / "user.py").write_text("def f(t, be):\n    t._be.frobnicate(1)\n    return be.mm\n")
    used = _backend_attributes_used_outside_backend(tmp_path)
    assert used == {"frobnicate": ["user.py:2"], "mm": ["user.py:3"]}
    assert not hasattr(Backend, "frobnicate")


# ---------------------------------------------------------------------------------------------
# the host/device helpers the library calls instead of asking "is this CuPy?"


def test_array_ownership_and_host_conversion():
    a = np.arange(6.0).reshape(2, 3)
    assert backend_of_array(a) is get_backend("cpu")
    assert backend_of_array([1, 2]) is None and backend_of_array(3.0) is None
    assert is_host_array(a) and not is_host_array([1.0])
    assert host_array(a) is a
    np.testing.assert_array_equal(host_array([[1, 2]]), np.array([[1, 2]]))
    cpu = get_backend("cpu")
    assert not cpu.is_device
    assert cpu.asarray(a) is a  # shares, as torch.as_tensor
    assert cpu.from_host(a) is a
    c = cpu.from_host(a, copy=True)
    assert c is not a and not np.shares_memory(c, a)
    np.testing.assert_array_equal(c, a)
    emu = CUDABackend(xp=np)
    assert not emu.is_device  # emulated: its arrays are host arrays
    assert not np.shares_memory(emu.from_host(a, copy=True), a)


@pytest.mark.parametrize("be", [get_backend("cpu"), CUDABackend(xp=np, runner=NumpyRunner())], ids=["cpu", "emulated"])
def test_check_index_raises_like_numpy(be):
    be.check_index((3, 4), (1, np.array([0, 3])))  # in range: nothing
    if be.is_device:  # pragma: no cover - a real GPU only
        with pytest.raises(IndexError):
            be.check_index((3, 4), (5,))


@pytest.mark.parametrize("be", [get_backend("cpu"), CUDABackend(xp=np)], ids=["cpu", "emulated"])
@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, math.inf])
def test_sum_squares_and_vector_norms(be, p):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal(7), np.zeros((0, 3))]
    assert be.sum_squares(arrays[1]) == pytest.approx(float((arrays[1] ** 2).sum()), rel=1e-12)
    got = be.vector_norms(arrays, p)
    want = [float(np.linalg.norm(a.reshape(-1).astype(np.float64), p)) if a.size else 0.0 for a in arrays]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert be.vector_norms([], p) == []


@pytest.mark.parametrize("be", [get_backend("cpu"), CUDABackend(xp=np)], ids=["cpu", "emulated"])
@pytest.mark.parametrize("beta", [0, 1])
def test_gemm_with_beta(be, beta):
    rng = np.random.default_rng(1)
    for dt in (np.float32, np.float64):
        a, b = rng.standard_normal((3, 4)).astype(dt), rng.standard_normal((4, 5)).astype(dt)
        out = rng.standard_normal((3, 5)).astype(dt)
        want = a @ b + beta * out
        be.gemm(a, b, out, beta)
        np.testing.assert_allclose(out, want, rtol=1e-5 if dt == np.float32 else 1e-12, atol=1e-5)
    # a transposed (non-contiguous) operand takes the general path, same answer
    a, b = rng.standard_normal((4, 3)).T, rng.standard_normal((4, 5))
    out = np.ones((3, 5))
    be.gemm(a, b, out, beta)
    np.testing.assert_allclose(out, a @ b + beta, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("train", [True, False])
def test_rnn_forward_from_input_matches_projected_on_both_backends(mode, train):
    """rnn_forward(x, w_ih, bias, ...) equals projecting first and calling rnn_forward_projected, on the
    CPU (which may fuse the projection into its kernel) and the emulated GPU backend."""
    from tinygrad_rnn.backend.recurrence import GATES

    rng = np.random.default_rng(2)
    t_, b, d, h = 4, 3, 2, 5
    g = GATES[mode]
    x, w_ih, w_hh = rng.standard_normal((t_, b, d)), rng.standard_normal((g * h, d)), 0.5 * rng.standard_normal((g * h, h))
    bias, b_hn = rng.standard_normal(g * h), (rng.standard_normal(h) if mode == "gru" else None)
    h0, c0 = rng.standard_normal((b, h)), (rng.standard_normal((b, h)) if mode == "lstm" else None)
    mask = np.ones((t_, b))
    xw = (x.reshape(t_ * b, d) @ w_ih.T + bias).reshape(t_, b, g * h)
    ref = CPUBackend().rnn_forward_projected(mode, xw, w_hh, b_hn, h0, c0, mask, train=True)
    for be in (get_backend("cpu"), CUDABackend(xp=np)):
        h_all, c_all, store = be.rnn_forward(mode, x, w_ih, bias, w_hh, b_hn, h0, c0, mask, train=train)
        np.testing.assert_allclose(h_all, ref[0], rtol=1e-12, atol=1e-12)
        if mode == "lstm":
            np.testing.assert_allclose(c_all[-1], ref[1][-1], rtol=1e-12, atol=1e-12)
        assert (store is None) == (not train or mode == "rnn_tanh")


def test_gpu_count_agrees_with_availability():
    from tinygrad_rnn.backend.cuda import gpu_count

    assert (gpu_count() > 0) == tr.cuda.is_available()
