"""gradcheck itself: it passes on correct ops and, the negative controls, it *fails* on wrong ones."""
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_rnn as tr
from tinygrad_rnn import Function, GradcheckError, gradcheck
from tinygrad_rnn.testing import arrays, shapes


class WrongExp(Function):
    """exp with a backward that is off by a factor of two."""

    def forward(self, a):
        self.out = self.xp.exp(a)
        return self.out

    def backward(self, g):
        return 2 * g * self.out


class MulWrongForSecond(Function):
    """a * b with a correct gradient for a and a wrong one (sign flipped) for b."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return g * self.b, -g * self.a


class WrongAtOneEntry(Function):
    """The identity, whose backward corrupts a single entry: (1, 2)."""

    def forward(self, a):
        return a.copy()

    def backward(self, g):
        g = g.copy()
        g[1, 2] += 0.5
        return g


def _x(shape=(2, 3), seed=0, dtype=np.float64):
    return tr.tensor(np.random.default_rng(seed).uniform(-1, 1, shape).astype(dtype), requires_grad=True)


# ---------------------------------------------------------------------------------------
# passing


@pytest.mark.parametrize("mode", ["full", "directional"])
@given(data=st.data(), shape=shapes(max_dims=3, max_side=4))
def test_passes_on_correct_ops(mode, data, shape):
    a = tr.tensor(data.draw(arrays(shape)), requires_grad=True)
    b = tr.tensor(data.draw(arrays(shape)), requires_grad=True)
    assert gradcheck(lambda x, y: (x * y).tanh() + x.exp() * 0.1, (a, b), atol=1e-6, rtol=1e-5, mode=mode)


def test_non_tensor_and_non_grad_inputs_are_passed_through():
    x, c = _x(), tr.tensor(np.full((2, 3), 2.0))
    assert gradcheck(lambda a, k, scale: (a * k * scale).sum(), (x, c, 3.0))


def test_tuple_outputs_are_all_checked():
    x = _x((4, 2))
    assert gradcheck(lambda a: (a.tanh(), a * a), (x,))
    with pytest.raises(GradcheckError):
        gradcheck(lambda a: (a.tanh(), WrongExp.apply(a)), (x,))


# ---------------------------------------------------------------------------------------
# negative controls: each must fail


def test_wrong_backward_fails_and_names_input_and_entry():
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda a: WrongExp.apply(a), (_x(),))
    msg = str(info.value)
    assert "input 0" in msg and "(2, 3)" in msg and "index (0, 0)" in msg
    assert "analytic" in msg and "numerical" in msg


def test_failure_names_the_right_input():
    x, y = _x(seed=1), _x(seed=2)
    with pytest.raises(GradcheckError, match=r"input 1 \(shape \(2, 3\)\) at index \(0, 0\)"):
        gradcheck(lambda a, b: MulWrongForSecond.apply(a, b), (x, y))
    # with the wrong input frozen, the rest is correct
    assert gradcheck(lambda a, b: MulWrongForSecond.apply(a, b), (x, tr.tensor(y.numpy())))


def test_failure_names_the_right_entry():
    with pytest.raises(GradcheckError, match=re.escape("at index (1, 2)")):
        gradcheck(lambda a: WrongAtOneEntry.apply(a), (_x((3, 4)),))


@pytest.mark.parametrize("op", ["exp", "tanh"])
def test_far_too_large_eps_fails(op):
    x = _x((3, 3))
    fn = lambda a: getattr(a, op)()
    assert gradcheck(fn, (x,), eps=1e-6)
    with pytest.raises(GradcheckError):
        gradcheck(fn, (x,), eps=1.0)


def test_directional_mode_catches_wrong_backward():
    x = _x((5, 4))
    assert gradcheck(lambda a: a.exp(), (x,), mode="directional")
    with pytest.raises(GradcheckError, match="directional"):
        gradcheck(lambda a: WrongExp.apply(a), (x,), mode="directional")
    # one corrupted entry among 20 is still seen: direction components are bounded away from 0
    with pytest.raises(GradcheckError):
        gradcheck(lambda a: WrongAtOneEntry.apply(a), (_x((3, 4)),), mode="directional", num_directions=1)


def test_raise_exception_false_returns_false():
    assert gradcheck(lambda a: WrongExp.apply(a), (_x(),), raise_exception=False) is False
    assert gradcheck(lambda a: WrongExp.apply(a), (_x(),), mode="directional", raise_exception=False) is False
    assert gradcheck(lambda a: a.exp(), (_x(),), raise_exception=False) is True


def test_gradcheck_error_is_an_assertion_error():
    assert issubclass(GradcheckError, AssertionError)


# ---------------------------------------------------------------------------------------
# float32 inputs are checked in float64


def test_float32_inputs_checked_in_float64_and_caller_untouched():
    x = _x((3, 4), dtype=np.float32)
    before = x.numpy().copy()
    seen = []

    def fn(a):
        seen.append(a.dtype)
        return (a * a).tanh()

    # in float32, central differences with eps=1e-6 are noise; passing this proves the promotion
    assert gradcheck(fn, (x,), eps=1e-6, atol=1e-8, rtol=1e-6)
    assert set(seen) == {tr.float64}
    assert x.grad is None and x.dtype == tr.float32
    np.testing.assert_array_equal(x.numpy(), before)


def test_caller_tensors_unchanged_by_full_and_directional():
    x = _x((2, 2))
    before = x.numpy().copy()
    gradcheck(lambda a: a.sigmoid(), (x,))
    gradcheck(lambda a: a.sigmoid(), (x,), mode="directional")
    np.testing.assert_array_equal(x.numpy(), before)
    assert x.grad is None


# ---------------------------------------------------------------------------------------
# bad calls


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        gradcheck(lambda a: a, (_x(),), mode="sideways")
    with pytest.raises(ValueError, match="no input requires grad"):
        gradcheck(lambda a: a * 2, (tr.tensor([1.0]),))
    with pytest.raises(TypeError):
        gradcheck(lambda a: a.argmax(), (_x(),))
