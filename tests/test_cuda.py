"""The optional CuPy backend.

Everywhere (no GPU needed):
  * every GPU kernel's math, i.e. its description in ``backend/cuda_kernels.py``, evaluated with
    NumPy against the Numba CPU kernels on random inputs (padded rows, saturated gates), float64
    to rounding and float32 to float32 accuracy; the generated CUDA source holds each statement;
  * the backend's own code (argument order, layouts, the time loops with the fused GEMM
    accumulation, optimizer flags) run with NumPy in place of CuPy (``CUDABackend(xp=numpy)``)
    against ``CPUBackend``;
  * importing the library does not import cupy, and without a GPU every way of asking for
    ``"cuda"`` raises DeviceUnavailableError saying why and how to install.
Not covered without a GPU: the generated indexing and launch code, NVRTC compilation, cuBLAS,
the softmax block reductions and CUDA-graph capture; the ``gpu`` tests below check those against
the CPU backend when a GPU is present (``bash bench/gpu_check.sh`` runs them).
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinygrad_rnn as tr
from tinygrad_rnn import nn, optim
from tinygrad_rnn.backend import DeviceUnavailableError
from tinygrad_rnn.backend import cuda_kernels as CK
from tinygrad_rnn.backend.cpu import CPUBackend
from tinygrad_rnn.backend.cuda import CUDABackend, NumpyRunner

HAS_GPU = tr.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_GPU, reason=f"needs a CUDA GPU with CuPy: {tr.cuda.unavailable_reason()}")
no_gpu_only = pytest.mark.skipif(HAS_GPU, reason="a GPU is present: the gpu tests run instead")

MODES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
# (rtol, atol relative to the array's largest entry): float32 differs from the Numba kernels, which
# promote to float64 in places, by float32 rounding (1 - z for z near 1 loses digits in both)
TOL = {np.float64: (1e-12, 1e-13), np.float32: (2e-5, 1e-6)}
CPU = CPUBackend()


def _close(got, want, dtype, what="", scale=1.0):
    """allclose with the absolute tolerance scaled by the larger of ``scale`` (the inputs') and the array's."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    rtol, atol = TOL[dtype]
    scale = max(scale, float(np.abs(want[np.isfinite(want)]).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)


# ------------------------------------------------------------------------------------------
# the descriptions themselves


@pytest.mark.parametrize("name", sorted(CK.KERNELS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_generated_source_holds_every_statement(name, dtype):
    k = CK.KERNELS[name]
    src = CK.cuda_source(k, dtype)
    for stmt in k.body:
        assert f"const R {stmt};" in src, stmt
    assert src.count("{") == src.count("}")
    assert f"typedef {'float' if dtype == 'float32' else 'double'} T;" in src
    for array, _ in k.arrays:
        assert f"T* {array}," in src or f"T* {array})" in src
    for var, array, _ in k.loads:
        if array is not None:
            assert f"const R {var} = (R){array}[" in src
    for array, _, var in k.stores:
        assert any(line.strip().startswith(f"{array}[") and line.strip().endswith(f"= (T){var};")
                   for line in src.splitlines()) or k.space == "custom"


@pytest.mark.parametrize("stmt, why", [
    ("y = x ** 2", "vocabulary"),
    ("y = x * 0.5", "integer"),
    ("y = 1 / 2", "truncates"),
    ("y = undefined + x", "before it is defined"),
    ("x = x + 1", "already defined"),
    ("y = max(x, 0)", "only the calls"),
    ("y = select(0 < x < 1, x, 0)", "single comparisons"),
    ("y = x > 0", "comparison may only"),
    ("y = x if x else 0", "vocabulary"),
    ("y = x; z = x", "one assignment"),
    ("e_ = x", "reserved"),
])
def test_check_kernel_rejects_what_c_and_numpy_would_read_differently(stmt, why):
    k = CK.Kernel("bad", "flat", (("a", "flat"),), (("x", "a", 0),), (stmt,), (("a", 0, "x"),))
    with pytest.raises(ValueError, match=why):
        CK.check_kernel(k)


def _cell_inputs(rng, mode, b, h, dtype, scale=1.0):
    g = MODES[mode]
    r = lambda *s: (scale * rng.standard_normal(s)).astype(dtype)  # noqa: E731
    mask = np.ones(b, dtype=dtype)
    mask[0] = 0.0  # a padded row
    mask[b // 2] = 0.0
    sg = 4 if mode in ("lstm", "gru") else 0
    return dict(xw=r(b, g * h), hw=r(b, g * h), b_hn=r(h), h_prev=r(b, h), c_prev=r(b, h), mask=mask,
                store=r(b, sg * h) if sg else None, dout=r(b, h), dh_carry=r(b, h), dc_carry=r(b, h))


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("scale", [1.0, 12.0])  # 12: saturated gates, exp of large arguments
def test_cell_descriptions_match_numba_kernels(mode, dtype, scale):
    """One step forward and backward: the description evaluated with NumPy against rnn_kernels.py
    (through CPUBackend's step methods at a size below its vectorised path)."""
    rng = np.random.default_rng([len(mode), int(scale)])
    b, h = 5, 3
    x = _cell_inputs(rng, mode, b, h, dtype, scale)
    g = MODES[mode]
    emu = NumpyRunner()
    outs = {}
    for name, runner in (("numba", None), ("description", emu)):
        store = None if x["store"] is None else np.full_like(x["store"], np.nan)
        h_out, c_out = np.full((b, h), np.nan, dtype), np.full((b, h), np.nan, dtype)
        if runner is None:
            CPU.rnn_step_forward(mode, x["xw"], x["hw"], x["b_hn"], x["h_prev"], x["c_prev"], x["mask"], store, h_out, c_out)
        else:
            CUDABackend(xp=np, runner=runner).rnn_step_forward(mode, x["xw"], x["hw"], x["b_hn"], x["h_prev"],
                                                               x["c_prev"], x["mask"], store, h_out, c_out)
        fwd = [h_out] + ([c_out] if mode == "lstm" else []) + ([store] if store is not None else [])
        # backward from the stored values of this forward
        h_t = h_out
        dxw = np.full((b, g * h), np.nan, dtype)
        dhw = np.full((b, g * h), np.nan, dtype) if mode == "gru" else dxw
        dh_pass, dc_prev = np.full((b, h), np.nan, dtype), np.full((b, h), np.nan, dtype)
        be = CPU if runner is None else CUDABackend(xp=np, runner=runner)
        be.rnn_step_backward(mode, store, x["h_prev"], h_t, x["c_prev"], c_out, x["mask"], x["dout"], x["dh_carry"],
                             x["dc_carry"] if mode == "lstm" else None, dxw, dhw, dh_pass,
                             dc_prev if mode == "lstm" else None)
        bwd = [dxw, dh_pass] + ([dhw] if mode == "gru" else []) + ([dc_prev] if mode == "lstm" else [])
        outs[name] = fwd + bwd
    for k, (got, want) in enumerate(zip(outs["description"], outs["numba"])):
        assert not np.isnan(got).any(), f"output {k} has unwritten entries"
        _close(got, want, dtype, f"{mode} output {k}", scale)
    # padded rows carry the state bit for bit
    for row in (0, b // 2):
        assert np.array_equal(outs["description"][0][row], x["h_prev"][row])


OPTIM_CASES = [
    ("sgd", dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.01, nesterov=False, first_step=True)),
    ("sgd", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.0, nesterov=False, first_step=True)),
    ("sgd", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=False, first_step=False)),
    ("sgd", dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=True, first_step=False)),
    ("adam", dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, decoupled_decay=0.0, step_size=0.002,
                  bias_correction2_sqrt=0.05, amsgrad=False)),
    ("adam", dict(beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.0, decoupled_decay=1e-3, step_size=0.01,
                  bias_correction2_sqrt=0.3, amsgrad=True)),
    ("rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False)),
    ("rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.1, momentum=0.5, centered=True)),
    ("rmsprop", dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.5, centered=False)),
    ("rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=True)),
    ("adagrad", dict(clr=0.05, eps=1e-10, weight_decay=0.01)),
]


def _optim_call(be, algo, kw, p, gr, st):
    if algo == "sgd":
        be.sgd_step(p, gr, st[0] if kw["momentum"] else None, **kw)
    elif algo == "adam":
        be.adam_step(p, gr, st[0], st[1], st[2] if kw["amsgrad"] else None, **kw)
    elif algo == "rmsprop":
        be.rmsprop_step(p, gr, st[0], st[1] if kw["centered"] else None, st[2] if kw["momentum"] > 0 else None, **kw)
    else:
        be.adagrad_step(p, gr, st[0], **kw)


@pytest.mark.parametrize("case", range(len(OPTIM_CASES)))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("strided", [False, True])
def test_optimizer_descriptions_match_numba_kernels(case, dtype, strided):
    algo, kw = OPTIM_CASES[case]
    rng = np.random.default_rng(case)
    p0 = rng.standard_normal((4, 6)).astype(dtype)
    gr = rng.standard_normal((4, 6)).astype(dtype)
    st0 = [np.abs(rng.standard_normal((4, 6))).astype(dtype) for _ in range(3)]
    res = []
    for be in (CPU, CUDABackend(xp=np)):
        p = p0.copy().T if strided else p0.copy()  # a transposed parameter is updated through a copy
        g = gr.T if strided else gr
        st = [np.array(s.T if strided else s, order="C") for s in st0]  # fresh copies for each backend
        for _ in range(3):
            _optim_call(be, algo, kw, p, g, st)
        res.append([p] + st)
    for k, (got, want) in enumerate(zip(*res)):
        _close(got, want, dtype, f"{algo} array {k}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_xent_descriptions_match_numba_kernels(dtype):
    rng = np.random.default_rng(3)
    logits = (8 * rng.standard_normal((7, 11))).astype(dtype)
    targets = rng.integers(0, 11, 7)
    targets[2] = -100  # ignored row
    emu = CUDABackend(xp=np)
    loss, mx, ls = emu.softmax_xent(logits, targets, -100)
    loss0, mx0, ls0 = CPU.softmax_xent(logits, targets, -100)
    _close(loss, loss0, dtype)
    _close(mx, mx0, np.float64)
    # float32 logits: the CPU sums float32 exps (as its backward makes them), the GPU float64 ones
    _close(ls, ls0, np.dtype(dtype).type)
    assert mx.dtype == ls.dtype == np.float64 and loss.dtype == dtype and loss[2] == 0
    grad_rows = rng.uniform(0.5, 2, 7)
    _close(emu.softmax_xent_backward(logits, mx, ls, targets, -100, grad_rows),
           CPU.softmax_xent_backward(logits, mx0, ls0, targets, -100, grad_rows), dtype)
    # a scalar row gradient broadcasts, as reduction="sum" passes it
    _close(emu.softmax_xent_backward(logits, mx, ls, targets, -100, np.float64(0.5)),
           CPU.softmax_xent_backward(logits, mx0, ls0, targets, -100, np.float64(0.5)), dtype)


# ------------------------------------------------------------------------------------------
# the backend's code paths with NumPy standing in for CuPy


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("t_", [1, 2, 7])
def test_emulated_time_loops_match_cpu_backend(mode, dtype, t_):
    """The GPU backend's forward/backward loops (GEMM + kernel per step, dh accumulated by the GEMM)
    against CPUBackend's, with padded steps and an all-padding row."""
    rng = np.random.default_rng([t_, len(mode)])
    b, h, g = 4, 5, MODES[mode]
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    xw, w = r(t_, b, g * h), (0.5 * r(g * h, h)).astype(dtype)
    b_hn = r(h) if mode == "gru" else None
    h0, c0 = r(b, h), (r(b, h) if mode == "lstm" else None)
    lengths = np.array([t_, max(1, t_ - 1), 1, 0])  # the last row is all padding
    mask = (np.arange(t_)[:, None] < lengths[None, :]).astype(dtype)
    emu = CUDABackend(xp=np)
    fwd = emu.rnn_forward_projected(mode, xw, w, b_hn, h0, c0, mask)
    fwd0 = CPU.rnn_forward_projected(mode, xw, w, b_hn, h0, c0, mask)
    for got, want in zip(fwd, fwd0):
        assert (got is None) == (want is None)
        if got is not None:
            _close(got, want, dtype, "forward")
    assert np.array_equal(fwd[0][:, 3], np.broadcast_to(h0[3], (t_ + 1, h)))
    dout, dh_n = r(t_, b, h), r(b, h)
    dc_n = r(b, h) if mode == "lstm" else None
    bwd = emu.rnn_backward(mode, w, fwd[2], fwd[0], fwd[1], mask, dout, dh_n, dc_n)
    bwd0 = CPU.rnn_backward(mode, w, fwd0[2], fwd0[0], fwd0[1], mask, dout, dh_n, dc_n)
    for k, (got, want) in enumerate(zip(bwd, bwd0)):
        assert (got is None) == (want is None)
        if got is not None:
            _close(got, want, dtype, f"backward output {k}")
    assert (bwd[0] is bwd[1]) == (mode != "gru")


class _RecordingNumpy:
    """NumPy with every ``empty`` shape recorded: what the emulated backend's loops allocate."""

    def __init__(self):
        self.shapes: list[tuple] = []

    def __getattr__(self, name):
        return getattr(np, name)

    def empty(self, shape, *a, **k):
        self.shapes.append(tuple(shape))
        return np.empty(shape, *a, **k)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("t_", [1, 2, 7])
def test_emulated_forward_only_keeps_no_store(mode, t_):
    """train=False on the GPU path: the same h and final c as training, no store returned and none
    allocated that grows with T (the loop is recurrence.py's, shared with the CPU), and every step
    goes through CUDABackend.rnn_step_forward and its GEMM."""
    rng = np.random.default_rng([t_, len(mode), 9])
    b, d, h, g = 3, 4, 5, MODES[mode]
    x, w_ih, w_hh = rng.standard_normal((t_, b, d)), rng.standard_normal((g * h, d)), 0.5 * rng.standard_normal((g * h, h))
    bias = rng.standard_normal(g * h)
    b_hn = rng.standard_normal(h) if mode == "gru" else None
    h0, c0 = rng.standard_normal((b, h)), (rng.standard_normal((b, h)) if mode == "lstm" else None)
    mask = (np.arange(t_)[:, None] < np.array([t_, 1, 0])[None, :]).astype(np.float64)
    emu = CUDABackend(xp=np, runner=NumpyRunner())
    h_all, c_all, store = emu.rnn_forward(mode, x, w_ih, bias, w_hh, b_hn, h0, c0, mask, train=True)
    rec = _RecordingNumpy()
    emu.xp = rec
    steps = []
    real_step, real_gemm = emu.rnn_step_forward, emu.gemm
    emu.rnn_step_forward = lambda *a: (steps.append("step"), real_step(*a))[1]
    emu.gemm = lambda *a: (steps.append("gemm"), real_gemm(*a))[1]
    h1, c1, s1 = emu.rnn_forward(mode, x, w_ih, bias, w_hh, b_hn, h0, c0, mask, train=False)
    assert s1 is None
    assert steps == ["gemm", "step"] * t_
    np.testing.assert_allclose(h1, h_all, rtol=1e-12, atol=1e-12)
    if mode == "lstm":
        assert c1.shape[0] <= 2 and store.shape == (t_, b, 4 * h)
        np.testing.assert_allclose(c1[-1], c_all[-1], rtol=1e-12, atol=1e-12)
    # only h_all grows with T: the store is one scratch row, c a ping-pong pair
    per_time = [s for s in rec.shapes if len(s) == 3 and s != (t_ + 1, b, h)]
    assert all(s[0] <= 2 for s in per_time), rec.shapes
    if mode in ("lstm", "gru"):
        assert (1, b, 4 * h) in rec.shapes  # the kernels' one scratch row


def test_emulated_backward_loop_reaches_step_kernel():
    """rnn_backward runs recurrence.py's loop through CUDABackend.rnn_step_backward (no copy of the loop)."""
    rng = np.random.default_rng(4)
    t_, b, h = 3, 2, 4
    emu = CUDABackend(xp=np)
    w = 0.5 * rng.standard_normal((4 * h, h))
    mask = np.ones((t_, b))
    h_all, c_all, store = emu.rnn_forward_projected("lstm", rng.standard_normal((t_, b, 4 * h)), w, None,
                                                    np.zeros((b, h)), np.zeros((b, h)), mask)
    calls = []
    real = emu.rnn_step_backward
    emu.rnn_step_backward = lambda *a: (calls.append(1), real(*a))[1]
    emu.rnn_backward("lstm", w, store, h_all, c_all, mask, rng.standard_normal((t_, b, h)), np.zeros((b, h)),
                     np.zeros((b, h)))
    assert len(calls) == t_
    assert not hasattr(CUDABackend, "_forward_loop") and not hasattr(CUDABackend, "_backward_loop")


def test_emulated_scatter_and_index_add_match_cpu_backend():
    rng = np.random.default_rng(5)
    emu = CUDABackend(xp=np)
    idx = np.array([3, 0, 3, 3, 1])
    src = rng.standard_normal((5, 4))
    np.testing.assert_array_equal(emu.scatter_add_rows(6, idx, src), CPU.scatter_add_rows(6, idx, src))
    assert emu.scatter_add_rows(6, idx[:0], src[:0]).shape == (6, 4)
    for index in ((np.array([0, 1, 1]), np.array([2, 2, 2])), rng.standard_normal((3, 4)) > 0):
        got, want = np.zeros((3, 4)), np.zeros((3, 4))
        vals = rng.standard_normal(want[index].shape)
        emu.index_add(got, index, vals)
        CPU.index_add(want, index, vals)
        np.testing.assert_array_equal(got, want)


def test_emulated_step_rejects_strided_outputs():
    emu = CUDABackend(xp=np)
    x = _cell_inputs(np.random.default_rng(0), "rnn_tanh", 4, 3, np.float64)
    h_out = np.zeros((3, 4)).T  # not C-contiguous: the kernel's writes would land elsewhere
    with pytest.raises(ValueError, match="C-contiguous"):
        emu.rnn_step_forward("rnn_tanh", x["xw"], x["hw"], None, x["h_prev"], None, x["mask"], None, h_out, None)


def test_importing_the_library_never_imports_cupy():
    code = "import sys, tinygrad_rnn, tinygrad_rnn.nn, tinygrad_rnn.optim; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------
# without a GPU: a clear error, whichever way "cuda" is asked for


@no_gpu_only
@pytest.mark.parametrize("ask", [
    lambda: tr.tensor([1.0, 2.0]).to("cuda"),
    lambda: tr.tensor([1.0]).cuda(),
    lambda: tr.zeros(2, 3, device="cuda"),
    lambda: tr.randn(2, device="cuda", seed=0),
    lambda: nn.LSTM(3, 4).to("cuda"),
    lambda: nn.Linear(3, 4, device="cuda"),
    lambda: tr.get_backend("cuda:0"),
])
def test_without_gpu_cuda_raises_device_unavailable(ask):
    with pytest.raises(DeviceUnavailableError) as info:
        ask()
    msg = str(info.value)
    assert "cuda" in msg and "not available" in msg
    assert tr.cuda.unavailable_reason() in msg  # says why
    if "CuPy is not installed" in msg:
        assert "pip install" in msg and "tinygrad_rnn[cuda]" in msg  # and how to fix it
    assert tr.cuda.is_available() is False


@no_gpu_only
def test_without_gpu_a_failed_request_leaves_the_model_on_the_cpu():
    lstm = nn.LSTM(3, 4)
    with pytest.raises(DeviceUnavailableError):
        lstm.to("cuda")
    assert {p.device for p in lstm.parameters()} == {"cpu"}
    out, _ = lstm(tr.randn(2, 1, 3, seed=0))
    assert out.shape == (2, 1, 4)


# ------------------------------------------------------------------------------------------
# on a GPU: everything against the CPU backend

GPU_TOL = {np.float32: 1e-4, np.float64: 1e-10}


def _gpu_close(got, want, dtype):
    """||got - want|| / ||want|| within GPU_TOL: cuBLAS and the CPU BLAS sum in different orders, so
    float32 entries near zero differ by more than their own relative precision."""
    err = np.linalg.norm(got.astype(np.float64) - want) / max(np.linalg.norm(want.astype(np.float64)), 1e-300)
    assert err <= GPU_TOL[dtype], f"relative error {err:.2e}"
    assert not np.isnan(got).any()


def _load_gpu_check():
    """bench/gpu_check.py holds the catalogue of ops and layer configs (no GPU needed to import it)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("tinygrad_rnn_gpu_check", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while it executes
    spec.loader.exec_module(mod)
    return mod


GC = _load_gpu_check()


def _gpu_check_module():
    if GC is None:
        pytest.skip("bench/gpu_check.py (the op catalogue) is not in this checkout")
    return GC


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("name", sorted(GC.OPS) if GC is not None else [])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_every_op_matches_cpu(name, dtype):
    gc = _gpu_check_module()
    eo, eg = gc.compare_op(name, dtype, "cuda")
    assert eo <= GPU_TOL[dtype] and eg <= GPU_TOL[dtype], f"{name}: output error {eo:.2e}, gradient error {eg:.2e}"


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN_tanh", "RNN_relu"])
@pytest.mark.parametrize("config", ["1 layer", "1 layer, T=1, h0", "2 layers, bidir, batch_first, lengths, h0"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("graphs", [True, False])
def test_gpu_recurrent_layers_match_cpu(kind, config, dtype, graphs):
    """Forward and backward of every layer config; with graphs on, runs 2 and 3 replay a captured graph."""
    gc = _gpu_check_module()
    be = tr.get_backend("cuda")
    be.use_graphs = graphs
    try:
        eo, eg = gc.compare_layer(kind, config, dtype, "cuda", repeats=3)
    finally:
        be.use_graphs = True
    assert eo <= GPU_TOL[dtype] and eg <= GPU_TOL[dtype], f"output error {eo:.2e}, gradient error {eg:.2e}"
    assert be.graphs.disabled_reason is None, be.graphs.disabled_reason


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("mode", list(MODES))
def test_gpu_forward_only_keeps_no_store(mode):
    """train=False on the GPU (graphs on: runs 2 and 3 replay a captured forward-only loop): no store,
    the same h_all and c_n as training."""
    import cupy

    be = tr.get_backend("cuda")
    rng = np.random.default_rng(11)
    t_, b, d, h, g = 50, 8, 16, 32, MODES[mode]
    up = lambda a: None if a is None else cupy.asarray(a)  # noqa: E731
    x, w_ih = up(rng.standard_normal((t_, b, d))), up(rng.standard_normal((g * h, d)))
    w_hh = up(0.3 * rng.standard_normal((g * h, h)))
    bias, b_hn = up(rng.standard_normal(g * h)), up(rng.standard_normal(h) if mode == "gru" else None)
    h0, c0 = up(rng.standard_normal((b, h))), up(rng.standard_normal((b, h)) if mode == "lstm" else None)
    mask = cupy.ones((t_, b))
    ref = be.rnn_forward(mode, x, w_ih, bias, w_hh, b_hn, h0, c0, mask, train=True)
    for _ in range(3):
        h_all, c_all, store = be.rnn_forward(mode, x, w_ih, bias, w_hh, b_hn, h0, c0, mask, train=False)
        assert store is None
        _gpu_close(h_all.get(), ref[0].get(), np.float64)
        if mode == "lstm":
            assert c_all.shape[0] <= 2
            _gpu_close(c_all[-1].get(), ref[1][-1].get(), np.float64)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_step_kernels_and_loops_match_cpu_backend(mode, dtype):
    import cupy

    be = tr.get_backend("cuda")
    rng = np.random.default_rng(7)
    b, h, g = 37, 70, MODES[mode]  # sizes that do not divide the block size
    x = _cell_inputs(rng, mode, b, h, dtype, 3.0)
    d = {k: None if v is None else cupy.asarray(v) for k, v in x.items()}
    store = None if x["store"] is None else cupy.full(x["store"].shape, cupy.nan, dtype)
    h_out, c_out = cupy.full((b, h), cupy.nan, dtype), cupy.full((b, h), cupy.nan, dtype)
    be.rnn_step_forward(mode, d["xw"], d["hw"], d["b_hn"], d["h_prev"], d["c_prev"], d["mask"], store, h_out, c_out)
    store0 = None if x["store"] is None else np.empty_like(x["store"])
    h0, c0 = np.empty((b, h), dtype), np.empty((b, h), dtype)
    CPU.rnn_step_forward(mode, x["xw"], x["hw"], x["b_hn"], x["h_prev"], x["c_prev"], x["mask"], store0, h0, c0)
    _gpu_close(h_out.get(), h0, dtype)
    if store is not None:
        _gpu_close(store.get(), store0, dtype)
    # whole loops, T = 9 with padding, graphs on (the second call is captured and checked)
    t_ = 9
    xw = (rng.standard_normal((t_, b, g * h))).astype(dtype)
    w = (0.3 * rng.standard_normal((g * h, h))).astype(dtype)
    mask = (rng.random((t_, b)) > 0.2).astype(dtype)
    hh = rng.standard_normal((b, h)).astype(dtype)
    cc = hh[::-1].copy() if mode == "lstm" else None
    ref = CPU.rnn_forward_projected(mode, xw, w, x["b_hn"], hh, cc, mask)
    dout = rng.standard_normal((t_, b, h)).astype(dtype)
    refb = CPU.rnn_backward(mode, w, ref[2], ref[0], ref[1], mask, dout, hh, cc)
    up = lambda a: None if a is None else cupy.asarray(a)  # noqa: E731
    for _ in range(3):
        out = be.rnn_forward_projected(mode, up(xw), up(w), up(x["b_hn"]), up(hh), up(cc), up(mask))
        for got, want in zip(out, ref):
            if want is not None:
                _gpu_close(got.get(), want, dtype)
        outb = be.rnn_backward(mode, up(w), out[2], out[0], out[1], up(mask), up(dout), up(hh), up(cc))
        for got, want in zip(outb, refb):
            if want is not None:
                _gpu_close(got.get(), want, dtype)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda ps: optim.SGD(ps, lr=0.1),
    lambda ps: optim.Adam(ps, lr=0.01, weight_decay=1e-3),
    lambda ps: optim.AdamW(ps, lr=0.01, amsgrad=True),
    lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
    lambda ps: optim.Adagrad(ps, lr=0.1, lr_decay=0.01),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_optimizers_match_cpu(make, dtype):
    results = []
    for device in ("cpu", "cuda"):
        model = nn.LSTM(3, 4, dtype=dtype, seed=0).to(device)
        opt = make(list(model.parameters()))
        x = tr.tensor(np.random.default_rng(0).standard_normal((5, 2, 3)).astype(dtype), device=device)
        for _ in range(3):
            opt.zero_grad()
            out, _ = model(x)
            (out * out).sum().backward()
            opt.step()
        results.append(model.state_dict())
    for k in results[0]:
        np.testing.assert_allclose(results[1][k], results[0][k], rtol=GPU_TOL[dtype] * 10, atol=GPU_TOL[dtype], err_msg=k)


@pytest.mark.gpu
@gpu
def test_gpu_module_to_cuda_and_back_moves_grads_and_optimizer_state():
    import cupy

    model = nn.Sequential(nn.Linear(3, 4, seed=0), nn.Linear(4, 2, seed=1))
    opt = optim.Adam(model.parameters(), lr=0.1)
    x = tr.randn(5, 3, seed=2)
    (model(x) ** 2).sum().backward()
    opt.step()
    model.to("cuda")
    assert {p.device for p in model.parameters()} == {"cuda"}
    assert all(isinstance(p._data, cupy.ndarray) and p.grad.device == "cuda" for p in model.parameters())
    opt.zero_grad()
    (model(x.to("cuda")) ** 2).sum().backward()
    opt.step()  # the state follows its parameter to the GPU
    assert all(isinstance(v, cupy.ndarray) for s in opt.state.values() for v in s.values() if hasattr(v, "shape"))
    sd = model.state_dict()
    assert all(type(v) is np.ndarray for v in sd.values())
    osd = opt.state_dict()
    assert all(type(v) is np.ndarray for s in osd["state"].values() for v in s.values() if hasattr(v, "shape"))
    model.to("cpu")
    assert {p.device for p in model.parameters()} == {"cpu"} and all(p.grad.device == "cpu" for p in model.parameters())
    opt.step()
    assert all(type(v) is np.ndarray for s in opt.state.values() for v in s.values() if hasattr(v, "shape"))
    # load_state_dict accepts CuPy arrays too
    model.load_state_dict({k: cupy.asarray(v) for k, v in sd.items()})
    np.testing.assert_array_equal(model.state_dict()["0.weight"], sd["0.weight"])


@pytest.mark.gpu
@gpu
def test_gpu_tensor_basics_and_device_mixing():
    import cupy

    a = tr.tensor([[1.0, -2.0], [3.0, 4.0]], device="cuda", requires_grad=True)
    assert a.device == "cuda" and isinstance(a._data, cupy.ndarray) and "device='cuda'" in repr(a)
    assert a.sum().item() == 6.0 and a.tolist() == [[1.0, -2.0], [3.0, 4.0]] and type(a.numpy()) is np.ndarray
    for factory in (tr.zeros(2, 3, device="cuda"), tr.ones(2, device="cuda"), tr.randn(3, device="cuda", seed=0),
                    tr.arange(4, device="cuda"), tr.eye(3, device="cuda"), tr.full((2,), 1.5, device="cuda")):
        assert factory.device == "cuda" and isinstance(factory._data, cupy.ndarray)
    np.testing.assert_array_equal(tr.randn(3, device="cuda", seed=0).numpy(), tr.randn(3, seed=0).numpy())
    b = tr.tensor(np.ones((2, 2), np.float32))
    for mix in (lambda: a + b, lambda: a @ b, lambda: tr.cat([a, b]), lambda: tr.where(a > 0, a, b)):
        with pytest.raises(ValueError, match="device"):
            mix()
    lstm = nn.LSTM(2, 3)
    with pytest.raises(ValueError, match="cuda|cpu"):
        lstm(tr.randn(4, 1, 2, device="cuda"))
    back = tr.Tensor(a._data, device="cpu")  # a CuPy array asked for on the host is copied over
    assert back.device == "cpu" and back.tolist() == a.tolist()
    (a.to("cpu") * 2).sum().backward()  # the gradient moves back to the GPU
    assert a.grad.device == "cuda" and a.grad.tolist() == [[2.0, 2.0], [2.0, 2.0]]


@pytest.mark.gpu
@gpu
def test_gpu_gradcheck_lstm_float64():
    lstm = nn.LSTM(2, 3, dtype=tr.float64, seed=0).to("cuda")
    x = tr.randn(3, 2, 2, dtype=tr.float64, seed=1, device="cuda", requires_grad=True)
    h0 = tr.randn(1, 2, 3, dtype=tr.float64, seed=2, device="cuda", requires_grad=True)
    c0 = tr.randn(1, 2, 3, dtype=tr.float64, seed=3, device="cuda", requires_grad=True)
    assert tr.gradcheck(lambda x, h, c: lstm(x, (h, c))[0], (x, h0, c0), eps=1e-6, atol=1e-6)
    # and the weights, through the functional form (gradcheck perturbs its own float64 copies)
    w_ih = lstm.weight_ih_l0.detach().requires_grad_()
    assert tr.gradcheck(lambda w: _lstm_with(lstm, w, x.detach()), (w_ih,), eps=1e-6, atol=1e-6)


def _lstm_with(lstm, w_ih, x):
    saved = lstm.weight_ih_l0
    lstm.weight_ih_l0 = w_ih  # a Parameter-compatible leaf tensor, swapped in for the check
    try:
        return lstm(x)[0]
    finally:
        lstm.weight_ih_l0 = saved


@pytest.mark.gpu
@gpu
def test_gpu_graph_cache_evicts_and_stays_correct():
    be = tr.get_backend("cuda")
    old = be.graphs.max_entries
    be.graphs.max_entries = 2
    try:
        gc = _gpu_check_module()
        for size in [(3, 5, 4, 6), (2, 4, 3, 5), (4, 3, 2, 7), (3, 5, 4, 6)]:
            ref = gc.run_layer("GRU", "1 layer", np.float32, "cpu", sizes=size)[0]
            for o, g in gc.run_layer("GRU", "1 layer", np.float32, "cuda", repeats=3, sizes=size):
                assert gc.max_err(o, ref[0]) < 1e-4 and gc.max_err(g, ref[1]) < 1e-4
        assert len(be.graphs.entries) <= 2 and be.graphs.stats["captures"] >= 3
    finally:
        be.graphs.max_entries = old
