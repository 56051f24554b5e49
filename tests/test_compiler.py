"""The cell compiler: compiled == op by op (generated random cells, float64), gradcheck, the built-in
layers written as cells, refusals that name the op and line, float32, the engine's safety checks, and
the disk cache seen from a second process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from _cells import BINARY, CELLS, UNARY, LayerCell, PeepholeLSTM, RandomCell
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tr
from tinygrad_rnn import nn
from tinygrad_rnn.compiler import CompileError, compile_stats
from tinygrad_rnn.nn import init
from tinygrad_rnn.nn.recurrent import run_op_by_op

HERE = os.path.dirname(os.path.abspath(__file__))


def _close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-10, what: str = "") -> None:
    a, b = np.asarray(a), np.asarray(b)
    scale = max(1.0, float(np.nanmax(np.abs(b))) if b.size else 1.0)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * 1e-2 * scale, err_msg=what)


def _run(layer_fn, cell, x, state, loss_w, **kw):
    """Outputs, final state and every gradient (x, state, parameters) of one layer call."""
    for p in cell.parameters():
        p.grad = None
    x = tr.Tensor(x.numpy(), requires_grad=True)
    flat = state if isinstance(state, tuple) else (state,)
    flat = tuple(tr.Tensor(s.numpy(), requires_grad=True) for s in flat)
    out, sn = layer_fn(x, flat if isinstance(state, tuple) else flat[0], **kw)
    sn_flat = sn if isinstance(sn, tuple) else (sn,)
    loss = (out * tr.Tensor(loss_w)).sum() + sum(((s * s).sum() for s in sn_flat), tr.zeros((), dtype=x.dtype))
    loss.backward()
    res = {"out": out.numpy(), **{f"state{i}": s.numpy() for i, s in enumerate(sn_flat)}, "dx": x.grad.numpy()}
    for i, s in enumerate(flat):
        res[f"dstate{i}"] = s.grad.numpy()
    for name, p in cell.named_parameters():
        res[f"d{name}"] = np.zeros(p.shape) if p.grad is None else p.grad.numpy()
    return res


def _compare(cell, x, state, rtol=1e-10, lengths=None, **layer_kw):
    """Compiled vs op by op for one cell: every output and gradient."""
    rng = np.random.default_rng(1)
    results = []
    for mode in (False, True):
        layer = nn.Recurrent(cell, compile=mode, **layer_kw)
        out_shape = layer(x, state, lengths=lengths)[0].shape
        w = rng.standard_normal(out_shape) if not results else results[0][1]
        results.append((_run(layer, cell, x, state, w, lengths=lengths), w))
        assert layer.last_path == ("compiled" if mode else "op_by_op")
    ref, got = results[0][0], results[1][0]
    assert ref.keys() == got.keys()
    for k in ref:
        _close(got[k], ref[k], rtol, what=k)
    return ref


# ------------------------------------------------------------------------------------------------
# (1) random cells, compiled == op by op, float64 (15 cells, ~40 s cold; COMPILER_EXAMPLES=n for more)

recipes = st.fixed_dictionaries({
    "seed": st.integers(0, 2**16), "D": st.integers(1, 4), "H": st.integers(2, 4), "G": st.integers(1, 4),
    "B": st.integers(1, 3), "T": st.integers(1, 4), "two_states": st.booleans(),
    "hh": st.sampled_from(["linear", "matmul", "none"]), "brow": st.booleans(), "second_gemm": st.booleans(),
    "steps": st.lists(st.tuples(st.sampled_from(UNARY + BINARY),
                                st.integers(0, 9), st.integers(0, 9), st.integers(0, 5)), min_size=1, max_size=6),
    "out": st.integers(0, 9), "masked": st.booleans(), "reverse": st.booleans(),
})


@settings(max_examples=int(os.environ.get("COMPILER_EXAMPLES", "15")), deadline=None)
@given(recipes)
def test_random_cells_compiled_equal_op_by_op(recipe):
    cell = RandomCell(recipe)
    rng = np.random.default_rng(recipe["seed"])
    t_, b_, h_ = recipe["T"], recipe["B"], recipe["H"]
    x = tr.tensor(rng.standard_normal((t_, b_, recipe["D"])))
    state = tuple(tr.tensor(rng.uniform(-0.9, 0.9, (b_, h_))) for _ in range(2 if recipe["two_states"] else 1))
    lengths = rng.integers(1, t_ + 1, size=b_) if recipe["masked"] else None
    _compare(cell, x, state if recipe["two_states"] else state[0], lengths=lengths, reverse=recipe["reverse"])


@pytest.mark.parametrize("t_", [1, 2, 7])
def test_peephole_lstm_equal_op_by_op_short_and_long(t_):
    cell = PeepholeLSTM(3, 5, dtype=tr.float64)
    rng = np.random.default_rng(t_)
    x = tr.tensor(rng.standard_normal((t_, 4, 3)))
    _compare(cell, x, (tr.tensor(rng.standard_normal((4, 5))), tr.tensor(rng.standard_normal((4, 5)))))


@pytest.mark.parametrize("name", sorted(CELLS))
def test_example_cells_equal_op_by_op(name):
    cell = CELLS[name](3, 4, dtype=tr.float64)
    rng = np.random.default_rng(0)
    x = tr.tensor(rng.standard_normal((5, 2, 3)))
    size = cell.state_size
    state = tuple(tr.tensor(rng.standard_normal((2, n))) for n in size) if isinstance(size, tuple) else \
        tr.tensor(rng.standard_normal((2, size)))
    _compare(cell, x, state)


def test_masks_batch_first_and_bidirectional_stacks():
    rng = np.random.default_rng(3)
    cells = [PeepholeLSTM(3, 4, dtype=tr.float64, seed=1), PeepholeLSTM(3, 4, dtype=tr.float64, seed=2),
             PeepholeLSTM(8, 4, dtype=tr.float64, seed=3), PeepholeLSTM(8, 4, dtype=tr.float64, seed=4)]
    x = tr.tensor(rng.standard_normal((3, 5, 3)))  # batch_first: (B, T, D)
    outs = {}
    for mode in (False, True):
        layer = nn.Recurrent(cells, batch_first=True, bidirectional=True, compile=mode)
        xx = tr.Tensor(x.numpy(), requires_grad=True)
        out, states = layer(xx, lengths=[5, 2, 4])
        assert out.shape == (3, 5, 8) and len(states) == 4
        (out.tanh().sum() + sum(s[1].sum() for s in states)).backward()
        outs[mode] = [out.numpy(), xx.grad.numpy()] + [p.grad.numpy() for c in cells for p in c.parameters()]
        for c in cells:
            c.zero_grad()
    for a, b in zip(outs[True], outs[False]):
        _close(a, b)
    assert np.all(outs[True][0][1, 2:] == 0)  # padded steps output zeros


def test_scan_matches_op_by_op_and_closes_over_parameters():
    rng = np.random.default_rng(5)
    w = tr.tensor(rng.standard_normal((4, 4)) * 0.5, requires_grad=True)
    u = tr.tensor(rng.standard_normal(4), requires_grad=True)
    xs = tr.tensor(rng.standard_normal((6, 3, 4)))

    def step(carry, x):
        h = (carry @ w + x * u).tanh()
        return h, h * 2

    grads = []
    for mode in (False, True):
        w.grad = u.grad = None
        h, ys = tr.scan(step, tr.zeros(3, 4, dtype=tr.float64), xs, compile=mode)
        (ys.sum() + h.sum()).backward()
        grads.append((ys.numpy(), h.numpy(), w.grad.numpy(), u.grad.numpy()))
    for a, b in zip(*grads):
        _close(a, b)


# ------------------------------------------------------------------------------------------------
# (2) gradcheck of compiled cells


@pytest.mark.parametrize("name", ["peephole", "layernorm"])
def test_gradcheck_compiled(name):
    cell = CELLS[name](2, 3, dtype=tr.float64)
    rng = np.random.default_rng(0)
    x = tr.tensor(rng.standard_normal((3, 2, 2)), requires_grad=True)
    h0 = tr.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    c0 = tr.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    layer = nn.Recurrent(cell, compile=True)

    def fn(x, h0, c0):
        out, (h, c) = layer(x, (h0, c0))
        return out.sum() + (h * c).sum()

    assert tr.gradcheck(fn, [x, h0, c0], eps=1e-6, atol=1e-7, rtol=1e-6)
    assert layer.last_path == "compiled"


def test_gradcheck_compiled_parameters():
    rng = np.random.default_rng(1)
    x = tr.tensor(rng.standard_normal((4, 2, 3)))
    w = tr.tensor(rng.standard_normal((3, 5)) * 0.5, requires_grad=True)
    v = tr.tensor(rng.standard_normal((5, 5)) * 0.5, requires_grad=True)
    p = tr.tensor(rng.standard_normal((1, 5)), requires_grad=True)

    def fn(w, v, p):
        def step(h, xt):
            a = xt @ w + h @ v
            m = a.mean(-1, keepdim=True)
            h = ((a - m) * p).tanh() + 0.1 * tr.maximum(a, h)
            return h, h
        h, ys = tr.scan(step, tr.zeros(2, 5, dtype=tr.float64), x, compile=True)
        return (ys * ys).sum()

    assert tr.gradcheck(fn, [w, v, p], eps=1e-6, atol=1e-7, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# (3) the built-in layers written as cells


def _builtin_case(layer, x, state):
    cell = LayerCell(layer)
    xs = [tr.Tensor(x.numpy(), requires_grad=True) for _ in range(2)]
    flat = state if isinstance(state, tuple) else (state,)
    ss = [[tr.Tensor(s.numpy(), requires_grad=True) for s in flat] for _ in range(2)]
    res = []
    for k in range(2):
        for p in layer.parameters():
            p.grad = None
        if k == 0:
            out, sn = layer(xs[0], tuple(s[None] for s in ss[0]) if isinstance(state, tuple) else ss[0][0][None])
            sn = tuple(s[0] for s in sn) if isinstance(sn, tuple) else sn[0]
        else:
            rec = nn.Recurrent(cell, compile=True)
            out, sn = rec(xs[1], tuple(ss[1]) if isinstance(state, tuple) else ss[1][0])
            assert rec.last_path == "compiled"
        sn = sn if isinstance(sn, tuple) else (sn,)
        ((out * out).sum() + sum((s * s).sum() for s in sn)).backward()
        res.append([out.numpy()] + [s.numpy() for s in sn] + [xs[k].grad.numpy()] + [s.grad.numpy() for s in ss[k]]
                   + [p.grad.numpy() for p in layer.parameters()])
    for a, b in zip(res[1], res[0]):
        _close(a, b, 1e-9)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh", "rnn_relu", "irnn", "np_rnn"])
def test_builtin_layers_as_compiled_cells(kind):
    rng = np.random.default_rng(0)
    d, h = 3, 5
    if kind == "lstm":
        layer = nn.LSTM(d, h, dtype=tr.float64, seed=1)
    elif kind == "gru":
        layer = nn.GRU(d, h, dtype=tr.float64, seed=1)
    else:
        layer = nn.RNN(d, h, nonlinearity="tanh" if kind == "rnn_tanh" else "relu", dtype=tr.float64, seed=1)
        if kind == "irnn":
            init.identity_(layer.weight_hh_l0)
            init.zeros_(layer.bias_hh_l0)
        elif kind == "np_rnn":
            init.np_rnn_(layer.weight_hh_l0, seed=2)
    x = tr.tensor(rng.standard_normal((6, 4, d)))
    if kind == "lstm":
        state = (tr.tensor(rng.standard_normal((4, h))), tr.tensor(rng.standard_normal((4, h))))
    else:
        state = tr.tensor(rng.standard_normal((4, h)))
    _builtin_case(layer, x, state)


# ------------------------------------------------------------------------------------------------
# (4) refusals name the op and the line; auto falls back with one warning


class Branchy(nn.Module):
    state_size = 3

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 3, dtype=tr.float64)

    def forward(self, x, h):
        h = (self.lin(x) + h).tanh()
        if h.sum(-1, keepdim=True) > 0:  # REFUSE-BRANCH (one row: a truth value op by op)
            h = h * 2
        return h, h


class Unsupported(nn.Module):
    state_size = 3

    def forward(self, x, h):
        a = h.softmax(0)  # REFUSE-OP
        return a, a


class Mixer(nn.Module):
    state_size = 3

    def forward(self, x, h):
        a = (h @ h.t()).tanh()  # REFUSE-MIX
        return a, h


class InPlace(nn.Module):
    state_size = 3

    def forward(self, x, h):
        a = h * 1.0
        a += x.sum(-1, keepdim=True)  # REFUSE-INPLACE
        return a, a


class Counting(nn.Module):
    state_size = 3

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, h):
        self.calls += 1
        h = (h + x.mean(-1, keepdim=True)).tanh()
        return h, (h * 2 if self.calls % 2 else h)


class Noisy(nn.Module):
    state_size = 64  # two dropout masks of 2 x 64 entries do not coincide by chance

    def forward(self, x, h):
        h = (h + x.mean(-1, keepdim=True)).tanh()
        return h, nn.functional.dropout(h, 0.5)


def _line(marker: str) -> int:
    with open(__file__) as f:
        for i, line in enumerate(f, 1):
            if marker in line and "_line(" not in line:
                return i
    raise AssertionError(marker)


@pytest.mark.parametrize("cell, marker, words", [
    (Branchy(), "REFUSE-BRANCH", "__bool__"),
    (Unsupported(), "REFUSE-OP", "Softmax"),
    (InPlace(), "REFUSE-INPLACE", "in-place"),
    (Mixer(), "REFUSE-MIX", "Permute"),
])
def test_refusals_name_the_op_and_line(cell, marker, words):
    x = tr.randn(4, 1, 2, dtype=tr.float64)
    with pytest.raises(CompileError) as e:
        nn.Recurrent(cell, compile=True)(x)
    msg = str(e.value)
    assert words in msg and f"test_compiler.py:{_line(marker)}" in msg, msg
    assert "compile=False" in msg


@pytest.mark.parametrize("cell, words", [(Counting(), "differs between two steps"), (Noisy(), "random")])
def test_refusals_of_cells_that_change_between_steps(cell, words):
    with pytest.raises(CompileError, match=words):
        nn.Recurrent(cell, compile=True)(tr.randn(4, 2, 2, dtype=tr.float64))


def test_auto_falls_back_with_one_warning_and_same_answer():
    x = tr.randn(4, 1, 2, dtype=tr.float64, seed=0)
    cell = Branchy()
    layer = nn.Recurrent(cell)  # compile="auto"
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out1, _ = layer(x)
        out2, _ = layer(x)
    assert [str(m.message) for m in w if "op by op" in str(m.message)].__len__() == 1
    assert layer.last_path == "op_by_op"
    ref, _ = nn.Recurrent(cell, compile=False)(x)
    np.testing.assert_array_equal(out1.numpy(), ref.numpy())
    np.testing.assert_array_equal(out2.numpy(), ref.numpy())


def test_bad_arguments():
    with pytest.raises(ValueError, match="compile must be"):
        nn.Recurrent(PeepholeLSTM(2, 3), compile="yes")
    with pytest.raises(ValueError, match="state_size"):
        nn.Recurrent(lambda x, h: (h, h))(tr.randn(2, 1, 3))
    with pytest.raises(ValueError, match="3-D"):
        nn.Recurrent(PeepholeLSTM(2, 3))(tr.randn(2, 3))
    with pytest.raises(ValueError, match="lengths"):
        nn.Recurrent(PeepholeLSTM(2, 3))(tr.randn(2, 1, 2), lengths=[3])


# ------------------------------------------------------------------------------------------------
# (5) float32 compiled vs float64


def test_float32_compiled_close_to_float64():
    c64 = PeepholeLSTM(3, 6, dtype=tr.float64, seed=4)
    c32 = PeepholeLSTM(3, 6, dtype=tr.float32, seed=4)
    c32.load_state_dict({k: v.astype(np.float32) for k, v in c64.state_dict().items()})
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 4, 3))
    s = (rng.standard_normal((4, 6)), rng.standard_normal((4, 6)))
    w = rng.standard_normal((8, 4, 6))
    r64 = _run(nn.Recurrent(c64, compile=False), c64, tr.tensor(x), tuple(map(tr.tensor, s)), w)
    layer32 = nn.Recurrent(c32, compile=True)
    r32 = _run(layer32, c32, tr.tensor(x, dtype=tr.float32), tuple(tr.tensor(a, dtype=tr.float32) for a in s),
               w.astype(np.float32))
    assert layer32.last_path == "compiled" and r32["out"].dtype == np.float32
    for k in r64:
        np.testing.assert_allclose(r32[k], r64[k], rtol=2e-4, atol=2e-4 * max(1, np.abs(r64[k]).max()), err_msg=k)


# ------------------------------------------------------------------------------------------------
# (6) version counters and anomaly mode on the compiled node


def test_version_counter_catches_in_place_change_of_a_parameter():
    cell = PeepholeLSTM(2, 3, dtype=tr.float64)
    out, _ = nn.Recurrent(cell, compile=True)(tr.randn(3, 2, 2, dtype=tr.float64))
    assert out.grad_fn.name() == "CompiledRecurrence"
    with tr.no_grad():
        cell.peep.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation.*CompiledRecurrence"):
        out.sum().backward()


def test_anomaly_mode_names_the_compiled_node():
    class SqrtCell(nn.Module):
        state_size = 2

        def forward(self, x, h):
            h = (h * 0 + x * 0).sqrt() + h  # sqrt(0): an infinite gradient
            return h, h

    x = tr.randn(3, 2, 2, dtype=tr.float64, requires_grad=True)
    with tr.autograd.detect_anomaly():
        out, _ = nn.Recurrent(SqrtCell(), compile=True)(x, tr.ones(2, 2, dtype=tr.float64))
        with pytest.raises(RuntimeError, match="CompiledRecurrence"):
            out.sum().backward()


def test_no_grad_inference_matches_training_forward():
    cell = PeepholeLSTM(3, 4, dtype=tr.float64)
    x = tr.randn(5, 2, 3, dtype=tr.float64, seed=1)
    layer = nn.Recurrent(cell, compile=True)
    out, (h, c) = layer(x)
    with tr.no_grad():
        out2, (h2, c2) = layer(x)
    assert out2.grad_fn is None
    np.testing.assert_array_equal(out.numpy(), out2.numpy())
    np.testing.assert_array_equal(c.numpy(), c2.numpy())


# ------------------------------------------------------------------------------------------------
# (7) the disk cache, seen from a second process

_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import tinygrad_rnn as tr
from tinygrad_rnn import nn
from tinygrad_rnn.compiler import compile_stats
from _cells import PeepholeLSTM
cell = PeepholeLSTM(3, 4, dtype=tr.float64)
x = tr.randn(5, 2, 3, dtype=tr.float64, seed=0)
t0 = time.perf_counter()
out, _ = nn.Recurrent(cell, compile=True)(x)
out.sum().backward()
stats = compile_stats()[0]
stats["total_s"] = time.perf_counter() - t0
print(json.dumps(stats))
"""


def test_second_process_loads_kernels_from_disk_cache(tmp_path):
    env = dict(os.environ, TINYGRAD_RNN_CACHE=str(tmp_path))
    runs = []
    for _ in range(2):
        p = subprocess.run([sys.executable, "-c", _CHILD, HERE], env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    assert cold["forward_cache_misses"] == 1 and cold["backward_cache_misses"] == 1
    assert warm["forward_cache_misses"] == 0 and warm["backward_cache_misses"] == 0
    assert warm["forward_cache_hits"] == 1 and warm["backward_cache_hits"] == 1
    assert os.path.dirname(warm["source"]) == os.path.join(str(tmp_path), "cells")
    print(f"compile cold {sum(cold['compile_s'].values()):.2f} s, from the disk cache "
          f"{sum(warm['compile_s'].values()):.2f} s")


def test_compile_stats_reports_this_process():
    cell = PeepholeLSTM(2, 3, dtype=tr.float64)
    nn.Recurrent(cell, compile=True)(tr.randn(2, 1, 2, dtype=tr.float64))[0].sum().backward()
    st_ = [s for s in compile_stats() if "forward" in s["compile_s"]]
    assert st_ and all(s["source"].endswith(".py") for s in st_)


def test_op_by_op_reference_is_what_recurrent_runs_uncompiled():
    cell = PeepholeLSTM(2, 3, dtype=tr.float64)
    x = tr.randn(3, 2, 2, dtype=tr.float64, seed=3)
    s = (tr.zeros(2, 3, dtype=tr.float64),) * 2
    a, _ = nn.Recurrent(cell, compile=False)(x, s)
    b, _ = run_op_by_op(cell, x, list(s), True, None, False)
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_row_blocks_on_threads_sum_parameter_gradients(monkeypatch):
    """A batch large enough for row blocks in parallel threads (each with its own accumulators of the
    parameters' gradients, summed after) gives the op-by-op answer; and one block does too."""
    from tinygrad_rnn.backend import blas
    from tinygrad_rnn.compiler import function as CF

    cell = PeepholeLSTM(8, 64, dtype=tr.float64, seed=3)
    rng = np.random.default_rng(4)
    x = tr.tensor(rng.standard_normal((16, 32, 8)))
    s = (tr.tensor(rng.standard_normal((32, 64))), tr.tensor(rng.standard_normal((32, 64))))
    if blas.row_parallel() and blas.get_num_threads() > 1:
        assert CF._row_blocks(CF.compile_graph(*_graph_of(cell, x, s)).plan, 16, 32) > 1
    _compare(cell, x, s)
    monkeypatch.setattr(CF, "SPLIT_MIN_MACS", 1 << 62)
    _compare(cell, x, s)


def _graph_of(cell, x, s):
    from tinygrad_rnn.compiler.trace import trace_step

    return trace_step(cell, tr.Tensor(x.numpy()[0]), list(s), True), x.dtype


def test_gpu_tensors_run_op_by_op_with_a_note():
    """The compiled kernels are CPU-only: a tensor of another backend (here the emulated CUDA backend)
    is refused with a note, which compile="auto" turns into the op-by-op path."""
    from tinygrad_rnn.backend.cuda import CUDABackend
    from tinygrad_rnn.compiler.function import run_compiled

    emu = CUDABackend(xp=np)
    x = tr.Tensor._make(np.ones((2, 1, 3)), emu, False, None, 0)
    h = tr.Tensor._make(np.zeros((1, 3)), emu, False, None, 0)
    with pytest.raises(CompileError, match="CPU backend.*op by op"):
        run_compiled(lambda x, h: (x + h,) * 2, x, [h], False, np.ones((2, 1)), False, False)
    with pytest.warns(RuntimeWarning, match="CPU backend"):
        out, hn = nn.Recurrent(lambda x, h: ((x + h).tanh(),) * 2)(x, h)
    assert out.device == "cuda" and np.allclose(hn.numpy(), np.tanh(np.tanh(1.0) + 1.0))


class OddState(nn.Module):
    """A state passed through unchanged, a (batch,) state kept by a reduction without keepdim, and an
    output that depends on the input only."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4, dtype=tr.float64, seed=0)
        self.u = nn.Parameter(tr.randn(4, dtype=tr.float64, seed=1))

    def forward(self, x, state):
        h, c, n = state
        a = self.lin(x)
        h2 = (a + self.u * h * n.unsqueeze(-1)).tanh()
        n2 = (h2 * h2).mean(-1) + n * 0.5
        return a.sigmoid(), (h2, c, n2)


def test_passthrough_and_row_scalar_states():
    rng = np.random.default_rng(7)
    x = tr.tensor(rng.standard_normal((4, 3, 3)))
    state = (tr.tensor(rng.standard_normal((3, 4))), tr.tensor(rng.standard_normal((3, 2))),
             tr.tensor(rng.standard_normal(3)))
    ref = _compare(OddState(), x, state, lengths=[4, 1, 3])
    np.testing.assert_array_equal(ref["state1"], state[1].numpy())  # passed through unchanged


def test_every_generated_op_in_one_cell():
    """One cell using every op the random cells draw from (so each is compared on every run, whatever
    Hypothesis draws), with hoisted, per-step and second-stage products, padding and reversal."""
    ops = UNARY + BINARY
    recipe = {"seed": 11, "D": 3, "H": 3, "G": 4, "B": 2, "T": 3, "two_states": True, "hh": "linear", "brow": True,
              "second_gemm": True, "steps": [(op, 2 * i + 1, i + 3, i) for i, op in enumerate(ops)], "out": 5,
              "masked": True, "reverse": True}
    rng = np.random.default_rng(0)
    x = tr.tensor(rng.standard_normal((3, 2, 3)))
    state = (tr.tensor(rng.uniform(-0.9, 0.9, (2, 3))), tr.tensor(rng.uniform(-0.9, 0.9, (2, 3))))
    _compare(RandomCell(recipe), x, state, lengths=[3, 2], reverse=True)


def test_dropout_between_layers_draws_the_same_masks_on_both_paths():
    cells = [PeepholeLSTM(3, 4, dtype=tr.float64, seed=1), PeepholeLSTM(4, 4, dtype=tr.float64, seed=2)]
    x = tr.randn(5, 2, 3, dtype=tr.float64, seed=0)
    outs = []
    for mode in (False, True):
        layer = nn.Recurrent(cells, dropout=0.5, compile=mode, generator=tr.Generator(7))
        outs.append(layer(x)[0].numpy())
        assert layer.last_path == ("compiled" if mode else "op_by_op")
    _close(outs[1], outs[0])
    with pytest.raises(ValueError, match="dropout"):
        nn.Recurrent(cells, dropout=1.5)


class RowConstant(nn.Module):
    """A constant with one value per batch row (made from x.shape[0]): traced on one row it would be
    wrong, so the layer keeps tracing on the whole batch for this cell."""

    state_size = 3

    def forward(self, x, h):
        rows = tr.tensor(np.arange(x.shape[0], dtype=np.float64)[:, None] * 0.1 + 1.0)
        h = (h + x.mean(-1, keepdim=True) * rows).tanh()
        return h, h


def test_one_row_traces_only_where_the_graph_does_not_depend_on_the_batch():
    x = tr.randn(4, 3, 2, dtype=tr.float64, seed=0)
    for cell, rows in ((RowConstant(), "full"), (PeepholeLSTM(2, 3, dtype=tr.float64), "one")):
        for _ in range(2):  # the second call takes the checked path
            _compare(cell, x, _zeros_state(cell, 3))
        assert cell._compiled_graphs["rows"] == rows


def _zeros_state(cell, b):
    size = cell.state_size
    z = [tr.zeros(b, n, dtype=tr.float64) for n in (size if isinstance(size, tuple) else (size,))]
    return tuple(z) if isinstance(size, tuple) else z[0]


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell"])
def test_builtin_cell_modules_run_as_cells(kind):
    cell = getattr(nn, kind)(3, 4, dtype=tr.float64, seed=0)
    rng = np.random.default_rng(1)
    x = tr.tensor(rng.standard_normal((5, 2, 3)))
    state = (tr.tensor(rng.standard_normal((2, 4))),) * 2 if kind == "LSTMCell" else tr.tensor(rng.standard_normal((2, 4)))
    _compare(cell, x, state)
    out, _ = nn.Recurrent(cell)(x)  # zeros from the cell's hidden_size
    assert out.shape == (5, 2, 4)


def test_backward_twice_with_retain_graph_accumulates():
    cell = PeepholeLSTM(2, 3, dtype=tr.float64)
    x = tr.randn(4, 2, 2, dtype=tr.float64, seed=2, requires_grad=True)
    out, (h, c) = nn.Recurrent(cell, compile=True)(x)
    loss = (out * out).sum() + c.sum()
    loss.backward(retain_graph=True)
    g1 = [x.grad.numpy().copy()] + [p.grad.numpy().copy() for p in cell.parameters()]
    loss.backward()
    g2 = [x.grad.numpy()] + [p.grad.numpy() for p in cell.parameters()]
    for a, b in zip(g1, g2):
        _close(b, 2 * a)


def test_unwritable_cache_folder_falls_back_to_the_temp_folder(tmp_path, monkeypatch):
    from tinygrad_rnn.compiler import cache

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TINYGRAD_RNN_CACHE", str(blocker))  # cells/ cannot be made under a file
    folder = cache._writable(cache.cache_dir())
    assert os.path.isdir(folder) and not folder.startswith(str(blocker))


def test_nan_padding_stays_out_under_anomaly_mode():
    """Padding may hold anything: the trace, the kernel and the gradients never see it (anomaly mode's
    forward check included, on the compiled path: op by op, x[t] itself holds the NaN)."""
    cell = PeepholeLSTM(2, 3, dtype=tr.float64)
    rng = np.random.default_rng(0)
    xa = rng.standard_normal((4, 2, 2))
    xa[1:, 1] = np.nan  # sequence 1 has length 1: the second traced step is padding there
    outs = []
    for mode in (False, True):
        x = tr.tensor(xa, requires_grad=True)
        with tr.autograd.detect_anomaly(check_forward=mode):
            out, (h, c) = nn.Recurrent(cell, compile=mode)(x, lengths=[4, 1])
            (out.sum() + h.sum()).backward()
        outs.append((out.numpy(), x.grad.numpy()))
        cell.zero_grad()
    for a, b in zip(*outs):
        assert np.isfinite(a).all()
        _close(a, b)


def test_frozen_parameters_and_input_without_grad():
    """Only the gradients the engine asks for are computed (a frozen weight's GEMM and x's gradient are
    skipped); the others still equal the op-by-op path's, padded rows included."""
    cell = PeepholeLSTM(3, 5, dtype=tr.float64, seed=6)
    cell.ih.weight.requires_grad = False
    cell.peep.requires_grad = False
    rng = np.random.default_rng(7)
    x = tr.tensor(rng.standard_normal((4, 3, 3)))  # no gradient wanted
    s = (tr.tensor(rng.standard_normal((3, 5))), tr.tensor(rng.standard_normal((3, 5))))
    w = rng.standard_normal((4, 3, 5))
    grads = []
    for mode in (False, True):
        for p in cell.parameters():
            p.grad = None
        out, _ = nn.Recurrent(cell, compile=mode)(x, s, lengths=[4, 2, 3])
        (out * tr.Tensor(w)).sum().backward()
        assert x.grad is None and cell.ih.weight.grad is None and cell.peep.grad is None
        grads.append({n: p.grad.numpy() for n, p in cell.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() == {"ih.bias", "hh.weight"}
    for k in grads[0]:
        _close(grads[1][k], grads[0][k], what=k)


def test_step_product_folds_onto_input_product_and_state_terms_run_late():
    """x W_ih^T + b + h W_hh^T: the per-step product accumulates onto the input product's rows (no Add
    left in any stage), and the peephole terms p * c run in the stage after the product, not in a loop
    of their own before it; with a mask and reversed, still the op-by-op answer (float64)."""
    from tinygrad_rnn import functions as F
    from tinygrad_rnn.compiler.codegen import make_plan

    cell = PeepholeLSTM(3, 5, dtype=tr.float64, seed=2)
    rng = np.random.default_rng(5)
    x = tr.tensor(rng.standard_normal((6, 4, 3)))
    s = (tr.tensor(rng.standard_normal((4, 5))), tr.tensor(rng.standard_normal((4, 5))))
    plan = make_plan(*_graph_of(cell, x, s))
    step = plan.step_gemms()
    assert len(step) == 1 and step[0].into is not None and step[0].into.kind == "XW"
    assert plan.stages[0] == [] and all(n.op is not F.Add or n.ins[0].width == 5 for n in plan.stages[1])
    _compare(cell, x, s, lengths=np.array([6, 3, 1, 5]), reverse=True)
