"""Each compilable op's forward and backward for one batch row, next to the op class it compiles.

The ONE place the compiler names the library's ``Function`` classes (``_F``). A rule holds the
op's forward as an expression of one element and its local derivative per input, accumulated
with ``+=`` into the input's gradient row (so broadcasting inputs are summed for free). The
placeholders are ``{a} {b} {c}`` (inputs), ``{o}`` (the output) and ``{g}`` (the output's
gradient); the backward reads exactly the values its templates name, and the forward saves
exactly those per step. A new elementwise op becomes compilable by one line here.

    >>> RULES[_F.Tanh].bwd[0]
    '{g} * (ONE - {o} * {o})'
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .. import functions as _F  # every Function class, by its name

__all__ = ["Rule", "RULES", "COMPARES", "rule_for", "needs_of", "pow_expr"]


@dataclass(frozen=True)
class Rule:
    """How one op compiles. ``kind``: ``ew`` (elementwise, broadcasting), ``reduce`` (over the
    last dim), ``softmax``, ``alias`` (a slice/reshape of its input: no code), ``cat``, ``gemm``
    (a product with a parameter) or ``refuse``. ``fwd``/``bwd`` are element templates (ew)."""

    kind: str
    fwd: str = ""
    bwd: tuple = ()
    reason: str = ""
    extra: dict = field(default_factory=dict)


def _ew(fwd: str, *bwd: str | None) -> Rule:
    return Rule("ew", fwd, tuple(bwd))


# derivative templates mirror the op-by-op backward's own order of operations, so that float64
# results agree to rounding (e.g. Div's -(g / b) * a / b, Sigmoid's g * o * (1 - o))
RULES: dict[Any, Rule] = {
    _F.Add: _ew("{a} + {b}", "{g}", "{g}"),
    _F.Sub: _ew("{a} - {b}", "{g}", "-{g}"),
    _F.Mul: _ew("{a} * {b}", "{g} * {b}", "{g} * {a}"),
    _F.Div: _ew("{a} / {b}", "{g} / {b}", "-({g} / {b}) * {a} / {b}"),
    _F.Neg: _ew("-{a}", "-{g}"),
    _F.Identity: _ew("{a}", "{g}"),
    _F.Expand: _ew("{a}", "{g}"),
    _F.Exp: _ew("math.exp({a})", "{g} * {o}"),
    _F.Log: _ew("math.log({a})", "{g} / {a}"),
    _F.Sqrt: _ew("math.sqrt({a})", "{g} / (TWO * {o})"),
    _F.Tanh: _ew("_tanh({a})", "{g} * (ONE - {o} * {o})"),
    _F.Sigmoid: _ew("_sigmoid({a})", "{g} * {o} * (ONE - {o})"),
    # PyTorch's masks: relu passes the gradient where not (a <= 0), abs has sign 0 at 0 and NaN
    _F.Relu: _ew("_relu({a}, ZERO)", "_select({a} <= ZERO, ZERO, {g})"),
    _F.Abs: _ew("abs({a})", "{g} * _sign({a}, ZERO, ONE)"),
    _F.Maximum: _ew("_maximum({a}, {b})", "_select({a} < {b}, ZERO, _select({a} == {b}, {g} / TWO, {g}))",
                    "_select({b} < {a}, ZERO, _select({a} == {b}, {g} / TWO, {g}))"),
    _F.Minimum: _ew("_minimum({a}, {b})", "_select({a} > {b}, ZERO, _select({a} == {b}, {g} / TWO, {g}))",
                    "_select({b} > {a}, ZERO, _select({a} == {b}, {g} / TWO, {g}))"),
    # Where's condition is its third input {c} (1.0 / 0.0), never differentiated
    _F.Where: _ew("_select({c} != ZERO, {a}, {b})", "_select({c} != ZERO, {g}, ZERO)",
                  "_select({c} != ZERO, ZERO, {g})", None),
    _F.Pow: _ew("{a} ** {b}", "_select({b} == ZERO, ZERO, {g} * {b} * {a} ** ({b} - ONE))",
                "{g} * _select(({a} == ZERO) & ({b} >= ZERO), ZERO, {o} * math.log({a}))"),
    _F.PowScalar: Rule("ew", "", (), extra={"scalar": True}),  # templates depend on p: pow_expr
    _F.Clamp: Rule("ew", "", (), extra={"clamp": True}),  # templates depend on lo/hi: clamp_rule
    _F.Sum: Rule("reduce", extra={"how": "sum"}),
    _F.Mean: Rule("reduce", extra={"how": "mean"}),
    _F.Max: Rule("reduce", extra={"how": "max"}),
    _F.MaxDim: Rule("reduce", extra={"how": "argmax"}),
    _F.Softmax: Rule("softmax", extra={"log": False}),
    _F.LogSoftmax: Rule("softmax", extra={"log": True}),
    _F.Split: Rule("alias"),
    _F.GetItem: Rule("alias"),
    _F.Reshape: Rule("alias"),
    _F.Cat: Rule("cat"),
    _F.Linear: Rule("gemm", extra={"trans": True}),  # x @ W.T (+ bias), W (out, in)
    _F.MatMul: Rule("gemm", extra={"trans": False}),  # x @ W, W (in, out)
    _F.Cast: Rule("refuse", reason="a dtype cast inside the cell (give the cell's inputs and parameters one dtype)"),
    _F.Permute: Rule("refuse", reason="a transpose of a value that depends on the step's input or state "
                                      "(it would mix batch rows)"),
    _F.Stack: Rule("refuse", reason="stack of per-step values (return them, or cat along the last dim)"),
}

# comparisons (Tensor.__lt__ ...) make no Function; the tracer records them under these names
COMPARES = {"__lt__": "<", "__le__": "<=", "__gt__": ">", "__ge__": ">=", "__eq__": "==", "__ne__": "!="}
for _name, _sym in COMPARES.items():
    RULES[_name] = _ew(f"_select({{a}} {_sym} {{b}}, ONE, ZERO)", None, None)


def rule_for(op: Any) -> Rule | None:
    return RULES.get(op)


def pow_expr(a: str, q: float) -> str:
    """``a ** q`` as NumPy computes it: its fast paths for -1, 0, 0.5, 1, 2 are exact operations."""
    special = {-1.0: f"(ONE / {a})", 0.0: "ONE", 0.5: f"math.sqrt({a})", 1.0: f"({a})", 2.0: f"({a} * {a})"}
    return special.get(float(q), f"({a} ** DT({float(q)!r}))")


def scalar_pow_rule(p: float) -> tuple[str, tuple]:
    """PowScalar: a ** p; the gradient is g * (p * a ** (p - 1)), 0 for p == 0 (PyTorch's rule)."""
    if p == 0:
        return "ONE", ("ZERO * {g}",)
    return pow_expr("{a}", p), (f"{{g}} * (DT({float(p)!r}) * {pow_expr('{a}', p - 1)})",)


def clamp_rule(lo: float | None, hi: float | None) -> tuple[str, tuple]:
    """max(a, lo) then min(., hi), NaN kept; the gradient passes where lo <= a <= hi."""
    fwd = "{a}"
    keep = []
    if lo is not None:
        fwd = f"_select({fwd} < DT({float(lo)!r}), DT({float(lo)!r}), {fwd})"
        keep.append(f"({{a}} >= DT({float(lo)!r}))")
    if hi is not None:
        fwd = f"_select({fwd} > DT({float(hi)!r}), DT({float(hi)!r}), {fwd})"
        keep.append(f"({{a}} <= DT({float(hi)!r}))")
    return fwd, (f"_select({' & '.join(keep)}, {{g}}, ZERO)",)


_PLACE = re.compile(r"\{([abco])\}")


def needs_of(templates: tuple) -> set[str]:
    """The placeholders (a, b, c, o) a set of backward templates reads."""
    out: set[str] = set()
    for t in templates:
        if t:
            out.update(_PLACE.findall(t))
    return out
