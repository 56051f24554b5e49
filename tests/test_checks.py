"""The argument checks: one exception class and one wording per kind of mistake, naming the argument."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

import tinygrad_rnn as tr
from tinygrad_rnn import _checks, data

NUMBER_CHECKS = [  # (check, what it says, a good value, out-of-range values)
    (_checks.finite_number, "a finite number", -2.5, []),
    (_checks.nonneg_number, "a finite number >= 0", 0.0, [-1e-9, -3]),
    (_checks.positive_number, "a finite number > 0", 1e-9, [0, 0.0, -1.0]),
    (_checks.probability, "a number in [0, 1)", 0.0, [1.0, 1, -0.1, 2.0]),
    (_checks.unit_interval, "a number in [0, 1]", 1.0, [-0.1, 1.5]),
]
INT_CHECKS = [
    (_checks.integer, "an integer", -7, []),
    (_checks.positive_int, "a positive integer", 1, [0, -1]),
    (_checks.nonneg_int, "an integer >= 0", 0, [-1]),
    (lambda name, v: _checks.int_at_least(name, v, 3), "an integer >= 3", 3, [2, -3]),
]


@pytest.mark.parametrize("check,what,good,bad", NUMBER_CHECKS)
def test_number_checks(check, what, good, bad):
    assert check("x", good) == good and type(check("x", np.float32(good))) is float
    for v in bad:
        with pytest.raises(ValueError, match=f"^x must be {re.escape(what)}, got {re.escape(repr(v))}$"):
            check("x", v)
    for v in (math.nan, math.inf, -math.inf, np.float64("nan")):  # never finite, whatever the range
        with pytest.raises(ValueError, match=f"^x must be {re.escape(what)}, got"):
            check("x", v)
    for v, kind in ((True, "bool"), (np.bool_(False), "bool"), ("0.5", "str"), (None, "NoneType"), ([1.0], "list"),
                    (tr.tensor([0.5]), "Tensor")):  # a bool is not a number here, nor is a one-element tensor
        with pytest.raises(TypeError, match=f"^x must be {re.escape(what)}, got {kind} "):
            check("x", v)


@pytest.mark.parametrize("check,what,good,bad", INT_CHECKS)
def test_int_checks(check, what, good, bad):
    got = check("n", np.int64(good))
    assert got == good and type(got) is int
    for v in bad:
        with pytest.raises(ValueError, match=f"^n must be {re.escape(what)}, got {v}$"):
            check("n", v)
    for v, kind in ((True, "bool"), (False, "bool"), (2.0, "float"), (np.float32(3), "float32"), ("3", "str"),
                    (None, "NoneType")):
        with pytest.raises(TypeError, match=f"^n must be {re.escape(what)}, got {kind} "):
            check("n", v)


def test_one_of():
    assert _checks.one_of("mode", "a", ("a", "b")) == "a"
    for v in ("c", 1, None, ["a"], {"a": 1}):  # unhashable values too: a ValueError listing the choices
        with pytest.raises(ValueError, match=r"^mode must be one of 'a', 'b', got "):
            _checks.one_of("mode", v, {"a": 0, "b": 1} if isinstance(v, str) else ("a", "b"))


def test_the_library_uses_the_wording():
    """A few call sites, each with its argument named and the house wording (one per kind of mistake)."""
    p = [tr.tensor(np.ones(2), requires_grad=True)]
    with pytest.raises(ValueError, match=r"Invalid learning rate: nan \('lr' must be a finite number >= 0, got nan\)"):
        tr.optim.SGD(p, lr=float("nan"))
    with pytest.raises(TypeError, match="'lr' must be a finite number >= 0, got bool True"):
        tr.optim.SGD(p, lr=True)
    with pytest.raises(ValueError, match=r"'betas'\[1\] must be a number in \[0, 1\), got 1.0"):
        tr.optim.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="step_size must be a positive integer, got float 2.0"):
        tr.optim.lr_scheduler.StepLR(tr.optim.SGD(p, lr=0.1), step_size=2.0)
    with pytest.raises(ValueError, match=r"Dropout: p must be a number in \[0, 1\], got 1.5"):
        tr.nn.Dropout(1.5)
    with pytest.raises(TypeError, match="Linear: in_features must be a positive integer, got bool True"):
        tr.nn.Linear(True, 2)
    with pytest.raises(ValueError, match="min_freq must be a positive integer, got 0"):
        data.Vocab(["a"], min_freq=0)
    with pytest.raises(ValueError, match="sort must be one of 'frequency', 'alphabetical', got 'random'"):
        data.Vocab(["a"], sort="random")
    with pytest.raises(TypeError, match="batch_size must be a positive integer, got float 2.0"):
        data.batchify(np.arange(10), 2.0)
