"""bfloat16 autocast on the CPU (tr.autocast, backend/bf16.py): the rounding against PyTorch's, the products
against float64 products of the rounded operands, the layers against a NumPy reference that rounds as autocast
does, backward after the block, the API's rules and errors, oneMKL's first-call-per-thread fault, and the path
without oneMKL."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from _child import last_json, run_python

import tinygrad_rnn as tr
from tinygrad_rnn import nn
from tinygrad_rnn.backend import bf16, precision, threads
from tinygrad_rnn.backend.cpu import CPUBackend

RNG = np.random.default_rng(7)


def rnd(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def r64(a):
    """float64 values of ``a`` rounded to bfloat16 (what autocast's products multiply)."""
    return bf16.round_bf16(np.asarray(a, dtype=np.float32)).astype(np.float64)


@pytest.fixture(params=[1, 2], ids=["1thr", "2thr"])
def nthreads(request):
    old = tr.get_num_threads()
    tr.set_num_threads(request.param)
    yield request.param
    tr.set_num_threads(old)


# ------------------------------------------------------------------------------------------
# rounding


def test_rounding_matches_pytorch_bfloat16():
    special = np.array([0.0, -0.0, 1.0, 1.00390625, 1.01171875, 1 + 2 ** -8 + 2 ** -20, -3.5, 3.389e38, 3.4e38,
                        -3.4e38, np.inf, -np.inf, 1e-40, -1e-45, 1.1754944e-38, 65504.0], dtype=np.float32)
    x = np.concatenate([special, rnd(10000) * 10.0 ** RNG.integers(-30, 30, 10000)]).astype(np.float32)
    ours = bf16.to_bf16(x)
    theirs = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(bf16.from_bf16(ours), torch.from_numpy(x).to(torch.bfloat16).float().numpy())
    np.testing.assert_array_equal(bf16.round_bf16(x), bf16.from_bf16(ours))


def test_nan_stays_nan_and_inf_stays_inf():
    bits = np.array([0x7F800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FC00000, 0x7F80FFFF], dtype=np.uint32)
    x = bits.view(np.float32)
    assert np.isnan(bf16.from_bf16(bf16.to_bf16(x))).all()  # rounding must not carry a NaN into inf
    np.testing.assert_array_equal(bf16.round_bf16(np.array([np.inf, -np.inf], np.float32)), [np.inf, -np.inf])


def test_rounding_keeps_shape_of_strided_input():
    a = rnd(6, 8)[:, ::2]
    np.testing.assert_array_equal(bf16.from_bf16(bf16.to_bf16(a)), bf16.round_bf16(np.ascontiguousarray(a)))
    assert bf16.to_bf16(a).shape == (6, 4)


# ------------------------------------------------------------------------------------------
# products


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (5, 3, 7), (33, 70, 20), (300, 64, 257), (8, 500, 900), (0, 4, 3)])
@pytest.mark.parametrize("layout", ["nn", "tn", "nt", "tt"])
def test_matmul_is_the_product_of_rounded_operands(m, k, n, layout, nthreads):
    a = rnd(k, m).T if layout[0] == "t" else rnd(m, k)
    b = rnd(n, k).T if layout[1] == "t" else rnd(k, n)
    bias = rnd(n)
    ref = r64(a) @ r64(b)
    for bi in (None, bias):
        out = bf16.matmul(a, b, bi)
        want = ref + (0 if bi is None else bias)
        assert out.dtype == np.float32 and out.shape == (m, n)
        np.testing.assert_allclose(out, want, rtol=2e-6, atol=2e-6 * max(1.0, np.abs(want).max(initial=0)))
    if m * n * k:
        f32 = a.astype(np.float64) @ b
        assert np.abs(f32 - ref).max() > 1e-4 * np.abs(ref).max()  # the check above sees the rounding


def test_matmul_split_over_threads_agrees(monkeypatch):
    monkeypatch.setattr(bf16.blas, "PARALLEL_MIN_MACS", 1 << 10)
    tr.set_num_threads(2)
    try:
        for a, b in [(rnd(200, 40), rnd(40, 30)), (rnd(30, 40), rnd(40, 200))]:  # row blocks, column blocks
            np.testing.assert_allclose(bf16.matmul(a, b, rnd(b.shape[1]) * 0), r64(a) @ r64(b), rtol=2e-6, atol=2e-5)
    finally:
        tr.set_num_threads(1)


def test_matmul_and_rounding_split_by_prange_agree(monkeypatch):
    assert threads.native_parallel()  # the mkl extra brings TBB: the prange path is the one users get
    monkeypatch.setattr(bf16, "NATIVE_PARALLEL_MIN_MACS", 1 << 8)
    monkeypatch.setattr(bf16, "PARALLEL_MIN_ELEMENTS", 1 << 6)
    tr.set_num_threads(2)
    try:
        before = bf16.NATIVE_SPLITS[0]
        for a, b in [(rnd(200, 40), rnd(40, 30)), (rnd(30, 40), rnd(40, 200))]:
            bias = rnd(b.shape[1])
            np.testing.assert_allclose(bf16.matmul(a, b, bias), r64(a) @ r64(b) + bias, rtol=2e-6, atol=2e-5)
            np.testing.assert_allclose(bf16.matmul(a.T.copy().T, b), r64(a) @ r64(b), rtol=2e-6, atol=2e-5)
        x = rnd(1001)
        np.testing.assert_array_equal(bf16.to_bf16(x), torch.from_numpy(x).to(torch.bfloat16).view(torch.int16)
                                      .numpy().view(np.uint16))
        assert bf16.NATIVE_SPLITS[0] >= before + 5  # four products and the rounding took the split path
    finally:
        tr.set_num_threads(1)


def test_gemm_into_accumulates_with_beta():
    a, b, c = rnd(9, 13), rnd(13, 11), rnd(9, 11)
    want = r64(a) @ r64(b) + c
    bf16.gemm_into(a, b, c, 1.0)
    np.testing.assert_allclose(c, want, rtol=2e-6, atol=2e-5)
    bf16.gemm_into(a, b, c, 0.0)
    np.testing.assert_allclose(c, r64(a) @ r64(b), rtol=2e-6, atol=2e-5)


def test_an_operand_rounded_once_gives_the_same_products():
    be = tr.get_backend("cpu")
    g, w, x = rnd(50, 40), rnd(40, 30), rnd(50, 20)
    with precision.using(True):
        g16 = be.mm_operand(g)
        assert g16.dtype == np.uint16
        np.testing.assert_array_equal(be.mm(g16, w), be.mm(g, w))
        np.testing.assert_array_equal(be.mm(g16.T, x), be.mm(np.ascontiguousarray(g.T), x))
        assert be.mm_operand(g.astype(np.float64)).dtype == np.float64  # float64 is never autocast
    assert be.mm_operand(g) is g  # outside autocast: the operand itself


def test_packed_product_right_in_fresh_threads():
    """Packed bf16 products in eight fresh threads, each after bf16.thread_ready, against float64. (oneMKL's fault
    -- a wrong first packed product in a thread -- shows reliably only in a fresh process: the next test.)"""
    if not bf16.NATIVE:
        pytest.fail("oneMKL's bf16 GEMM is not loaded: install the mkl extra (pip install -e '.[mkl]')")
    w, a = rnd(256, 64), rnd(16, 64)  # rows that differ: the wrong results were rows mixed up
    packed = bf16.pack_b(w, 16, trans=True)
    ref = r64(a) @ r64(w).T
    bad = []

    def work():
        bf16.thread_ready()
        out = np.zeros((16, 256), np.float32)
        bf16._warm_packed(a, packed, out)
        bad.append(float(np.abs(out - ref).max()))

    for _ in range(8):
        t = threading.Thread(target=work)
        t.start()
        t.join()
    assert max(bad) < 1e-3, bad


def test_two_thread_layer_right_on_fresh_pool_threads():
    """The fault as a user met it: the first 2-thread LSTM pass under autocast in a process had wrong rows in its
    second row block (3 runs in 4 without the fix). Three fresh processes, each pass against the 1-thread one."""
    code = """
        import json
        import numpy as np
        import tinygrad_rnn as tr
        from tinygrad_rnn.backend import precision
        be = tr.get_backend("cpu")
        rng = np.random.default_rng(0)
        T, B, D, H = 20, 32, 16, 64
        f = np.float32
        x = rng.standard_normal((T, B, D)).astype(f)
        w_ih, w_hh = (rng.standard_normal((4 * H, D)) * .3).astype(f), (rng.standard_normal((4 * H, H)) * .3).astype(f)
        z, mask, bias = np.zeros((B, H), f), np.ones((T, B), f), np.zeros(4 * H, f)
        with precision.using(True):
            tr.set_num_threads(1)
            ref = be.rnn_forward("lstm", x, w_ih, bias, w_hh, None, z, z, mask, True)[0]
            tr.set_num_threads(2)
            h = be.rnn_forward("lstm", x, w_ih, bias, w_hh, None, z, z, mask, True)[0]
            blocks = be._row_blocks("lstm", T, B, H, True)
        print(json.dumps({"worst": float(np.abs(h - ref).max()), "blocks": blocks}))
    """
    for _ in range(3):
        out = last_json(run_python(code))
        assert out["blocks"] == 2  # the row-block path ran
        assert out["worst"] < 1e-5


# ------------------------------------------------------------------------------------------
# the ops under autocast


def test_linear_forward_and_backward_after_the_block():
    lin = nn.Linear(24, 10, seed=0)
    x = tr.tensor(rnd(7, 24), requires_grad=True)
    with tr.autocast("cpu", dtype=tr.bfloat16):
        y = lin(x)
    g = rnd(7, 10)
    y.backward(tr.tensor(g))  # after the block: backward multiplies as the forward did
    w, b = lin.weight.numpy(), lin.bias.numpy()
    assert y.dtype == tr.float32
    np.testing.assert_allclose(y.numpy(), r64(x.numpy()) @ r64(w).T + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), r64(g) @ r64(w), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lin.weight.grad.numpy(), r64(g).T @ r64(x.numpy()), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lin.bias.grad.numpy(), g.sum(0), rtol=1e-5, atol=1e-5)  # sums stay float32


def test_matmul_operator_and_float64_untouched():
    a, b = rnd(5, 6), rnd(6, 4)
    with tr.autocast("cpu"):
        y = tr.tensor(a) @ tr.tensor(b)
        y64 = tr.tensor(a.astype(np.float64)) @ tr.tensor(b.astype(np.float64))
    np.testing.assert_allclose(y.numpy(), r64(a) @ r64(b), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y64.numpy(), (tr.tensor(a.astype(np.float64)) @ tr.tensor(b.astype(np.float64))).numpy())


@pytest.mark.parametrize("b,t,d,h", [(4, 5, 3, 6), (32, 12, 16, 64)])
def test_float64_layers_are_the_same_bits_under_autocast(b, t, d, h, nthreads):
    m = nn.LSTM(d, h, seed=8).to(tr.float64)
    x = tr.tensor(rnd(t, b, d).astype(np.float64), requires_grad=True)
    g = tr.tensor(rnd(t, b, h).astype(np.float64))
    runs = [_pass(m, x, True, on, lambda: m(x)[0], lambda out: out.backward(g), (x, m.weight_hh_l0))
            for on in (False, True)]
    for a, c in zip(*runs):
        np.testing.assert_array_equal(a, c)


def test_backward_of_a_plain_forward_is_float32_inside_a_block():
    lin = nn.Linear(8, 3, seed=1)
    x = tr.tensor(rnd(4, 8), requires_grad=True)
    y = lin(x)
    with tr.autocast("cpu"):
        y.sum().backward()  # forward ran in float32: so does its backward
    np.testing.assert_allclose(x.grad.numpy(), np.ones((4, 3)) @ lin.weight.numpy().astype(np.float64), rtol=1e-6)


def _lstm_reference(x, w_ih, w_hh, b, h0, c0):
    """A time-major LSTM in float64 whose products see bf16-rounded operands, as autocast's do."""
    def sig(v):
        return 1 / (1 + np.exp(-v))
    h, c = h0.astype(np.float64), c0.astype(np.float64)
    xw = r64(x.reshape(-1, x.shape[-1])) @ r64(w_ih).T + b
    xw = xw.reshape(x.shape[0], x.shape[1], -1)
    hs = []
    for t in range(x.shape[0]):
        g = xw[t] + r64(h.astype(np.float32)) @ r64(w_hh).T
        i, f, gg, o = np.split(g, 4, axis=1)
        c = sig(f) * c + sig(i) * np.tanh(gg)
        h = sig(o) * np.tanh(c)
        hs.append(h)
    return np.stack(hs)


@pytest.mark.parametrize("b,t,d,h", [(3, 4, 5, 6), (32, 12, 16, 64), (16, 6, 24, 128)])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("fuse", [True, False], ids=["proj-per-step", "proj-whole-seq"])
def test_lstm_forward_against_a_rounding_reference(b, t, d, h, train, fuse, nthreads, monkeypatch):
    monkeypatch.setattr(CPUBackend, "FUSE_INPUT_PROJECTION_BF16", fuse)  # the input projection inside the loop,
    monkeypatch.setattr(CPUBackend, "FUSE_INPUT_PROJECTION_BF16_TRAIN", fuse)  # or one GEMM before it
    m = nn.LSTM(d, h, seed=3)
    x = tr.tensor(rnd(t, b, d), requires_grad=train)
    with tr.autocast("cpu"), (tr.enable_grad() if train else tr.no_grad()):
        out16 = m(x)[0].numpy()
    out32 = m(x)[0].numpy()
    bias = (m.bias_ih_l0.numpy() + m.bias_hh_l0.numpy()).astype(np.float64)
    ref = _lstm_reference(x.numpy(), m.weight_ih_l0.numpy(), m.weight_hh_l0.numpy(), bias, np.zeros((b, h), np.float32),
                          np.zeros((b, h), np.float32))
    # float32 vs float64 arithmetic may flip a rare bf16 rounding of h: a max bound, and the median tight
    assert np.median(np.abs(out16 - ref)) < 1e-6
    assert np.abs(out16 - ref).max() < 5e-3
    assert np.median(np.abs(out32 - ref)) > 1e-5  # float32 products are told apart from bf16 ones


def _pass(m, x, fused, bf16_on, forward, backward, params):
    """One forward (under autocast when ``bf16_on``) and backward of layer ``m`` on the fused or composite path:
    ``[output, *grads of params]`` as arrays."""
    m.fused = fused
    m.zero_grad()
    x.grad = None
    with tr.autocast("cpu", enabled=bf16_on):
        out = forward()
    backward(out)
    return [out.numpy()] + [p.grad.numpy() for p in params]


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("b,t,d,h", [(4, 5, 3, 6), (32, 20, 16, 64)])
def test_fused_layer_gradients_match_the_composite_under_autocast(mode, b, t, d, h, nthreads):
    """The composite path multiplies through Linear/matmul, so under autocast it is an independent bf16 oracle
    for the fused kernels' forward and BPTT (input projection, each step's product, weight gradients)."""
    m = getattr(nn, mode)(d, h, seed=5)
    x = tr.tensor(rnd(t, b, d), requires_grad=True)
    g = tr.tensor(rnd(t, b, h))

    def run(fused, bf16_on):
        return _pass(m, x, fused, bf16_on, lambda: m(x)[0], lambda out: out.backward(g),
                     (x, m.weight_ih_l0, m.weight_hh_l0, m.bias_hh_l0))

    got = {fused: run(fused, True) for fused in (True, False)}
    f32 = run(True, False)
    # a rare bf16 rounding flipped by float32 summation order moves a few entries (and, through a tanh RNN's
    # 20 steps, the weight gradients' medians up to 7e-5 measured): a max bound for all, and for the output
    # and the input gradient a median bound tight enough to tell bf16 products from float32 ones (>= 2e-4)
    for i, (a, c, f) in enumerate(zip(got[True], got[False], f32)):
        scale = np.abs(c).max()
        assert np.abs(a - c).max() <= 5e-3 * scale
        assert np.median(np.abs(a - c)) <= (1e-5 if i < 2 else 2e-4) * scale
        if i < 2:
            assert np.median(np.abs(f - c)) > 3e-5 * scale  # float32 products are told apart


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_stacked_bidirectional_packed_layers_under_autocast(mode):
    """Two layers, both directions, padded sequences packed: every FusedRecurrence node (masked, reversed)
    under autocast against the composite path under autocast."""
    m = getattr(nn, mode)(8, 32, num_layers=2, bidirectional=True, batch_first=True, seed=6)
    x = tr.tensor(rnd(5, 9, 8), requires_grad=True)
    lengths = [9, 7, 4, 9, 2]

    def forward():
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return nn.utils.rnn.pad_packed_sequence(m(packed)[0], batch_first=True)[0]

    def run(fused, bf16_on):
        return _pass(m, x, fused, bf16_on, forward, lambda out: (out * out).sum().backward(),
                     (x, m.weight_hh_l1_reverse))

    got = {fused: run(fused, True) for fused in (True, False)}
    for a, c in zip(got[True], got[False]):
        scale = np.abs(c).max()
        assert np.abs(a - c).max() <= 5e-3 * scale
        assert np.median(np.abs(a - c)) <= 1e-4 * scale
    out32 = run(True, False)[0]
    real = np.arange(9)[None, :] < np.array(lengths)[:, None]  # the padding is zero either way
    c = got[False][0]
    assert np.median(np.abs(got[True][0] - c)[real]) <= 1e-6 * np.abs(c).max()
    assert np.median(np.abs(out32 - c)[real]) > 3e-5 * np.abs(c).max()  # float32 products told apart


@pytest.mark.parametrize("mode", ["LSTMCell", "GRUCell", "RNNCell"])
def test_fused_cells_under_autocast(mode):
    cell = getattr(nn, mode)(10, 12, seed=2)
    x = tr.tensor(rnd(6, 10), requires_grad=True)
    h = tr.tensor(rnd(6, 12), requires_grad=True)
    state = (h, tr.tensor(rnd(6, 12))) if mode == "LSTMCell" else h
    res = {}
    for fused in (True, False):
        cell.fused = fused
        cell.zero_grad()
        x.grad = h.grad = None
        with tr.autocast("cpu"):
            out = cell(x, state)
        (out[0] if isinstance(out, tuple) else out).sum().backward()
        res[fused] = [x.grad.numpy(), h.grad.numpy(), cell.weight_hh.grad.numpy()]
    for a, c in zip(res[True], res[False]):
        np.testing.assert_allclose(a, c, rtol=5e-3, atol=5e-3 * np.abs(c).max())


def test_compiled_cell_runs_float32_under_autocast():
    w = tr.tensor(rnd(4, 4) * 0.5)
    xs = tr.tensor(rnd(5, 3, 4))

    def step(hh, xx):
        hn = (hh @ w + xx).tanh()
        return hn, hn

    _, ys32 = tr.scan(step, tr.zeros(3, 4), xs, compile=True)
    with tr.autocast("cpu"):
        _, ys16 = tr.scan(step, tr.zeros(3, 4), xs, compile=True)
    np.testing.assert_array_equal(ys16.numpy(), ys32.numpy())


# ------------------------------------------------------------------------------------------
# the API


def test_state_enabled_nesting_decorator_and_threads():
    assert not tr.is_autocast_enabled("cpu")
    with tr.autocast("cpu", dtype=tr.bfloat16):
        assert tr.is_autocast_enabled()
        with tr.autocast("cpu", enabled=False):
            assert not tr.is_autocast_enabled()
        assert tr.is_autocast_enabled()
        seen = []
        t = threading.Thread(target=lambda: seen.append(tr.is_autocast_enabled()))
        t.start()
        t.join()
        assert seen == [False]  # per thread, as PyTorch's
    assert not tr.is_autocast_enabled()
    assert tr.get_autocast_dtype("cpu") is tr.bfloat16

    @tr.autocast("cpu")
    def inside():
        return tr.is_autocast_enabled()

    assert inside() and inside() and not tr.is_autocast_enabled()
    ac = tr.autocast("cpu")
    with ac:
        with ac:  # the same object entered twice
            pass
        assert tr.is_autocast_enabled()
    assert not tr.is_autocast_enabled()


def test_state_restored_when_the_block_raises():
    with pytest.raises(KeyError):
        with tr.autocast("cpu"):
            raise KeyError("x")
    assert not tr.is_autocast_enabled()


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="device_type 'cuda'"):
        tr.autocast("cuda")
    with pytest.raises(ValueError, match="bfloat16 only"):
        tr.autocast("cpu", dtype=tr.float16)
    with pytest.raises(TypeError, match="device_type must be a string"):
        tr.autocast(0)
    with pytest.raises(TypeError, match="enabled must be a bool"):
        tr.autocast("cpu", enabled="yes")
    with pytest.raises(TypeError, match="bfloat16 tensors are not supported"):
        tr.zeros(3, dtype=tr.bfloat16)
    with pytest.raises(TypeError, match="bfloat16 tensors are not supported"):
        tr.tensor([1.0]).to(tr.bfloat16)
    with pytest.raises(ValueError, match="device_type"):
        tr.is_autocast_enabled("cuda")


# ------------------------------------------------------------------------------------------
# without oneMKL's bf16 GEMM: the same numbers from float32 GEMMs of the rounded operands


def test_without_onemkl_the_numbers_are_the_same(monkeypatch):
    a, b, bias = rnd(40, 30), rnd(30, 20), rnd(20)
    native = bf16.matmul(a, b, bias)
    m = nn.LSTM(16, 64, seed=4)
    x = tr.tensor(rnd(10, 32, 16))
    with tr.autocast("cpu"), tr.no_grad():
        out_native = m(x)[0].numpy()
    monkeypatch.setattr(bf16, "NATIVE", False)
    assert not tr.amp.native_bf16()
    np.testing.assert_allclose(bf16.matmul(a, b, bias), native, rtol=1e-5, atol=1e-5)
    with precision.using(True):
        assert CPUBackend()._seq_kernel("lstm", np.dtype(np.float32), 32, 64) == (False, False)  # per-step loop
    with tr.autocast("cpu"), tr.no_grad():
        out_emulated = m(x)[0].numpy()
    assert np.median(np.abs(out_emulated - out_native)) < 1e-6
    assert np.abs(out_emulated - out_native).max() < 5e-3
    with pytest.raises(RuntimeError, match="NATIVE is False"):
        bf16.pack_b(b, 4)


def test_onemkl_bf16_is_loaded_where_the_mkl_extra_is():
    # CI installs the mkl extra: the fast path must be the one these tests exercise
    assert "mkl" in bf16.blas.PROVIDERS and bf16.NATIVE and tr.amp.native_bf16()
    assert threads.get_num_threads() >= 1
