"""Gradient hooks, once-per-pass leaf accumulation and the version counter (the engine seam that
data-parallel training and in-place safety build on)."""
import numpy as np
import pytest

import tinygrad_rnn as tr


def test_leaf_hook_sees_summed_gradient_and_may_replace_it():
    x = tr.tensor(np.array([1.0, 2.0]), requires_grad=True)
    seen = []

    def hook(g):
        seen.append(g.numpy().copy())
        return g * 10

    x.register_hook(hook)
    (x * x + 3 * x).sum().backward()
    assert len(seen) == 1  # once per pass, on the sum of both uses
    np.testing.assert_allclose(seen[0], 2 * np.array([1.0, 2.0]) + 3)
    np.testing.assert_allclose(x.grad.numpy(), 10 * (2 * np.array([1.0, 2.0]) + 3))


def test_nonleaf_hook_changes_what_flows_upstream():
    x = tr.tensor(np.array([1.0, -1.0]), requires_grad=True)
    y = x * 2
    y.register_hook(lambda g: g * 0 + 1.5)
    (y * y).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


def test_post_accumulate_hook_fires_once_with_final_grad():
    w = tr.tensor(np.array([[1.0, 2.0], [3.0, 4.0]]), requires_grad=True)
    calls = []
    w.register_post_accumulate_grad_hook(lambda t: calls.append(t.grad.numpy().copy()))
    x = tr.tensor(np.ones((3, 2)))
    ((x @ w).sum() + (w * w).sum()).backward()
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0], 3.0 + 2 * w.numpy())


def test_post_accumulate_hook_order_follows_backward():
    # the layer nearest the loss finishes first: its hook fires before the earlier layer's
    a = tr.tensor(np.ones((2, 2)), requires_grad=True)
    b = tr.tensor(np.ones((2, 2)), requires_grad=True)
    order = []
    a.register_post_accumulate_grad_hook(lambda t: order.append("a"))
    b.register_post_accumulate_grad_hook(lambda t: order.append("b"))
    x = tr.tensor(np.ones((1, 2)))
    ((x @ a).tanh() @ b).sum().backward()
    assert order == ["b", "a"]


def test_handle_remove_and_bad_registrations():
    x = tr.tensor(np.array([1.0]), requires_grad=True)
    h = x.register_hook(lambda g: g * 100)
    h.remove()
    h.remove()  # idempotent
    (x * 2).sum().backward()
    assert x.grad.item() == 2.0
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        tr.tensor([1.0]).register_hook(lambda g: g)
    with pytest.raises(RuntimeError, match="non-leaf"):
        (x * 2).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(TypeError, match="callable"):
        x.register_hook(3)
    with pytest.raises(RuntimeError, match="shape"):
        x.register_hook(lambda g: tr.tensor(np.ones(5)))
        (x * 2).sum().backward()


def test_grad_accumulates_in_place_across_passes():
    w = tr.tensor(np.array([1.0, 2.0]), requires_grad=True)
    (w * 3).sum().backward()
    g = w.grad
    (w * 4).sum().backward()
    assert w.grad is g  # same buffer, as in PyTorch
    np.testing.assert_allclose(g.numpy(), [7.0, 7.0])


def test_first_gradient_is_a_private_copy():
    # Add hands the same array to both inputs: scaling one .grad must not touch the other
    a = tr.tensor(np.array([1.0]), requires_grad=True)
    b = tr.tensor(np.array([1.0]), requires_grad=True)
    (a + b).sum().backward()
    a.grad.data *= 5
    assert b.grad.item() == 1.0


def test_version_counter_bumps_and_is_shared_with_detach():
    x = tr.tensor(np.zeros(3))
    assert x._version == 0
    d = x.detach()
    x.copy_(np.ones(3))
    x.fill_(2.0)
    d.zero_()
    assert x._version == 3 and d._version == 3


def test_fresh_gradients_become_grad_uncopied_and_stay_independent():
    # Linear's weight gradient is a new array: .grad takes it as is; the bias and input gradients are
    # separate arrays, so scaling one .grad in place (as clipping does) leaves the others alone
    from tinygrad_rnn import nn

    lin = nn.Linear(3, 2).double()
    x = tr.tensor(np.arange(12.0).reshape(4, 3), requires_grad=True)
    seen = {}
    orig = tr.ops.Linear.backward

    def spy(self, g):
        out = orig(self, g)
        seen["gw"] = out[1]
        return out

    tr.ops.Linear.backward = spy
    try:
        lin(x).sum().backward()
    finally:
        tr.ops.Linear.backward = orig
    assert lin.weight.grad.numpy() is seen["gw"]
    np.testing.assert_allclose(lin.weight.grad.numpy(), np.tile(x.numpy().sum(0), (2, 1)))
    lin.weight.grad.data *= 0
    np.testing.assert_allclose(lin.bias.grad.numpy(), [4.0, 4.0])
    np.testing.assert_allclose(x.grad.numpy(), np.tile(lin.weight.numpy().sum(0), (4, 1)))


def test_shared_gradient_array_is_copied_for_the_first_grad():
    # Add hands one array to both inputs (not fresh): each leaf must get its own copy
    a = tr.tensor(np.ones(3), requires_grad=True)
    b = tr.tensor(np.ones(3), requires_grad=True)
    (a + b).sum().backward()
    assert a.grad.data is not b.grad.data
    assert not np.shares_memory(a.grad.data, b.grad.data)


def test_recurrent_and_cross_entropy_gradients_are_taken_uncopied_and_independent():
    # FusedRecurrence and SoftmaxCrossEntropy hand back new arrays (fresh_grads): the leaves take them as
    # they are, and no two leaves share memory (the LSTM's two biases get the same values, separate arrays)
    import sys

    from tinygrad_rnn import nn

    recurrent = sys.modules["tinygrad_rnn.functions.recurrent"]
    softmax = sys.modules["tinygrad_rnn.functions.softmax"]
    lstm = nn.LSTM(3, 4).double()
    x = tr.tensor(np.random.default_rng(0).standard_normal((5, 2, 3)), requires_grad=True)
    seen = {}
    orig = recurrent.FusedRecurrence.backward

    def spy(self, *g):
        out = orig(self, *g)
        seen["w_hh"] = out[4]
        return out

    recurrent.FusedRecurrence.backward = spy
    try:
        out, _ = lstm(x)
        out.sum().backward()
    finally:
        recurrent.FusedRecurrence.backward = orig
    assert lstm.weight_hh_l0.grad.numpy() is seen["w_hh"]
    grads = [p.grad.numpy() for p in lstm.parameters()] + [x.grad.numpy()]
    assert not any(np.shares_memory(a, b) for i, a in enumerate(grads) for b in grads[i + 1:])
    np.testing.assert_array_equal(lstm.bias_ih_l0.grad.numpy(), lstm.bias_hh_l0.grad.numpy())
    before = lstm.bias_hh_l0.grad.numpy().copy()
    lstm.bias_ih_l0.grad.data *= 0
    np.testing.assert_array_equal(lstm.bias_hh_l0.grad.numpy(), before)

    logits = tr.tensor(np.random.default_rng(1).standard_normal((4, 5)), requires_grad=True)
    orig_ce = softmax.SoftmaxCrossEntropy.backward
    seen_ce = {}

    def spy_ce(self, g):
        seen_ce["g"] = orig_ce(self, g)
        return seen_ce["g"]

    softmax.SoftmaxCrossEntropy.backward = spy_ce
    try:
        tr.nn.functional.cross_entropy(logits, tr.tensor(np.array([0, 1, 2, 3]))).backward()
    finally:
        softmax.SoftmaxCrossEntropy.backward = orig_ce
    assert logits.grad.numpy() is seen_ce["g"]
