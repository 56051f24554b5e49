"""Recurrent layers: fused vs composite agreement (float32 and float64), padded batches (``lengths``),
truncated BPTT, which path runs, and the error messages.

The fused path runs under every branch of the CPU backend (``BRANCHES``): the whole-sequence Numba
kernel, and the per-step loop of one BLAS product plus one pointwise kernel per step, the Numba one
or the vectorised NumPy one of wide layers.
"""
from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from _rnn_paths import BRANCHES, MODES, PATHS, cpu_branch, make_layer, on_path  # noqa: E402, I001  (tests/ helper)
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_rnn as tr
from tinygrad_rnn.backend import cpu as cpu_backend
from tinygrad_rnn.nn.rnn import FusedRecurrence


def outputs(res) -> list[tr.Tensor]:
    out, hn = res
    return [out, *hn] if isinstance(hn, tuple) else [out, hn]


def weights_for(outs, seed: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, o.shape) for o in outs]


def weighted_sum(outs, weights) -> tr.Tensor:
    total = None
    for o, w in zip(outs, weights, strict=True):
        term = (o * tr.tensor(w.astype(o.dtype))).sum()
        total = term if total is None else total + term
    return total


def run(m, arrays, hx_count, lengths, path, dtype):
    """Forward + backward of a fixed weighted sum of all outputs; returns (outputs, input grads, param grads)."""
    xs = [tr.tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    hx = None if hx_count == 0 else (xs[1] if hx_count == 1 else tuple(xs[1:]))
    m.zero_grad()
    with on_path(m, path):
        outs = outputs(m(xs[0], hx, lengths=lengths))
        weighted_sum(outs, weights_for(outs)).backward()
    for o in outs:
        assert o.dtype == dtype
    for t in xs + list(m.parameters()):
        assert t.grad is not None and t.grad.dtype == dtype
    return [o.numpy() for o in outs], [t.grad.numpy() for t in xs], [p.grad.numpy() for p in m.parameters()]


def assert_close_all(got, ref, rtol, atol_rel, what):
    for i, (a, b) in enumerate(zip(got, ref, strict=True)):
        assert a.shape == b.shape, (what, i, a.shape, b.shape)
        scale = max(1.0, float(np.abs(b).max(initial=0)))
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol_rel * scale, err_msg=f"{what} #{i}")


# ---------------------------------------------------------------------------------------
# the two CPU branches really are two code paths


@pytest.mark.parametrize("mode", MODES)
def test_thresholds_select_the_branch(mode, monkeypatch):
    calls = {"loop_forward": 0, "loop_backward": 0, "vectorised_step": 0, "blas_kernel": 0, "row_blocks": 0}

    def spy(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(cpu_backend, "recurrence_forward", spy("loop_forward", cpu_backend.recurrence_forward))
    monkeypatch.setattr(cpu_backend, "recurrence_backward", spy("loop_backward", cpu_backend.recurrence_backward))
    monkeypatch.setattr(cpu_backend, "_step_forward_vectorised", spy("vectorised_step", cpu_backend._step_forward_vectorised))
    be = tr.get_backend("cpu")
    pick = be._seq_kernel

    def counted_pick(*a):
        seq, use_blas = pick(*a)
        calls["blas_kernel"] += seq and use_blas
        return seq, use_blas

    monkeypatch.setattr(be, "_seq_kernel", counted_pick)
    blocks = be._row_blocks

    def counted_blocks(*a):
        n = blocks(*a)
        calls["row_blocks"] += n > 1
        return n

    monkeypatch.setattr(be, "_row_blocks", counted_blocks)
    m = make_layer(mode, 3, 4, bidirectional=True)
    x = tr.randn(5, 2, 3, dtype=tr.float64, requires_grad=True)
    expected = {  # two directions: one loop each; five steps each; blas_kernel: forward + backward per direction
        "sequence_kernel": {"loop_forward": 0, "loop_backward": 0, "vectorised_step": 0, "blas_kernel": 0,
                            "row_blocks": 0},
        "sequence_kernel_blas": {"loop_forward": 0, "loop_backward": 0, "vectorised_step": 0, "blas_kernel": 4,
                                 "row_blocks": 0},
        "sequence_kernel_rows": {"loop_forward": 0, "loop_backward": 0, "vectorised_step": 0, "blas_kernel": 4,
                                 "row_blocks": 4},
        "per_step": {"loop_forward": 2, "loop_backward": 2, "vectorised_step": 0, "blas_kernel": 0, "row_blocks": 0},
        "per_step_vectorised": {"loop_forward": 2, "loop_backward": 2, "vectorised_step": 10, "blas_kernel": 0,
                                "row_blocks": 0},
    }
    for branch, want in expected.items():
        if branch not in BRANCHES:  # a provider-dependent branch this install cannot take
            continue
        calls.update(dict.fromkeys(calls, 0))
        with cpu_branch(branch):
            outputs(m(x))[0].sum().backward()
        assert calls == want, branch
    # the default thresholds keep this small layer on the whole-sequence kernel
    calls.update(dict.fromkeys(calls, 0))
    outputs(m(x))[0].sum().backward()
    assert calls == expected["sequence_kernel"]


# ---------------------------------------------------------------------------------------
# fused vs composite, float64 and float32, every configuration

CONFIGS = list(itertools.product(MODES, (1, 2), (False, True), (True, False), (False, True), (False, True), (False, True)))


def _config_id(c) -> str:
    mode, layers, bidir, bias, state, lengths, batch_first = c
    return "-".join([mode, f"L{layers}", "bi" if bidir else "uni", "bias" if bias else "nobias",
                     "h0" if state else "noh0", "lengths" if lengths else "full", "bf" if batch_first else "tf"])


def check_paths_agree(mode, layers, bidir, bias, with_state, lengths, batch_first, T, B, D, H, seed, unbatched=False):
    m64 = make_layer(mode, D, H, dtype=tr.float64, seed=seed, num_layers=layers, bidirectional=bidir, bias=bias,
                     batch_first=batch_first)
    m32 = make_layer(mode, D, H, dtype=tr.float32, seed=seed, num_layers=layers, bidirectional=bidir, bias=bias,
                     batch_first=batch_first)
    m32.load_state_dict(m64.state_dict())
    rng = np.random.default_rng(seed + 1)
    dirs = layers * (2 if bidir else 1)
    if unbatched:
        x_shape, s_shape = (T, D), (dirs, H)
    else:
        x_shape, s_shape = ((B, T, D) if batch_first else (T, B, D)), (dirs, B, H)
    n_state = (2 if mode == "lstm" else 1) if with_state else 0
    arrays = [rng.uniform(-1.5, 1.5, x_shape)] + [rng.uniform(-1, 1, s_shape) for _ in range(n_state)]
    lens = None if lengths is None else np.asarray(lengths)
    ref = run(m64, arrays, n_state, lens, "composite", tr.float64)
    ref_flat = ref[0] + ref[1] + ref[2]
    for path in PATHS[:-1]:
        got = run(m64, arrays, n_state, lens, path, tr.float64)
        assert_close_all(got[0] + got[1] + got[2], ref_flat, 1e-12, 1e-12, f"float64 {path}")
    for path in PATHS:
        got = run(m32, arrays, n_state, lens, path, tr.float32)
        assert_close_all(got[0], ref[0], 1e-5, 2e-6, f"float32 {path} values")
        assert_close_all(got[1] + got[2], ref[1] + ref[2], 1e-4, 2e-5, f"float32 {path} gradients")
    if lens is not None:  # padded steps: exactly zero output on every path
        out = ref[0][0]
        t_first = np.swapaxes(out, 0, 1) if batch_first else out
        for b, n in enumerate(lengths):
            assert np.all(t_first[n:, b] == 0)


@pytest.mark.parametrize("config", CONFIGS, ids=[_config_id(c) for c in CONFIGS])
def test_fused_matches_composite_every_configuration(config):
    mode, layers, bidir, bias, state, with_lengths, batch_first = config
    check_paths_agree(mode, layers, bidir, bias, state, (4, 1, 2) if with_lengths else None, batch_first,
                      T=4, B=3, D=3, H=3, seed=CONFIGS.index(config))


@pytest.mark.parametrize("mode", MODES)
def test_fused_matches_composite_unbatched(mode):
    for layers, bidir, state in itertools.product((1, 2), (False, True), (False, True)):
        check_paths_agree(mode, layers, bidir, True, state, None, False, T=4, B=1, D=3, H=3, seed=layers, unbatched=True)


@pytest.mark.parametrize("mode", MODES)
@given(data=st.data())
def test_fused_matches_composite_hypothesis(mode, data):
    T, B = data.draw(st.integers(1, 6), label="T"), data.draw(st.integers(1, 3), label="B")
    lengths = None
    if data.draw(st.booleans(), label="with_lengths"):
        lengths = data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B), label="lengths")
    check_paths_agree(mode, data.draw(st.integers(1, 2)), data.draw(st.booleans()), data.draw(st.booleans()),
                      data.draw(st.booleans()), lengths, data.draw(st.booleans()), T=T, B=B,
                      D=data.draw(st.integers(1, 4)), H=data.draw(st.integers(1, 4)),
                      seed=data.draw(st.integers(0, 2**31 - 1)))


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_fused_matches_composite_above_the_kernel_threshold(mode):
    """A layer big enough that the default threshold puts BLAS in the sequence kernel by itself."""
    m = make_layer(mode, 8, 80, num_layers=1, bidirectional=True, seed=1)
    be = tr.get_backend("cpu")
    assert 8 * (4 if mode == "lstm" else 3) * 80 * 80 > be.SMALL_STEP_MACS  # batch * gates * H * H per step
    arrays = [np.random.default_rng(0).uniform(-1, 1, (6, 8, 8))]
    fused = m(tr.tensor(arrays[0]))
    assert m.last_path == "fused"
    m.fused = False
    comp = m(tr.tensor(arrays[0]))
    assert_close_all([o.numpy() for o in outputs(fused)], [o.numpy() for o in outputs(comp)], 1e-12, 1e-12, mode)


# ---------------------------------------------------------------------------------------
# lengths: packed-sequence semantics


def _lengths_problem(mode, lengths, T, batch_first=False, layers=2, bidir=True, seed=0):
    D, H, B = 3, 4, len(lengths)
    m = make_layer(mode, D, H, seed=seed, num_layers=layers, bidirectional=bidir, batch_first=batch_first)
    rng = np.random.default_rng(seed + 1)
    x = rng.uniform(-1.5, 1.5, (T, B, D))  # time-major here; transposed for batch_first below
    n_state = 2 if mode == "lstm" else 1
    states = [rng.uniform(-1, 1, (layers * (2 if bidir else 1), B, H)) for _ in range(n_state)]
    return m, x, states


def _call(m, x_tm, states, lengths=None):
    """Run m on time-major data (transposing for batch_first); returns leaves and time-major outputs."""
    xt = tr.tensor(np.swapaxes(x_tm, 0, 1).copy() if m.batch_first else x_tm, requires_grad=True)
    st_ = [tr.tensor(s, requires_grad=True) for s in states]
    outs = outputs(m(xt, st_[0] if len(st_) == 1 else tuple(st_), lengths=lengths))
    if m.batch_first:
        outs[0] = outs[0].transpose(0, 1)
    return xt, st_, outs


@pytest.mark.parametrize("batch_first", [False, True], ids=["tf", "bf"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lengths", [(5, 1, 3, 5), (5, 1, 1, 1), (1, 1, 1)], ids=["mixed", "all-but-one-padded", "all-length-1"])
def test_lengths_equal_running_each_sequence_alone(mode, path, batch_first, lengths):
    """Outputs at real steps, h_n (c_n) and every gradient equal those of each sequence run alone,
    unpadded; the output at padded steps is exactly 0 and the input there gets exactly 0 gradient.
    Bidirectional: the reverse direction starts at each sequence's own last step."""
    T = 5 if max(lengths) == 5 else 4
    m, x, states = _lengths_problem(mode, lengths, T, batch_first)
    rng = np.random.default_rng(9)
    w_out = rng.uniform(-1, 1, (T, len(lengths), 4 * 2))
    w_states = [rng.uniform(-1, 1, s.shape) for s in states]
    with on_path(m, path):
        xt, st_, outs = _call(m, x, states, np.asarray(lengths))
        weighted_sum(outs, [w_out] + w_states).backward()
    out = outs[0].numpy()
    grads = [p.grad.numpy().copy() for p in m.parameters()]
    dx = xt.grad.numpy()
    dx = np.swapaxes(dx, 0, 1) if batch_first else dx
    for b, n in enumerate(lengths):
        assert np.all(out[n:, b] == 0), "padded output must be exactly 0"
        assert np.all(dx[n:, b] == 0), "padded input must get exactly 0 gradient"
    alone_grads = [np.zeros_like(g) for g in grads]
    m.zero_grad()
    for b, n in enumerate(lengths):
        with on_path(m, path):
            xb, sb, ob = _call(m, x[:n, b:b + 1], [s[:, b:b + 1] for s in states])
            weighted_sum(ob, [w_out[:n, b:b + 1]] + [w[:, b:b + 1] for w in w_states]).backward()
        np.testing.assert_allclose(out[:n, b:b + 1], ob[0].numpy(), rtol=1e-12, atol=1e-13)
        for full, alone in zip(outs[1:], ob[1:]):
            np.testing.assert_allclose(full.numpy()[:, b:b + 1], alone.numpy(), rtol=1e-12, atol=1e-13)
        dxb = np.swapaxes(xb.grad.numpy(), 0, 1) if batch_first else xb.grad.numpy()
        np.testing.assert_allclose(dx[:n, b:b + 1], dxb, rtol=1e-10, atol=1e-12)
        for s_full, s_alone in zip(st_, sb):
            np.testing.assert_allclose(s_full.grad.numpy()[:, b:b + 1], s_alone.grad.numpy(), rtol=1e-10, atol=1e-12)
        for acc, p in zip(alone_grads, m.parameters()):
            acc += p.grad.numpy()
        m.zero_grad()
    assert_close_all(grads, alone_grads, 1e-10, 1e-12, "parameter gradients vs per-sequence runs")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", MODES)
def test_padded_input_values_change_nothing(mode, path):
    lengths = (6, 2, 1, 4)
    m, x, states = _lengths_problem(mode, lengths, 6, seed=3)
    weights = None

    def loss_and_grads(x_tm):
        nonlocal weights
        m.zero_grad()
        with on_path(m, path):
            xt, st_, outs = _call(m, x_tm, states, np.asarray(lengths))
            weights = weights or weights_for(outs)
            loss = weighted_sum(outs, weights)
            loss.backward()
        return [loss.numpy()] + [o.numpy() for o in outs] + [t.grad.numpy() for t in [xt, *st_, *m.parameters()]]

    base = loss_and_grads(x)
    x2 = x.copy()
    for b, n in enumerate(lengths):
        x2[n:, b] = np.random.default_rng(b).uniform(-50, 50, x2[n:, b].shape)
    changed = loss_and_grads(x2)
    for a, b in zip(base, changed, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("path", PATHS)
def test_lengths_all_full_equals_no_lengths(path):
    m, x, states = _lengths_problem("lstm", (5, 5), 5)
    with on_path(m, path):
        _, _, a = _call(m, x, states, np.array([5, 5]))
        _, _, b = _call(m, x, states)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-13, atol=1e-14)


def test_lengths_accepts_a_tensor_and_any_integer_dtype():
    m, x, states = _lengths_problem("gru", (3, 1), 3)
    ref = _call(m, x, states, np.array([3, 1]))[2]
    for lens in (tr.tensor(np.array([3, 1])), np.array([3, 1], dtype=np.int32), np.array([3, 1], dtype=np.uint8), [3, 1]):
        got = _call(m, x, states, lens)[2]
        for u, v in zip(got, ref):
            np.testing.assert_array_equal(u.numpy(), v.numpy())


# ---------------------------------------------------------------------------------------
# truncated BPTT


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_truncated_bptt_carries_detached_state(mode, path):
    m = make_layer(mode, 3, 4, num_layers=2, seed=2)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (10, 2, 3))
    lstm = mode == "lstm"
    with on_path(m, path):
        full = outputs(m(tr.tensor(x)))
        x1, x2 = tr.tensor(x[:6], requires_grad=True), tr.tensor(x[6:], requires_grad=True)
        out1, s1 = m(x1)
        carried = (s1[0].detach(), s1[1].detach()) if lstm else s1.detach()
        out2, s2 = m(x2, carried)
    # forward values: two chunks == one long run
    np.testing.assert_allclose(np.concatenate([out1.numpy(), out2.numpy()]), full[0].numpy(), rtol=1e-12, atol=1e-13)
    for a, b in zip(s2 if lstm else (s2,), full[1:]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-13)

    # backward on chunk 2 reaches only chunk 2's window
    loss2 = weighted_sum(outputs((out2, s2)), weights_for(outputs((out2, s2))))
    m.zero_grad()
    with on_path(m, path):
        loss2.backward()
    assert x1.grad is None and x2.grad is not None
    chunk2_grads = [p.grad.numpy().copy() for p in m.parameters()]
    # the same window computed from scratch with the carried state as a constant
    m.zero_grad()
    const = tuple(tr.tensor(c.numpy().copy()) for c in carried) if lstm else tr.tensor(carried.numpy().copy())
    with on_path(m, path):
        fresh = outputs(m(tr.tensor(x[6:]), const))
        weighted_sum(fresh, weights_for(fresh)).backward()
    assert_close_all(chunk2_grads, [p.grad.numpy() for p in m.parameters()], 1e-12, 1e-13, "chunk 2 gradients")
    # chunk 1's graph was not touched: it can still be backpropagated
    out1.sum().backward()
    assert x1.grad is not None and np.abs(x1.grad.numpy()).max() > 0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_backward_through_a_freed_graph_raises(mode, path):
    m = make_layer(mode, 3, 4, seed=2)
    x = tr.tensor(np.random.default_rng(0).uniform(-1, 1, (4, 2, 3)))
    with on_path(m, path):
        out, s = m(x)
        loss = out.sum()
        loss.backward()
        with pytest.raises(RuntimeError, match="retain_graph"):
            loss.backward()
        # carrying the state without detach() into a second chunk: its backward hits the freed graph
        out1, s1 = m(x)
        out1.sum().backward()
        out2, _ = m(x, s1)
        with pytest.raises(RuntimeError, match="retain_graph"):
            out2.sum().backward()
        # retain_graph=True keeps it: a second backward accumulates the same gradient again
        m.zero_grad()
        out3, _ = m(x)
        loss3 = out3.sum()
        loss3.backward(retain_graph=True)
        once = [p.grad.numpy().copy() for p in m.parameters()]
        loss3.backward()
        for g1, p in zip(once, m.parameters()):
            np.testing.assert_allclose(p.grad.numpy(), 2 * g1, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------
# which path runs


def _graph_nodes(t: tr.Tensor) -> list:
    seen, stack, nodes = set(), [t.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        nodes.append(node)
        stack.extend(p.grad_fn for p in node.parents)
    return nodes


@pytest.mark.parametrize("mode", MODES)
def test_fused_is_the_default_and_composite_is_a_switch(mode):
    m = make_layer(mode, 3, 4, num_layers=2, bidirectional=True)
    assert m.fused is True and m.last_path is None
    x = tr.randn(5, 2, 3, dtype=tr.float64, requires_grad=True)
    out = m(x)[0]
    assert m.last_path == "fused"
    fused_nodes = [n for n in _graph_nodes(out) if isinstance(n, FusedRecurrence)]
    assert len(fused_nodes) == 4  # one per layer and direction
    m.fused = False
    out_c = m(x)[0]
    assert m.last_path == "composite"
    nodes = _graph_nodes(out_c)
    assert not any(isinstance(n, FusedRecurrence) for n in nodes) and len(nodes) > 20
    np.testing.assert_allclose(out.numpy(), out_c.numpy(), rtol=1e-12, atol=1e-13)
    m.fused = True
    m(x)
    assert m.last_path == "fused"


def test_no_graph_under_no_grad():
    m = make_layer("lstm", 3, 4)
    with tr.no_grad():
        out, (h, c) = m(tr.randn(5, 2, 3, dtype=tr.float64))
    assert out.grad_fn is None and not out.requires_grad and h.grad_fn is None


# ---------------------------------------------------------------------------------------
# dropout between layers


def test_dropout_between_layers_only_in_training():
    gen = tr.Generator(0)
    m = tr.nn.LSTM(3, 4, num_layers=2, dropout=0.5, generator=gen, dtype=tr.float64)
    plain = tr.nn.LSTM(3, 4, num_layers=2, dtype=tr.float64)
    plain.load_state_dict(m.state_dict())
    x = tr.randn(5, 2, 3, dtype=tr.float64)
    a, b = m(x)[0].numpy(), m(x)[0].numpy()
    assert not np.allclose(a, b)  # a fresh mask each call
    assert not np.allclose(a, plain(x)[0].numpy())
    m.eval()
    np.testing.assert_array_equal(m(x)[0].numpy(), plain(x)[0].numpy())
    one_layer = tr.nn.GRU(3, 4, dropout=0.5, dtype=tr.float64)  # nothing between layers to drop
    np.testing.assert_array_equal(one_layer(x)[0].numpy(), one_layer(x)[0].numpy())


# ---------------------------------------------------------------------------------------
# errors name the shapes


def _raises(exc, *fragments):
    return pytest.raises(exc, match=".*".join(re.escape(f) for f in fragments))


@pytest.mark.parametrize("mode", MODES)
def test_layer_input_errors(mode):
    m = make_layer(mode, 3, 4, num_layers=2, dtype=tr.float32)
    x = tr.randn(5, 2, 3)
    with _raises(ValueError, "2 features", "(5, 2, 2)", "input_size is 3"):
        m(tr.randn(5, 2, 2))
    with _raises(ValueError, "(5, 2, 3, 1)"):
        m(tr.randn(5, 2, 3, 1))
    with _raises(ValueError, "(3,)"):
        m(tr.randn(3))
    with _raises(ValueError, "empty", "(0, 2, 3)"):
        m(tr.zeros(0, 2, 3))
    with _raises(TypeError, "Tensor", "ndarray"):
        m(np.zeros((5, 2, 3), dtype=np.float32))
    with _raises(TypeError, "float64", "float32"):
        m(tr.randn(5, 2, 3, dtype=tr.float64))
    good = tr.zeros(2, 2, 4)
    bad_shapes = [tr.zeros(1, 2, 4), tr.zeros(2, 3, 4), tr.zeros(2, 2, 5), tr.zeros(2, 4)]
    for bad in bad_shapes:
        hx = (bad, good) if mode == "lstm" else bad
        with _raises(ValueError, "(2, 2, 4)", str(bad.shape)):
            m(x, hx)
    if mode == "lstm":
        with _raises(ValueError, "c_0", "(2, 2, 4)", "(2, 2, 5)"):
            m(x, (good, tr.zeros(2, 2, 5)))
        with _raises(TypeError, "tuple"):
            m(x, good)
        with _raises(TypeError, "tuple"):
            m(x, (good, good, good))
        with _raises(TypeError, "h_0", "float64", "float32"):
            m(x, (good.double(), good))
    else:
        with _raises(TypeError, "h_0", "float64", "float32"):
            m(x, good.double())
        with _raises(TypeError, "Tensor", "ndarray"):
            m(x, np.zeros((2, 2, 4), dtype=np.float32))


@pytest.mark.parametrize("mode", MODES)
def test_lengths_errors(mode):
    m = make_layer(mode, 3, 4, dtype=tr.float32)
    x = tr.randn(5, 2, 3)
    with _raises(ValueError, "[1, 5]", "max 6"):
        m(x, lengths=[5, 6])
    with _raises(ValueError, "[1, 5]", "min 0"):
        m(x, lengths=[0, 3])
    with _raises(ValueError, "[1, 5]", "min -1"):
        m(x, lengths=np.array([-1, 3]))
    with _raises(ValueError, "(2,)", "(3,)"):
        m(x, lengths=[5, 3, 1])
    with _raises(ValueError, "(2,)", "(2, 1)"):
        m(x, lengths=[[5], [3]])
    with _raises(TypeError, "integers", "float64"):
        m(x, lengths=[5.0, 3.0])
    with _raises(TypeError, "integers", "float32"):
        m(x, lengths=tr.tensor([5.0, 3.0]))


def test_constructor_errors():
    with _raises(ValueError, "nonlinearity", "'tanhh'"):
        tr.nn.RNN(3, 4, nonlinearity="tanhh")
    with _raises(ValueError, "nonlinearity", "'Relu'"):
        tr.nn.RNNCell(3, 4, nonlinearity="Relu")
    for cls in (tr.nn.LSTM, tr.nn.GRU, tr.nn.RNN):
        with _raises(ValueError, "-1, 4, 1"):
            cls(-1, 4)
        with _raises(ValueError, "3, 0, 1"):
            cls(3, 0)
        with _raises(ValueError, "3, 4, 0"):
            cls(3, 4, num_layers=0)
        with _raises(ValueError, "dropout", "1.5"):
            cls(3, 4, dropout=1.5)
    for cls in (tr.nn.LSTMCell, tr.nn.GRUCell, tr.nn.RNNCell):
        with _raises(ValueError, "input_size=-2", "hidden_size=4"):
            cls(-2, 4)
        with _raises(ValueError, "input_size=3", "hidden_size=0"):
            cls(3, 0)


@pytest.mark.parametrize("mode", MODES)
def test_cell_errors(mode):
    cls = {"lstm": tr.nn.LSTMCell, "gru": tr.nn.GRUCell}.get(mode, tr.nn.RNNCell)
    kw = {"nonlinearity": mode[4:]} if mode.startswith("rnn_") else {}
    cell = cls(3, 4, **kw)
    with _raises(ValueError, "(2, 5)"):
        cell(tr.randn(2, 5))
    with _raises(ValueError, "(2, 2, 3)"):
        cell(tr.randn(2, 2, 3))
    with _raises(TypeError, "float64", "float32"):
        cell(tr.randn(2, 3, dtype=tr.float64))
    h_bad = tr.zeros(3, 4)
    hx = (h_bad, tr.zeros(2, 4)) if mode == "lstm" else h_bad
    with _raises(ValueError, "(2, 4)", "(3, 4)"):
        cell(tr.randn(2, 3), hx)
    hx = (tr.zeros(4), tr.zeros(2, 4)) if mode == "lstm" else tr.zeros(2, 4)
    with _raises(ValueError, "(4,)", "(2, 4)"):
        cell(tr.randn(3), hx)  # unbatched input wants an unbatched state
    if mode == "lstm":
        with _raises(TypeError, "tuple"):
            cell(tr.randn(2, 3), tr.zeros(2, 4))


@pytest.mark.parametrize("mode", MODES)
def test_unbatched_layer_matches_batch_of_one(mode):
    m = make_layer(mode, 3, 4, num_layers=2, bidirectional=True, batch_first=True)
    x = np.random.default_rng(0).uniform(-1, 1, (5, 3))
    out_u = outputs(m(tr.tensor(x)))
    out_b = outputs(m(tr.tensor(x[None])))
    assert out_u[0].shape == (5, 8) and out_u[1].shape == (4, 4)
    np.testing.assert_allclose(out_u[0].numpy(), out_b[0].numpy()[0], rtol=1e-13)
    for a, b in zip(out_u[1:], out_b[1:]):
        np.testing.assert_allclose(a.numpy(), b.numpy()[:, 0], rtol=1e-13)


@pytest.mark.parametrize("path", ["composite", *BRANCHES])
@pytest.mark.parametrize("cls", [tr.nn.LSTM, tr.nn.GRU, tr.nn.RNN])
def test_non_finite_padding_does_not_leak(cls, path, monkeypatch):
    """Padding may hold anything, NaN included: packed-sequence semantics ignore it entirely."""
    for k, v in BRANCHES.get(path, {}).items():
        monkeypatch.setattr(tr.get_backend("cpu"), k, v)
    fused = path != "composite"
    m = cls(3, 4, num_layers=2, bidirectional=True, dtype=tr.float64, seed=0)
    m.fused = fused
    xn = np.random.default_rng(0).standard_normal((5, 2, 3))
    xn[3:, 1] = np.nan
    x = tr.tensor(xn, requires_grad=True)
    out, h = m(x, lengths=[5, 3])
    h_n = h[0] if isinstance(h, tuple) else h
    (out.sum() + (h_n * h_n).sum()).backward()
    assert np.isfinite(out.numpy()).all() and np.isfinite(h_n.numpy()).all()
    for name, p in m.named_parameters():
        assert np.isfinite(p.grad.numpy()).all(), name
    assert np.array_equal(x.grad.numpy()[3:, 1], np.zeros((2, 3)))
