"""Gradient checks of the recurrent cells and layers, in float64, against finite differences.

Every gradient is checked: input, initial state and every parameter. ``gradcheck`` differentiates
with respect to the tensors it is handed (float64 leaf copies of them), so the function under test
puts those tensors in the place of the module's Parameters for the duration of one call
(``params_replaced``): the module reads its weights by attribute, and the copies are what the
forward pass records. ``test_negative_control_*`` corrupts one gradient of the fused node at a time
and asserts the check fails on exactly that input, proving parameter gradients are really compared.

The layers run on the fused path under every branch of the CPU backend (``BRANCHES``): the
whole-sequence Numba kernel, and the per-step loop of one BLAS product plus one pointwise kernel per
step, the Numba one or the vectorised NumPy one of wide layers (forced here by zeroing the thresholds).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools

import numpy as np
import pytest
from _rnn_paths import BRANCHES, MODES, cpu_branch, make_layer  # noqa: E402, I001  (tests/ helper)
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_rnn as tr
from tinygrad_rnn import GradcheckError, gradcheck
from tinygrad_rnn.nn.rnn import FusedRecurrence

TOL = dict(eps=1e-6, atol=1e-6, rtol=1e-5)
FULL_MODE_MAX_ENTRIES = 160  # above this many input entries, check along random directions instead


# ---------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def params_replaced(module: tr.nn.Module, names: list[str], tensors) -> None:
    """Let ``module`` read ``tensors`` in place of its Parameters ``names`` for one call.

    ``object.__setattr__`` leaves the registration (``_parameters``) untouched, so the module is
    exactly as before afterwards; the forward pass records the given tensors as its inputs.
    """
    saved = {n: module.__dict__[n] for n in names}
    try:
        for n, t in zip(names, tensors, strict=True):
            object.__setattr__(module, n, t)
        yield
    finally:
        for n, p in saved.items():
            object.__setattr__(module, n, p)


def make_cell(mode: str, input_size: int, hidden_size: int, bias: bool, dtype=tr.float64, seed: int = 0) -> tr.nn.Module:
    if mode.startswith("rnn_"):
        return tr.nn.RNNCell(input_size, hidden_size, bias=bias, nonlinearity=mode[4:], dtype=dtype, seed=seed)
    cls = {"lstm": tr.nn.LSTMCell, "gru": tr.nn.GRUCell}[mode]
    return cls(input_size, hidden_size, bias=bias, dtype=dtype, seed=seed)


@dataclasses.dataclass(frozen=True)
class Case:
    """One layer configuration with its sizes; ``build`` makes the module and the input arrays."""

    mode: str
    num_layers: int = 1
    bidirectional: bool = False
    bias: bool = True
    with_state: bool = True
    lengths: tuple[int, ...] | None = None
    batch_first: bool = False
    unbatched: bool = False
    T: int = 3
    B: int = 2
    D: int = 2
    H: int = 2
    seed: int = 0

    @property
    def n_state(self) -> int:
        return (2 if self.mode == "lstm" else 1) if self.with_state else 0

    def build(self, dtype=tr.float64):
        m = make_layer(self.mode, self.D, self.H, dtype=dtype, seed=self.seed, num_layers=self.num_layers,
                       bidirectional=self.bidirectional, bias=self.bias, batch_first=self.batch_first)
        rng = np.random.default_rng(self.seed + 1)
        if self.unbatched:
            x_shape, s_shape = (self.T, self.D), (self.num_layers * m.num_directions, self.H)
        else:
            x_shape = (self.B, self.T, self.D) if self.batch_first else (self.T, self.B, self.D)
            s_shape = (self.num_layers * m.num_directions, self.B, self.H)
        arrays = [rng.uniform(-1.5, 1.5, x_shape)] + [rng.uniform(-1, 1, s_shape) for _ in range(self.n_state)]
        return m, [a.astype(dtype) for a in arrays]


def layer_fn(m: tr.nn.Module, n_state: int, lengths=None):
    """fn(x, *states, *params) -> (out, h_n[, c_n]) through the module, params in place of its own."""
    names = [n for n, _ in m.named_parameters()]
    lens = None if lengths is None else np.asarray(lengths, dtype=np.int64)

    def fn(x, *rest):
        states, params = rest[:n_state], rest[n_state:]
        hx = None if n_state == 0 else (states[0] if n_state == 1 else tuple(states))
        with params_replaced(m, names, params):
            out, hn = m(x, hx, lengths=lens)
        return (out, *hn) if isinstance(hn, tuple) else (out, hn)

    return fn


def check_layer(case: Case, branch: str, mode: str = "auto", **tol) -> None:
    m, arrays = case.build()
    inputs = [tr.tensor(a, requires_grad=True) for a in arrays] + list(m.parameters())
    entries = sum(t.numel() for t in inputs)
    if mode == "auto":
        mode = "full" if entries <= FULL_MODE_MAX_ENTRIES else "directional"
    with cpu_branch(branch):
        assert gradcheck(layer_fn(m, case.n_state, case.lengths), inputs, mode=mode, num_directions=3,
                         **{**TOL, **tol})
    assert m.fused and m.last_path == "fused"


# ---------------------------------------------------------------------------------------
# cells


def check_cell(mode: str, bias: bool, with_hx: bool, unbatched: bool, B: int, D: int, H: int, seed: int) -> None:
    cell = make_cell(mode, D, H, bias, seed=seed)
    rng = np.random.default_rng(seed + 1)
    lead = () if unbatched else (B,)
    x = tr.tensor(rng.uniform(-1.5, 1.5, lead + (D,)), requires_grad=True)
    n_state = (2 if mode == "lstm" else 1) if with_hx else 0
    states = [tr.tensor(rng.uniform(-1, 1, lead + (H,)), requires_grad=True) for _ in range(n_state)]
    names = [n for n, _ in cell.named_parameters()]
    assert len(names) == (4 if bias else 2)

    def fn(x, *rest):
        st_, params = rest[:n_state], rest[n_state:]
        hx = None if n_state == 0 else (st_[0] if n_state == 1 else tuple(st_))
        with params_replaced(cell, names, params):
            return cell(x, hx)

    out = fn(x, *states, *cell.parameters())
    for o in out if isinstance(out, tuple) else (out,):
        assert o.shape == lead + (H,)
    assert gradcheck(fn, [x, *states, *cell.parameters()], **TOL)


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("mode", MODES)
def test_cell_gradcheck_every_configuration(mode, bias, with_hx, unbatched):
    check_cell(mode, bias, with_hx, unbatched, B=3, D=3, H=2, seed=4)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("mode", MODES)
@given(with_hx=st.booleans(), unbatched=st.booleans(), B=st.integers(1, 3), D=st.integers(1, 4), H=st.integers(1, 4),
       seed=st.integers(0, 2**31 - 1))
def test_cell_gradcheck_hypothesis(mode, bias, with_hx, unbatched, B, D, H, seed):
    check_cell(mode, bias, with_hx, unbatched, B, D, H, seed)


# ---------------------------------------------------------------------------------------
# layers: every configuration, fixed small sizes, checked along random directions

FLAGS = list(itertools.product(MODES, (1, 2), (False, True), (True, False), (True, False), (False, True), (False, True)))


def _flag_id(flags) -> str:
    mode, layers, bidir, bias, state, lengths, batch_first = flags
    return "-".join([mode, f"L{layers}", "bi" if bidir else "uni", "bias" if bias else "nobias",
                     "h0" if state else "noh0", "lengths" if lengths else "full", "bf" if batch_first else "tf"])


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("flags", FLAGS, ids=[_flag_id(f) for f in FLAGS])
def test_layer_gradcheck_every_configuration(flags, branch):
    mode, layers, bidir, bias, state, with_lengths, batch_first = flags
    # B=3 with lengths (3, 1, 2): one full-length sequence, one of length 1, unsorted
    case = Case(mode, layers, bidir, bias, state, (3, 1, 2) if with_lengths else None, batch_first, T=3, B=3, D=2, H=2,
                seed=FLAGS.index(flags))
    check_layer(case, branch, mode="directional")


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layers,bidir", [(1, False), (2, True)])
def test_layer_gradcheck_unbatched(mode, layers, bidir, branch):
    for with_state in (False, True):
        check_layer(Case(mode, layers, bidir, with_state=with_state, unbatched=True, T=3, D=2, H=2), branch, mode="full")


# ---------------------------------------------------------------------------------------
# layers: Hypothesis-drawn sizes and configurations


@st.composite
def layer_cases(draw, mode: str):
    T, B = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    lengths = None
    unbatched = False
    if draw(st.booleans()):
        lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
        if B >= 2:  # one sequence of full length and one of length 1, at drawn positions
            order = draw(st.permutations(range(B)))
            lengths[order[0]], lengths[order[1]] = T, 1
        lengths = tuple(lengths)
    else:
        unbatched = draw(st.integers(0, 4)) == 0
    return Case(mode, num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()), bias=draw(st.booleans()),
                with_state=draw(st.booleans()), lengths=lengths, batch_first=draw(st.booleans()), unbatched=unbatched,
                T=T, B=1 if unbatched else B, D=draw(st.integers(1, 4)), H=draw(st.integers(1, 4)),
                seed=draw(st.integers(0, 2**31 - 1)))


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("mode", MODES)
@given(data=st.data())
def test_layer_gradcheck_hypothesis(mode, branch, data):
    check_layer(data.draw(layer_cases(mode), label="case"), branch)


# ---------------------------------------------------------------------------------------
# one step, two steps, and a long sequence: each checked on its own


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("T", [1, 2])
@pytest.mark.parametrize("mode", MODES)
def test_short_sequences_full_gradcheck(mode, T, branch):
    """Every entry, 2 layers, bidirectional, with state; T=2 also with a padded sequence."""
    check_layer(Case(mode, 2, True, T=T, B=2, D=2, H=2, seed=T), branch, mode="full")
    if T == 2:
        check_layer(Case(mode, 1, True, lengths=(1, 2), T=T, B=2, D=2, H=2, seed=7), branch, mode="full")


def _weighted_loss(outs, seed=99):
    rng = np.random.default_rng(seed)
    total = None
    for o in outs:
        w = tr.tensor(rng.uniform(-1, 1, o.shape).astype(o.dtype))
        term = (o * w).sum()
        total = term if total is None else total + term
    return total


def _run_with_grads(case: Case, fused: bool, branch: str):
    m, arrays = case.build()
    m.fused = fused
    inputs = [tr.tensor(a, requires_grad=True) for a in arrays]
    with cpu_branch(branch):
        out, hn = m(inputs[0], None if case.n_state == 0 else (inputs[1] if case.n_state == 1 else tuple(inputs[1:])),
                    lengths=None if case.lengths is None else np.asarray(case.lengths))
        outs = (out, *hn) if isinstance(hn, tuple) else (out, hn)
        _weighted_loss(outs).backward()
    assert m.last_path == ("fused" if fused else "composite")
    grads = [t.grad.numpy() for t in inputs] + [p.grad.numpy() for p in m.parameters()]
    return [o.numpy() for o in outs], grads


LONG_T = 200


@pytest.mark.parametrize("mode", MODES)
def test_long_sequence_fused_matches_composite(mode):
    """T=200, 2 layers, bidirectional, one padded sequence: values and every gradient to ~1e-10."""
    case = Case(mode, 2, True, lengths=(LONG_T, 137), T=LONG_T, B=2, D=3, H=4, seed=11)
    ref_outs, ref_grads = _run_with_grads(case, fused=False, branch="per_step")
    for branch in BRANCHES:
        outs, grads = _run_with_grads(case, fused=True, branch=branch)
        for a, b in zip(outs + grads, ref_outs + ref_grads, strict=True):
            assert a.shape == b.shape
            scale = max(1.0, float(np.abs(b).max()))
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * scale, err_msg=f"{mode} {branch}")
        assert all(np.abs(g).max() > 0 for g in grads)  # every gradient reached (no silent zeros)


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("mode", MODES)
def test_long_sequence_directional_gradcheck(mode, branch):
    check_layer(Case(mode, 1, True, lengths=(LONG_T, 150), T=LONG_T, B=2, D=3, H=3, seed=5), branch, mode="directional")


# ---------------------------------------------------------------------------------------
# negative controls: the checks above can fail


def _fused_inputs(mode: str) -> list[str]:
    return ["x", "h0"] + (["c0"] if mode == "lstm" else []) + ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("mode", MODES)
def test_negative_control_each_corrupted_gradient_is_caught(mode, branch, monkeypatch):
    """One layer, one direction, so gradcheck's inputs are FusedRecurrence's inputs in the same order:
    corrupting the gradient of input k must fail the check on input k (parameters included)."""
    case = Case(mode, 1, False, T=3, B=2, D=2, H=2, seed=3)
    check_layer(case, branch, mode="full")  # the uncorrupted gradient passes
    original = FusedRecurrence.backward
    for k in range(len(_fused_inputs(mode))):  # x, h0, [c0], weight_ih, weight_hh, bias_ih, bias_hh
        def corrupted(self, *grads, k=k):
            out = list(original(self, *grads))
            out[k] = out[k] * 1.01 + 1e-3
            return tuple(out)

        monkeypatch.setattr(FusedRecurrence, "backward", corrupted)
        with pytest.raises(GradcheckError, match=rf"input {k} \(shape"):
            check_layer(case, branch, mode="full")
        with pytest.raises(GradcheckError, match="directional"):
            check_layer(case, branch, mode="directional")
        monkeypatch.setattr(FusedRecurrence, "backward", original)


def test_negative_control_too_large_eps_fails():
    case = Case("lstm", 1, False, T=3, B=2, D=2, H=2, seed=3)
    with pytest.raises(GradcheckError):
        check_layer(case, "sequence_kernel", mode="full", eps=0.5, atol=1e-9, rtol=1e-9)


def test_params_replaced_leaves_module_unchanged():
    m = make_layer("lstm", 2, 3, num_layers=2)
    before = list(m.named_parameters())
    stand_ins = [tr.zeros(*p.shape, dtype=tr.float64) for _, p in before]
    with params_replaced(m, [n for n, _ in before], stand_ins):
        assert m.weight_hh_l1 is stand_ins[5]
        out, (h, c) = m(tr.ones(2, 1, 2, dtype=tr.float64))
        assert np.all(out.numpy() == 0)  # zero weights and biases: every gate is sigmoid(0), g = 0 -> c = h = 0
    after = list(m.named_parameters())
    assert [n for n, _ in after] == [n for n, _ in before]
    assert all(p is q for (_, p), (_, q) in zip(before, after))
