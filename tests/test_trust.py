"""Issue 9: no silent wrong gradient, no crash.

Version counters (in-place changes after forward raise PyTorch's error), saved index arrays owned
by the graph and bounds-checked scatter kernels (crash repros run in a subprocess and must end in a
clear exception, not a signal), thread safety, anomaly mode, and the PyTorch conventions the
OpInfo inputs found (ties, zero base, empty axes, dim=()).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from _child import ROOT, run_python
from hypothesis import assume, given
from hypothesis import strategies as st

import tinygrad_rnn as tr
import tinygrad_rnn.nn.functional as F
from tinygrad_rnn.tensor import _mode
from tinygrad_rnn.testing import arrays, broadcasting_pairs, check_op, shapes

INPLACE = "modified by an inplace operation"


def t64(a, grad=True):
    return tr.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def run_fresh(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this checkout first on the path."""
    return run_python(code, timeout=timeout, cwd=ROOT)


# ---------------------------------------------------------------------------------------------
# version counters


def test_copy_after_forward_raises_naming_op_and_tensor():
    x, y = t64([1.0, 2.0, 3.0]), t64([4.0, 5.0, 6.0])
    z = (x * y).sum()
    y.copy_(np.zeros(3))
    with pytest.raises(RuntimeError, match=INPLACE) as e:
        z.backward()
    msg = str(e.value)
    assert "[Mul input 1 of shape (3,), float64] is at version 1; expected version 0 instead" in msg


def test_unchanged_graph_backprops_and_versions_count():
    x = t64([1.0, 2.0])
    assert x._version == 0
    x.fill_(3.0)
    x.zero_()
    with tr.no_grad():
        x += 1.0
    assert x._version == 3
    y = t64([2.0, 5.0])
    (x * y).sum().backward()  # recorded after the changes: fine
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 5.0])


def test_optimizer_step_between_forward_and_backward_raises():
    lin = tr.nn.Linear(3, 2, dtype=tr.float64)
    opt = tr.optim.SGD(lin.parameters(), lr=0.1)
    loss = lin(t64(np.ones((4, 3)), grad=False)).pow(2).sum()
    loss.backward(retain_graph=True)
    opt.step()
    with pytest.raises(RuntimeError, match=INPLACE):
        loss.backward()


def test_saved_output_modified_in_place_raises():
    x = t64([0.5, 1.0])
    y = x.exp()
    with tr.no_grad():
        y *= 2.0
    with pytest.raises(RuntimeError, match=r"\[Exp output 0 of shape \(2,\), float64\] is at version 1"):
        y.sum().backward()


def test_ops_that_save_nothing_allow_later_changes():
    # Add and Sum keep no input: changing x afterwards cannot make their gradient wrong
    x = t64([1.0, 2.0])
    z = (x + 1.0).sum()
    x.copy_(np.array([7.0, 8.0]))
    z.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])


@pytest.mark.parametrize("make_view", [
    lambda w: w.detach(), lambda w: w.reshape(6), lambda w: w.T, lambda w: w[1], lambda w: w[:, 1:],
    lambda w: w.split(1, dim=0)[0], lambda w: w.unsqueeze(0), lambda w: w.flatten(),
])
def test_views_share_the_version_counter(make_view):
    w = t64(np.arange(6.0).reshape(2, 3))
    x = t64(np.ones((2, 3)))
    z = (w * x).sum()
    v = make_view(w)
    with tr.no_grad():
        v.fill_(0.0)
    assert w._version == 1 and float(w.numpy().sum()) < 15.0  # the write went to w's memory
    with pytest.raises(RuntimeError, match=r"\[Mul input 0 of shape \(2, 3\), float64\] is at version 1"):
        z.backward()


def test_copies_do_not_share_the_counter():
    w = t64(np.arange(6.0).reshape(2, 3))
    for c in (w.clone(), w[np.array([0, 1])], w.T.reshape(6), w + 0.0):
        assert c._version_counter() is not w._version_counter()
    x = t64(np.ones((2, 3)))
    z = (w * x).sum()
    c = w.T.reshape(6)  # a copy (not contiguous): writing it leaves w alone
    with tr.no_grad():
        c.fill_(0.0)
    z.backward()


def test_iadd_semantics_match_pytorch():
    x, y = t64([1.0, 2.0]), t64([3.0, 4.0])
    h = x * 2.0
    alias = h
    h += y  # in place: the old name sees the new values, the new name carries the history
    np.testing.assert_array_equal(alias.numpy(), [5.0, 8.0])
    assert h._version == 1
    (h * h).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [20.0, 32.0])
    np.testing.assert_allclose(y.grad.numpy(), [10.0, 16.0])


def test_imul_keeps_the_old_value_for_backward():
    x, y = t64([1.0, 2.0]), t64([3.0, 5.0])
    h = x * 1.0
    h *= y
    h.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 5.0])
    np.testing.assert_allclose(y.grad.numpy(), [1.0, 2.0])


def test_iadd_into_plain_tensor_records_other_operand():
    acc = tr.zeros(2, dtype=tr.float64)
    x = t64([1.0, 2.0])
    acc += x * 3.0
    acc.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


def test_inplace_on_leaf_that_requires_grad():
    x = t64([1.0, 2.0])
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        x += 1.0
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        x.mul_(2.0)
    with tr.no_grad():
        x += 1.0
        x.mul_(2.0)
    np.testing.assert_array_equal(x.numpy(), [4.0, 6.0])
    assert x._version == 2


def test_inplace_methods_and_operators_without_graph():
    a = tr.tensor(np.array([1.0, 2.0]))
    b = a
    a += 1.0
    a -= tr.tensor(np.array([0.5, 0.5]))
    a *= 2.0
    a /= 4.0
    assert a is b and a._version == 4
    np.testing.assert_allclose(b.numpy(), [0.75, 1.25])
    a.add_(1.0).sub_(0.25).mul_(2.0).div_(2.0)
    np.testing.assert_allclose(a.numpy(), [1.5, 2.0])
    s = tr.tensor(np.array([1.0, 2.0])).sum()  # a 0-d result: NumPy may hand back a read-only scalar
    s += 1.0
    assert s.item() == 4.0


def test_inplace_bad_input_is_clear():
    i = tr.tensor(np.array([1, 2]))
    with pytest.raises(TypeError, match="cannot hold"):
        i += 0.5
    with pytest.raises(TypeError, match="cannot hold"):
        i /= 2
    a = tr.tensor(np.zeros(3))
    with pytest.raises(ValueError, match="in place"):
        a += tr.tensor(np.zeros((2, 3)))
    e = tr.tensor(np.zeros(3)).expand(2, 3)
    with pytest.raises(RuntimeError, match="read-only"):
        e += 1.0
    h = t64([1.0]) * 1.0
    with pytest.raises(RuntimeError, match="not recorded"):
        h.add_(1.0)


def test_setitem_bumps_and_refuses_graph():
    w = t64([1.0, 2.0, 3.0])
    x = t64([1.0, 1.0, 1.0])
    z = (w * x).sum()
    with tr.no_grad():
        w[0] = 10.0
    assert w._version == 1 and w.numpy()[0] == 10.0
    with pytest.raises(RuntimeError, match=INPLACE):
        z.backward()
    with pytest.raises(RuntimeError, match="part of a graph"):
        w[1] = 0.0
    c = tr.zeros(2, 3)
    c[:, 1] = tr.ones(2)
    c[np.array([0])] = 5.0
    np.testing.assert_array_equal(c.numpy(), [[5, 5, 5], [0, 1, 0]])
    with pytest.raises(IndexError, match="invalid"):
        c[5] = 1.0
    with pytest.raises(ValueError, match="cannot assign"):
        c[0] = tr.ones(4)


def test_version_check_survives_retain_graph_and_detach_sharing():
    x = t64([1.0, 2.0])
    y = t64([3.0, 4.0])
    z = (x * y).sum()
    z.backward(retain_graph=True)
    y.detach().zero_()  # detach shares memory and version with y
    with pytest.raises(RuntimeError, match=INPLACE):
        z.backward()


# ---------------------------------------------------------------------------------------------
# saved index arrays and bounds: the crash repros run in a fresh interpreter


CRASHES = {
    "embedding_ids_changed": """
        ids = tr.tensor(np.array([0, 1, 2])); w = tr.randn(5, 3, requires_grad=True, seed=0)
        out = F.embedding(ids, w)
        ids.copy_(tr.tensor(np.array([10**12, 4, 4])))
        out.sum().backward()
        """,
    "cross_entropy_targets_changed": """
        logits = tr.randn(3, 4, requires_grad=True, seed=0); t = tr.tensor(np.array([0, 1, 2]))
        loss = F.cross_entropy(logits, t)
        t.copy_(tr.tensor(np.array([10**12, -10**12, 7])))
        loss.backward()
        """,
    "getitem_index_changed": """
        w = tr.randn(4, 3, requires_grad=True, seed=0); idx = np.array([0, 3, 3])
        out = w[idx]
        idx[:] = 10**12
        out.sum().backward()
        """,
    "getitem_tensor_index_changed": """
        w = tr.randn(4, 3, requires_grad=True, seed=0); idx = tr.tensor(np.array([[0, 1], [3, 2]]))
        out = w[idx, 1]
        idx.copy_(tr.tensor(np.full((2, 2), 10**12)))
        out.sum().backward()
        """,
}


@pytest.mark.parametrize("name", sorted(CRASHES))
def test_index_changed_after_forward_neither_crashes_nor_corrupts(name):
    code = "import numpy as np, tinygrad_rnn as tr, tinygrad_rnn.nn.functional as F\n" + textwrap.dedent(CRASHES[name]) + \
        "print('OK')\n"
    r = run_fresh(code)
    # the graph owns its copy of the index, so the backward is the one of the forward: no signal, no error
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert r.stdout.strip().endswith("OK")


def test_reused_id_buffer_sends_gradient_to_forward_rows():
    buf = np.array([0, 1])
    w = t64(np.zeros((4, 2)))
    out1 = F.embedding(buf, w)
    buf[:] = [2, 3]  # gradient accumulation reusing one NumPy id buffer
    out2 = F.embedding(buf, w)
    (out1.sum() + 2.0 * out2.sum()).backward()
    np.testing.assert_array_equal(w.grad.numpy(), [[1, 1], [1, 1], [2, 2], [2, 2]])


def test_scatter_kernel_refuses_out_of_range_ids():
    be = tr.get_backend("cpu")
    src = np.ones((3, 2))
    for bad in (4, -5, 10**12, -(10**12)):
        with pytest.raises(IndexError, match=f"id {bad} at position 1 is out of range for 4 rows"):
            be.scatter_add_rows(4, np.array([0, bad, 1]), src)
    out = be.scatter_add_rows(4, np.array([0, -1, 0]), src)  # negative ids count from the end, as in NumPy
    np.testing.assert_array_equal(out, [[2, 2], [0, 0], [0, 0], [1, 1]])
    with pytest.raises(ValueError, match="scatter_add_rows"):
        be.scatter_add_rows(4, np.array([0, 1]), src)
    o = np.zeros((3, 2))
    with pytest.raises(IndexError, match="index_add"):
        be.index_add(o, (np.array([0, 7]),), np.ones((2, 2)))


def test_scatter_kernel_crash_case_in_subprocess():
    r = run_fresh("""
        import numpy as np, tinygrad_rnn as tr
        try:
            tr.get_backend("cpu").scatter_add_rows(5, np.array([10**12, 4, 4]), np.ones((3, 8)))
        except IndexError as e:
            print("IndexError:", e)
        """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "out of range for 5 rows" in r.stdout


@pytest.mark.parametrize("pad", [99, 5, -6])
def test_embedding_padding_idx_out_of_range_fails_in_forward(pad):
    w = t64(np.ones((5, 2)))
    with pytest.raises(ValueError, match=f"padding_idx {pad} is out of range for 5"):
        F.embedding(np.array([0, 1]), w, padding_idx=pad)
    with pytest.raises(ValueError, match="padding_idx"):
        tr.nn.Embedding(5, 2, padding_idx=pad)
    with pytest.raises(TypeError, match="padding_idx"):
        F.embedding(np.array([0, 1]), w, padding_idx=1.0)


def test_embedding_negative_padding_idx_zeroes_that_row():
    w = t64(np.ones((5, 2)))
    F.embedding(np.array([4, 1, 4]), w, padding_idx=-1).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy()[:, 0], [0, 1, 0, 0, 0])


# ---------------------------------------------------------------------------------------------
# threads


def test_threads_making_first_tensors_share_one_backend():
    r = run_fresh("""
        import threading, numpy as np, tinygrad_rnn as tr
        from tinygrad_rnn.backend import get_backend
        start = threading.Barrier(8); out = []; errs = []
        def work():
            start.wait()
            try:
                a = tr.tensor(np.ones(3)); out.append((a + tr.ones(3, dtype=tr.float64))._be)
            except Exception as e:
                errs.append(repr(e))
        ts = [threading.Thread(target=work) for _ in range(8)]
        [t.start() for t in ts]; [t.join() for t in ts]
        assert not errs, errs
        assert len({id(b) for b in out}) == 1 and out[0] is get_backend("cpu"), out
        print("ONE", len(out))
        """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ONE 8" in r.stdout


def test_concurrent_backward_into_shared_parameters_sums_exactly():
    w = t64(np.zeros(4))
    x = tr.tensor(np.arange(4.0))
    n_threads, passes = 4, 50
    start = threading.Barrier(n_threads)

    def work():
        start.wait()
        for _ in range(passes):
            ((w * x).sum() + w.sum()).backward()

    ts = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    np.testing.assert_array_equal(w.grad.numpy(), (np.arange(4.0) + 1) * n_threads * passes)


def test_concurrent_backward_fresh_process():
    """The issue's count (200 passes from threads, each first-time accumulation racing) in a fresh process."""
    r = run_fresh("""
        import threading, numpy as np, tinygrad_rnn as tr
        w = tr.tensor(np.zeros(64), requires_grad=True); x = tr.tensor(np.ones(64))
        b = threading.Barrier(8)
        def work():
            b.wait()
            for _ in range(25):
                (w * x).sum().backward()
        ts = [threading.Thread(target=work) for _ in range(8)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print("PASSES", int(w.grad.numpy()[0]))
        """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "PASSES 200" in r.stdout


def test_no_grad_is_per_thread():
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def other():
        with tr.no_grad():
            inside.set()
            release.wait(10)
            seen["other"] = tr.is_grad_enabled()

    t = threading.Thread(target=other)
    t.start()
    inside.wait(10)
    x = t64([1.0])
    y = x * 2.0  # the main thread still records while the other is inside no_grad
    seen["main"] = tr.is_grad_enabled() and y.requires_grad
    release.set()
    t.join()
    assert seen == {"other": False, "main": True}
    assert _mode.enabled


# ---------------------------------------------------------------------------------------------
# anomaly mode


def test_anomaly_names_op_output_and_creation_line():
    x = t64([0.0, 4.0])
    with tr.autograd.detect_anomaly():
        assert tr.autograd.is_anomaly_enabled()
        y = x.sqrt()  # the line the error must point at
        line = sys._getframe().f_lineno - 1
        with pytest.raises(RuntimeError) as e:
            y.sum().backward()
    assert not tr.autograd.is_anomaly_enabled()
    msg = str(e.value)
    assert "Function 'Sqrt' returned inf values in its 0th output" in msg
    assert f"{__file__}:{line}" in msg
    assert "tinygrad_rnn/ops.py" not in msg  # the library's own frames are trimmed


def test_anomaly_off_is_silent_and_set_detect_anomaly_works():
    x = t64([0.0])
    x.sqrt().sum().backward()  # off: inf flows through, as in PyTorch without anomaly mode
    assert np.isinf(x.grad.numpy()[0])
    prev = tr.autograd.set_detect_anomaly(True)
    try:
        assert tr.autograd.is_anomaly_enabled() and tr.autograd.is_anomaly_check_nan_enabled()
        x.grad = None
        with pytest.raises(RuntimeError, match="'Sqrt' returned inf"):
            x.sqrt().sum().backward()
    finally:
        tr.autograd.set_detect_anomaly(False)
    assert not tr.autograd.is_anomaly_enabled()
    del prev
    with tr.autograd.set_detect_anomaly(True):
        assert tr.autograd.is_anomaly_enabled()
    assert not tr.autograd.is_anomaly_enabled()
    with pytest.raises(TypeError, match="mode must be a bool"):
        tr.autograd.set_detect_anomaly(1)


def test_anomaly_nan_in_gradient_names_which_input():
    a, b = t64([1.0, 2.0]), t64([0.0, 1.0])
    with tr.autograd.detect_anomaly():
        z = (a / b).sum()
        with pytest.raises(RuntimeError, match=r"Function 'Div' returned inf values in its 0th output \(the gradient "
                                               r"for its input 0 of shape \(2,\), float64"):
            z.backward()


def test_anomaly_check_nan_false_only_keeps_stacks():
    x = t64([0.0])
    with tr.autograd.detect_anomaly(check_nan=False):
        x.sqrt().sum().backward()
    assert np.isinf(x.grad.numpy()[0])


def test_anomaly_forward_check_covers_fused_recurrence():
    lstm = tr.nn.LSTM(3, 4, dtype=tr.float64, seed=0)
    x = np.zeros((5, 2, 3))
    x[2, 1, 0] = np.nan
    with tr.autograd.detect_anomaly(check_forward=True):
        with pytest.raises(RuntimeError, match=r"Function 'FusedRecurrence\[lstm\]' returned nan values in its output 0"):
            lstm(tr.tensor(x))
    out, _ = lstm(tr.tensor(x))  # off again: no check
    assert np.isnan(out.numpy()).any()


def test_anomaly_backward_through_fused_recurrence_names_mode():
    gru = tr.nn.GRU(2, 3, dtype=tr.float64, seed=0)
    x = t64(np.ones((4, 1, 2)))
    with tr.autograd.detect_anomaly():
        out, _ = gru(x)
        # a NaN seed gradient enters the recurrence's backward
        with pytest.raises(RuntimeError, match=r"'FusedRecurrence\[gru\]' returned nan"):
            out.backward(np.full(out.shape, np.nan))


def test_function_name_with_mode():
    class Op(tr.Function):
        def forward(self, a, mode):
            self.mode = mode
            return a * 1.0

        def backward(self, g):
            return g

    y = Op.apply(t64([1.0]), mode="fancy")
    assert y.grad_fn.name() == "Op[fancy]"
    assert (t64([1.0]) * 2.0).grad_fn.name() == "Mul"


# ---------------------------------------------------------------------------------------------
# conventions found by PyTorch's OpInfo inputs (each checked against the value PyTorch gives)


def test_softmax_family_on_empty_axis():
    for shape, dim in (((2, 0), -1), ((0, 3), 0), ((0,), 0)):
        x = t64(np.zeros(shape))
        for fn in (F.softmax, F.log_softmax):
            y = fn(x, dim)
            assert y.shape == shape
            y.sum().backward()
            assert x.grad.shape == shape
            x.grad = None


def test_zero_d_squeeze_amax_argmax():
    x = t64(3.0)
    assert x.squeeze(0).shape == () and x.squeeze(-1).shape == () and x.squeeze().shape == ()
    assert tr.amax(x).item() == 3.0 and x.amax(0).shape == () and x.amin(-1, keepdim=True).shape == ()
    assert x.argmax(0).shape == () and x.argmax().shape == () and x.argmax(0).item() == 0
    y = tr.tensor(np.array([[1.0, 5.0], [7.0, 2.0]]))
    assert y.argmax(keepdim=True).shape == (1, 1) and y.argmax().item() == 2


def test_nll_loss_none_keeps_target_shape():
    logp = t64(np.log(np.full((2, 3, 4), 1 / 3)))
    t = np.zeros((2, 4), dtype=np.int64)
    assert F.nll_loss(logp, t, reduction="none").shape == (2, 4)
    assert F.nll_loss(t64(np.log([0.5, 0.5])), np.array(1), reduction="none").shape == ()
    # an ignored row with log-probability -inf contributes 0, not nan
    lp = t64(np.array([[-np.inf, 0.0], [np.log(0.5), np.log(0.5)]]))
    out = F.nll_loss(lp, np.array([-100, 1]), reduction="sum")
    assert out.item() == pytest.approx(np.log(2.0))
    out.backward()
    np.testing.assert_array_equal(lp.grad.numpy(), [[0, 0], [0, -1]])


def test_relu_at_infinities_and_nan():
    x = t64([-np.inf, -1.0, 0.0, 2.0, np.inf, np.nan])
    y = x.relu()
    np.testing.assert_array_equal(y.numpy()[:5], [0.0, 0.0, 0.0, 2.0, np.inf])
    assert np.isnan(y.numpy()[5])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0, 0, 1, 1, 1])  # PyTorch drops it only where x <= 0
    a = t64([np.nan, -np.inf, -2.0, 0.0, 3.0])
    a.abs().sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [0, -1, -1, 0, 1])  # sign, 0 at NaN as in PyTorch


def test_flatten_zero_size():
    x = t64(np.zeros((2, 0, 3)))
    assert x.flatten().shape == (0,) and x.flatten(1).shape == (2, 0) and x.flatten(0, 1).shape == (0, 3)
    with pytest.raises(ValueError, match="start_dim"):
        x.flatten(2, 1)


def test_max_min_dim_ties_go_to_returned_index():
    a = np.array([[3.0, 1.0, 3.0], [2.0, 2.0, 0.0]])
    for name, idx in (("max", [0, 0]), ("min", [1, 2])):
        x = t64(a)
        res = getattr(x, name)(1)
        np.testing.assert_array_equal(res.indices.numpy(), idx)
        res.values.sum().backward()
        expect = np.zeros_like(a)
        expect[[0, 1], idx] = 1.0
        np.testing.assert_array_equal(x.grad.numpy(), expect)
    x = t64(a)
    x.max().backward()  # the whole-tensor form keeps the even split, as PyTorch's max()
    np.testing.assert_array_equal(x.grad.numpy(), [[0.5, 0, 0.5], [0, 0, 0]])


@pytest.mark.parametrize("dim_kw", [{"dim": ()}, {"dim": []}])
def test_dim_empty_tuple_reduces_all(dim_kw):
    a = np.arange(6.0).reshape(2, 3)
    assert t64(a).sum(**dim_kw).item() == 15.0
    assert t64(a).mean(**dim_kw).item() == 2.5
    assert tr.amax(t64(a), **dim_kw).item() == 5.0
    assert t64(a).amin(**dim_kw).item() == 0.0


def test_pow_zero_base_gradients_follow_pytorch():
    # d/da a**b is 0 where b == 0 (not 0 * inf); d/db is 0 where a == 0 and b >= 0 (not 0 * -inf)
    a, b = t64([0.0, 0.0, 2.0, 0.0]), t64([0.0, 2.0, 0.0, 0.5])
    (a ** b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy()[:3], [0.0, 0.0, 0.0])
    assert np.isinf(a.grad.numpy()[3])  # 0.5 * 0 ** -0.5: PyTorch's inf too
    np.testing.assert_allclose(b.grad.numpy(), [0.0, 0.0, np.log(2.0), 0.0])
    e = t64([0.0, 1.0, 2.5])
    (0.0 ** e).sum().backward()  # rpow with a zero base
    np.testing.assert_array_equal(e.grad.numpy(), [0.0, 0.0, 0.0])
    z = t64([0.0, 3.0])
    (z ** 0).sum().backward()
    np.testing.assert_array_equal(z.grad.numpy(), [0.0, 0.0])


def test_max_with_a_tensor_is_elementwise():
    x, t0 = t64([1.0, 5.0, 2.0]), t64(2.0)
    m = x.max(t0)
    np.testing.assert_array_equal(m.numpy(), [2.0, 5.0, 2.0])
    m.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0, 0.5])
    assert t0.grad.item() == 1.5
    np.testing.assert_array_equal(x.min(tr.tensor(np.array(2.0))).numpy(), [1.0, 2.0, 2.0])
    with pytest.raises(TypeError, match="no dim"):
        x.max(t0, keepdim=True)


# ---------------------------------------------------------------------------------------------
# the everyday ops, gradchecked in float64 (ties and edges as PyTorch defines them)


def test_clamp_values_gradient_and_edges():
    rng = np.random.default_rng(0)
    x = t64(rng.standard_normal((3, 4)))
    assert tr.gradcheck(lambda t: tr.clamp(t, -0.5, 0.7), [x])
    assert tr.gradcheck(lambda t: t.clip(min=0.1), [x])
    assert tr.gradcheck(lambda t: t.clamp(max=-0.2), [x])
    e = t64([-1.0, 0.0, 0.5, 1.0, 2.0, np.nan])
    y = e.clamp(0.0, 1.0)
    np.testing.assert_array_equal(y.numpy()[:5], [0.0, 0.0, 0.5, 1.0, 1.0])
    assert np.isnan(y.numpy()[5])
    y.sum().backward()
    np.testing.assert_array_equal(e.grad.numpy(), [0, 1, 1, 1, 0, 0])  # a value at a bound keeps its gradient
    e.grad = None
    e.clamp(1.0, 0.0).sum().backward()  # min > max: every entry is max, no gradient
    np.testing.assert_array_equal(e.grad.numpy(), np.zeros(6))
    i = tr.tensor(np.array([-3, 0, 9]))
    np.testing.assert_array_equal(i.clamp(-1, 2).numpy(), [-1, 0, 2])
    assert i.clamp(-1, 2).dtype == tr.int64
    with pytest.raises(ValueError, match="at least one"):
        e.clamp()
    with pytest.raises(TypeError, match="tensor bounds"):
        e.clamp(min=t64(0.0))
    with pytest.raises(TypeError, match="float min"):
        i.clamp(0.5)
    f32 = tr.tensor(np.array([0.25, 3.0], dtype=np.float32)).clamp(0.0, 1.0)
    assert f32.dtype == tr.float32


def test_maximum_minimum_gradient_ties_and_nan():
    rng = np.random.default_rng(1)
    a, b = t64(rng.standard_normal((3, 1))), t64(rng.standard_normal((1, 4)))
    assert tr.gradcheck(lambda x, y: tr.maximum(x, y), [a, b])
    assert tr.gradcheck(lambda x, y: tr.minimum(x, y), [a, b])
    x, y = t64([1.0, 2.0, 3.0, np.nan]), t64([1.0, 5.0, 0.0, 1.0])
    m = tr.maximum(x, y)
    np.testing.assert_array_equal(m.numpy()[:3], [1.0, 5.0, 3.0])
    assert np.isnan(m.numpy()[3])
    m.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.5, 0.0, 1.0, 1.0])  # NaN: both sides get it (PyTorch)
    np.testing.assert_array_equal(y.grad.numpy(), [0.5, 1.0, 0.0, 1.0])
    x.grad = y.grad = None
    tr.minimum(x, y).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.5, 1.0, 0.0, 1.0])
    assert tr.maximum(2.0, t64([1.0, 3.0])).tolist() == [2.0, 3.0]
    f = tr.maximum(tr.tensor(np.ones(2, dtype=np.float32)), t64([0.0, 2.0]))
    assert f.dtype == tr.float64
    with pytest.raises(ValueError, match="cannot be broadcast"):
        tr.maximum(t64(np.ones(3)), t64(np.ones(2)))


def test_amax_amin_functions_gradcheck_and_ties():
    rng = np.random.default_rng(2)
    x = t64(rng.permutation(24).reshape(2, 3, 4).astype(np.float64))
    for dim in ((), 1, (0, 2), -1):
        assert tr.gradcheck(lambda t, d=dim: tr.amax(t, d), [x])
        assert tr.gradcheck(lambda t, d=dim: tr.amin(t, d, keepdim=True), [x])
    t = t64([[1.0, 4.0, 4.0], [0.0, 0.0, 0.0]])
    tr.amin(t, 1).sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]])
    with pytest.raises(ValueError, match="empty"):
        tr.amax(t64(np.zeros((0, 2))), 0)
    assert tr.amax(t64(np.zeros((0, 2))), 1).shape == (0,)


def test_t_transposes_matrices_only():
    m = t64(np.arange(6.0).reshape(2, 3))
    assert m.t().shape == (3, 2)
    assert tr.gradcheck(lambda a: a.t() * tr.tensor(np.arange(6.0).reshape(3, 2)), [m])
    v = t64([1.0, 2.0])
    assert v.t() is v and t64(1.0).t().shape == ()
    with pytest.raises(ValueError, match="<= 2 dimensions"):
        t64(np.zeros((1, 2, 3))).t()


def test_sqrt_gradcheck_and_int_input():
    x = t64([0.5, 2.0, 9.0])
    assert tr.gradcheck(lambda t: t.sqrt(), [x])
    r = tr.tensor(np.array([4, 9])).sqrt()
    assert r.dtype == tr.float32 and r.tolist() == [2.0, 3.0]


def test_anomaly_forward_check_without_graph_points_at_the_line():
    x = tr.tensor(np.array([-1.0, 1.0]))
    with tr.autograd.detect_anomaly(check_forward=True):
        with pytest.raises(RuntimeError) as e:
            x.log()
        line = sys._getframe().f_lineno - 1
    assert "Function 'Log' returned nan values in its output 0" in str(e.value)
    assert f"{__file__}:{line}" in str(e.value)
    assert np.isnan(x.log().numpy()[0])  # off again: no check


@pytest.mark.parametrize("batch_first", [False, True])
def test_fused_recurrence_output_changed_in_place_raises(batch_first):
    lstm = tr.nn.LSTM(2, 3, dtype=tr.float64, seed=0, batch_first=batch_first)
    out, _ = lstm(t64(np.ones((4, 2, 2))))
    with tr.no_grad():
        out *= 2.0  # out shares memory with the hidden states the backward reads
    shape = r"\(2, 4, 3\)" if batch_first else r"\(4, 2, 3\)"  # the op's own (time-major) output
    expect = r"\[FusedRecurrence\[lstm\] output 0 of shape " + shape + r", float64\] is at version 1"
    with pytest.raises(RuntimeError, match=expect):
        out.sum().backward()


def test_squeeze_several_dims_as_pytorch():
    x = t64(np.zeros((1, 3, 1, 1)))
    assert x.squeeze((0, 2)).shape == (3, 1) and x.squeeze([1, -1]).shape == (1, 3, 1) and x.squeeze(()).shape == x.shape
    assert t64(2.0).squeeze((0,)).shape == ()
    with pytest.raises(ValueError, match="repeated dim"):
        x.squeeze((0, 0))
    with pytest.raises(ValueError, match="out of range"):
        x.squeeze((4,))


# property checks of the new ops: float64 values and gradcheck, float32 against float64 (check_op)


@given(a=arrays(shapes(max_dims=3), away_from=(-0.5, 0.7), min_distance=1e-3))
def test_clamp_check_op(a):
    check_op(lambda x: tr.clamp(x, -0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7), a)
    check_op(lambda x: x.clip(max=0.7), lambda x: np.minimum(x, 0.7), a)


@pytest.mark.parametrize("name", ["maximum", "minimum"])
@given(data=st.data(), pair=broadcasting_pairs(max_dims=3))
def test_maximum_minimum_check_op(name, data, pair):
    a, b = data.draw(arrays(pair[0])), data.draw(arrays(pair[1]))
    assume(np.all(np.abs(np.subtract(a, b)) > 1e-3))  # away from ties, where the derivative jumps
    check_op(lambda x, y: getattr(tr, name)(x, y), getattr(np, name), a, b)


@pytest.mark.parametrize("name", ["amax", "amin"])
@given(data=st.data(), shape=shapes(min_dims=1, max_dims=3))
def test_amax_amin_check_op(name, data, shape):
    a = data.draw(arrays(shape, distinct=True))
    dim = data.draw(st.sampled_from([(), 0, -1, tuple(range(len(shape)))]))
    ref = {"amax": np.max, "amin": np.min}[name]
    check_op(lambda x: getattr(tr, name)(x, dim), lambda x: ref(x, axis=None if dim == () else dim), a)


@given(a=arrays(shapes(min_dims=0, max_dims=2)))
def test_t_check_op(a):
    check_op(lambda x: x.t(), lambda x: x.T, a)


@given(a=arrays(shapes(max_dims=3), low=0.1, high=4.0))
def test_sqrt_check_op(a):
    check_op(lambda x: x.sqrt(), np.sqrt, a)


# -- review findings: in-place arithmetic inside a graph (each compared with what PyTorch gives) ---------


def test_iadd_updates_every_name_for_the_tensor():
    # y += w must give y itself the new history: z is the same tensor, so w gets a gradient through it
    x = tr.tensor(np.array([1.0, 2.0]), requires_grad=True)
    w = tr.tensor(np.array([5.0, 5.0]), requires_grad=True)
    y = x * 2
    z = y
    y += w
    assert z is y
    z.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])


def test_imul_on_graph_tensor_keeps_the_old_value_for_backward():
    x = tr.tensor(np.array([1.0, 2.0]), requires_grad=True)
    w = tr.tensor(np.array([3.0, 4.0]), requires_grad=True)
    y = x * 1
    y *= w
    (y * y).sum().backward()  # d/dx (x w)^2 = 2 x w^2, d/dw = 2 x^2 w
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.array([1.0, 2.0]) * np.array([9.0, 16.0]))
    np.testing.assert_allclose(w.grad.numpy(), 2 * np.array([1.0, 4.0]) * np.array([3.0, 4.0]))


def test_iadd_into_a_view_of_a_graph_tensor_is_refused_not_silently_wrong():
    a = tr.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    w = tr.tensor(np.array([10.0, 10.0]), requires_grad=True)
    b = a * 1
    v = b[0:2]
    with pytest.raises(RuntimeError, match="shares its memory"):
        v += w
    r = b.reshape(3)
    with pytest.raises(RuntimeError, match="shares its memory"):
        b += tr.tensor(np.ones(3), requires_grad=True)  # b's view r exists: r's graph would not see it
    assert r.shape == (3,)


def test_iadd_on_a_plain_tensor_with_grad_operand_builds_history():
    acc = tr.zeros(2, dtype=tr.float64)
    w = tr.tensor(np.array([1.0, 2.0]), requires_grad=True)
    acc += w * 3
    assert acc.requires_grad and not acc.is_leaf
    acc.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [3.0, 3.0])


def test_public_function_names_survive_the_method_renaming():
    x = tr.tensor(np.array([1.0]))
    with pytest.raises(TypeError, match="clamp|clip"):
        tr.clamp(x, foo=1)
    assert tr.maximum.__qualname__ == "maximum"
