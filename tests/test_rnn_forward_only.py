"""Recurrent layers: the forward-only path (``no_grad`` or nothing requiring grad) and empty batches.

The forward-only path keeps no store for backward: it must give the same outputs as a training
forward (bit for bit: the same kernels run), be the path actually taken (the backend is asked
with ``train=False``), and allocate far less (measured with tracemalloc, which sees NumPy's
allocations). A batch of 0 gives empty outputs and zero-batch states, as PyTorch does.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from _rnn_paths import BRANCHES, MODES, PATHS, cpu_branch, make_layer, on_path  # noqa: I001  (tests/ helper)

import tinygrad_rnn as tr
from tinygrad_rnn.backend import cpu as cpu_backend


def flat(res) -> list[np.ndarray]:
    out, hn = res
    return [t.numpy() for t in ([out, *hn] if isinstance(hn, tuple) else [out, hn])]


@pytest.fixture
def spy_train(monkeypatch):
    """Record the ``train`` argument of every CPU recurrent forward that ran (``rnn_forward`` takes the
    layer's input, whichever way the backend then makes the projection)."""
    seen: list[bool] = []
    real = cpu_backend.CPUBackend.rnn_forward

    def spy(self, *a, train=True, **kw):
        seen.append(train)
        return real(self, *a, train=train, **kw)

    monkeypatch.setattr(cpu_backend.CPUBackend, "rnn_forward", spy)
    return seen


@pytest.mark.parametrize("branch", list(BRANCHES))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("t_len", [1, 2, 7], ids=lambda t: f"T{t}")
def test_forward_only_equals_training_forward(mode, branch, t_len, spy_train):
    # T = 1, 2 and odd/even lengths: the forward-only LSTM keeps c in a ping-pong pair of rows
    rng = np.random.default_rng(1)
    for bidirectional, num_layers, lengths in ((False, 1, None), (True, 2, [t_len, 1, t_len])):
        m = make_layer(mode, 3, 5, num_layers=num_layers, bidirectional=bidirectional)
        x = tr.tensor(rng.standard_normal((t_len, 3, 3)))
        h0 = tr.tensor(rng.standard_normal((num_layers * (1 + bidirectional), 3, 5)))
        hx = (h0, h0 * 0.5) if mode == "lstm" else h0
        with cpu_branch(branch):
            spy_train.clear()
            train = flat(m(x, hx, lengths=lengths))
            assert spy_train and all(spy_train), "parameters require grad: the training forward must run"
            spy_train.clear()
            with tr.no_grad():
                infer = flat(m(x, hx, lengths=lengths))
            assert spy_train and not any(spy_train), "no_grad: the forward-only path must run"
        for a, b in zip(train, infer):
            np.testing.assert_array_equal(a, b)


def test_forward_only_when_nothing_requires_grad(spy_train):
    m = make_layer("lstm", 3, 4)
    for p in m.parameters():
        p.requires_grad = False
    out, _ = m(tr.randn(4, 2, 3, dtype=tr.float64, seed=0))
    assert spy_train == [False]
    assert not out.requires_grad
    spy_train.clear()
    x = tr.randn(4, 2, 3, dtype=tr.float64, seed=0, requires_grad=True)
    out, _ = m(x)  # the input wants a gradient: the store is needed
    assert spy_train == [True]
    out.sum().backward()
    assert x.grad is not None and np.all(np.isfinite(x.grad.numpy()))


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        keep = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del keep
    return peak


@pytest.mark.parametrize("branch", ["sequence_kernel", "per_step_vectorised"])
@pytest.mark.parametrize("mode", MODES)
def test_forward_only_allocates_no_store(mode, branch):
    """Peak memory of a no_grad forward: the input, its projection (G x output, the one
    intermediate that grows with T), the output and the states, and no store: well below the
    training forward, which also keeps per-step gates (and c for the LSTM)."""
    t_, b_, d_, h_ = 64, 8, 16, 32
    g = {"lstm": 4, "gru": 3}.get(mode, 1)
    m = make_layer(mode, d_, h_, dtype=tr.float32)
    x = tr.randn(t_, b_, d_, seed=0)
    with cpu_branch(branch):
        m(x)  # warm-up: compile, caches
        with tr.no_grad():
            infer_peak = _peak_bytes(lambda: m(x))
        train_peak = _peak_bytes(lambda: m(x))
    out_bytes = t_ * b_ * h_ * 4
    # projection + (T+1)-row h_all, plus per-step scratch and the small states
    bound = g * out_bytes + out_bytes + 8 * b_ * h_ * g * 4 + 64 * 1024
    assert infer_peak <= bound, (infer_peak, bound)
    if mode in ("lstm", "gru"):
        # training keeps a (T, B, 4H) store on top: at least that much more
        assert train_peak - infer_peak >= 4 * out_bytes * 0.9, (train_peak, infer_peak)


@pytest.mark.parametrize("branch", [b for b in ("sequence_kernel", "sequence_kernel_rows") if b in BRANCHES])
@pytest.mark.parametrize("mode", MODES)
def test_forward_only_keeps_no_projection_either(mode, branch):
    """Where the kernel makes each step's input projection itself (FUSE_INPUT_PROJECTION), a no_grad
    forward holds only the input, the (T+1)-row h_all, small states and scratch -- and, with oneMKL,
    its packed weights (workspace whose size MKL decides, counted here exactly) -- not the (T, B, G*H)
    projection, which alone would exceed the slack allowed below."""
    from tinygrad_rnn.backend import blas

    t_, b_, d_, h_ = 64, 8, 16, 32
    g = {"lstm": 4, "gru": 3}.get(mode, 1)
    m = make_layer(mode, d_, h_, dtype=tr.float32)
    x = tr.randn(t_, b_, d_, seed=0)
    be = tr.get_backend("cpu")
    with cpu_branch(branch):
        assert be.FUSE_INPUT_PROJECTION
        with tr.no_grad():
            m(x)  # warm-up: compile, caches
            infer_peak = _peak_bytes(lambda: m(x))
        blocks = be._row_blocks(mode if mode != "rnn_relu" else "rnn_tanh", t_, b_, h_, True) if branch.endswith("rows") else 1
    packs = 0
    if branch.endswith("rows"):
        rows = {b_ * (i + 1) // blocks - b_ * i // blocks for i in range(blocks)}
        w = np.zeros((g * h_, max(d_, h_)), np.float32)
        packs = sum(blas.pack_b(np.ascontiguousarray(w[:, :k]), r, True).nbytes + 64 for r in rows for k in (d_, h_))
    out_bytes = t_ * b_ * h_ * 4
    projection = g * out_bytes
    slack = 16 * 1024
    assert projection > 3 * slack
    bound = (t_ + 1) * b_ * h_ * 4 + t_ * b_ * d_ * 4 + 8 * b_ * h_ * g * 4 + packs + slack
    assert infer_peak <= bound, (infer_peak, bound)


# -- a batch of 0 (issue 9): PyTorch returns empty outputs and zero-batch states ---------------


@pytest.mark.parametrize("batch_first", [False, True], ids=["tf", "bf"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", MODES)
def test_batch_of_zero(mode, path, batch_first):
    m = make_layer(mode, 3, 4, num_layers=2, bidirectional=True, batch_first=batch_first)
    shape = (0, 5, 3) if batch_first else (5, 0, 3)
    x = tr.tensor(np.zeros(shape), requires_grad=True)
    with on_path(m, path):
        out, hn = m(x)
    assert out.shape == ((0, 5, 8) if batch_first else (5, 0, 8))
    states = hn if isinstance(hn, tuple) else (hn,)
    for s in states:
        assert s.shape == (4, 0, 4)
    (out.sum() + sum(s.sum() for s in states)).backward()
    assert x.grad.shape == shape
    for p in m.parameters():
        assert p.grad is not None and p.grad.shape == p.shape
        np.testing.assert_array_equal(p.grad.numpy(), 0.0)
    with tr.no_grad(), on_path(m, path):
        out2, _ = m(x)
    assert out2.shape == out.shape


@pytest.mark.torch
@pytest.mark.parametrize("mode", MODES)
def test_batch_of_zero_matches_torch_shapes(mode):
    import torch
    m = make_layer(mode, 3, 4)
    tm = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(mode)
    tm = tm(3, 4) if tm else torch.nn.RNN(3, 4, nonlinearity=mode[4:])
    ours = flat(m(tr.tensor(np.zeros((5, 0, 3)))))
    out, hn = tm(torch.zeros(5, 0, 3))
    theirs = [out, *hn] if isinstance(hn, tuple) else [out, hn]
    assert [a.shape for a in ours] == [tuple(t.shape) for t in theirs]


@pytest.mark.parametrize("mode", MODES)
def test_bias_gradients_are_separate_arrays_that_accumulate(mode):
    # LSTM/RNN: both bias gradients equal the summed gate gradient, computed once; each
    # parameter must still own its gradient, so two backward passes accumulate independently
    m = make_layer(mode, 3, 4)
    x = tr.randn(5, 2, 3, dtype=tr.float64, seed=0)
    out, _ = m(x)
    out.sum().backward()
    first_ih, first_hh = m.bias_ih_l0.grad.numpy().copy(), m.bias_hh_l0.grad.numpy().copy()
    assert not np.shares_memory(m.bias_ih_l0.grad.numpy(), m.bias_hh_l0.grad.numpy())
    out, _ = m(x)
    out.sum().backward()
    np.testing.assert_allclose(m.bias_ih_l0.grad.numpy(), 2 * first_ih, rtol=1e-14)
    np.testing.assert_allclose(m.bias_hh_l0.grad.numpy(), 2 * first_hh, rtol=1e-14)
    m.bias_ih_l0.requires_grad = False  # only b_hh wanted: still right
    m.zero_grad()
    out, _ = m(x)
    out.sum().backward()
    np.testing.assert_allclose(m.bias_hh_l0.grad.numpy(), first_hh, rtol=1e-14)
    assert m.bias_ih_l0.grad is None
