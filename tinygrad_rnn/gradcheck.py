"""Gradient checking as a product: analytic gradients against central finite differences.

    >>> import numpy as np, tinygrad_rnn as tr
    >>> x = tr.tensor(np.random.randn(3, 2), requires_grad=True)
    >>> tr.gradcheck(lambda a: (a * a).tanh().sum(), (x,))
    True
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .tensor import Tensor, no_grad

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """The analytic and numerical gradients disagree; the message names the input and entry."""


def _scalar_of(out: Any, proj: list) -> Tensor:
    """Reduce fn's output(s) to a scalar with fixed random weights, so every entry is tested."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    outs = [o for o in outs if isinstance(o, Tensor) and o.dtype.kind == "f"]
    if not outs:
        raise TypeError("gradcheck: fn must return a float Tensor or a tuple of them")
    if not proj:
        rng = np.random.default_rng(1234)
        for o in outs:
            # entries bounded away from zero so no output component goes unchecked
            w = rng.uniform(0.5, 1.5, size=o.shape) * rng.choice([-1.0, 1.0], size=o.shape)
            proj.append(Tensor(w.astype(o.dtype), device=o.device))
    total = None
    for o, w in zip(outs, proj):
        if o.shape != w.shape:
            raise ValueError(f"gradcheck: fn's output shape changed between calls ({w.shape} -> {o.shape})")
        term = (o * w).sum()
        total = term if total is None else total + term
    return total


def _value(fn: Callable, inputs: Sequence[Any], proj: list) -> float:
    with no_grad():
        return float(_scalar_of(fn(*inputs), proj).item())


def gradcheck(fn: Callable[..., Any], inputs: Sequence[Any], eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, mode: str = "full", num_directions: int = 3, seed: int = 0,
              raise_exception: bool = True) -> bool:
    """Check d fn / d input, in float64, for every input that requires grad.

    ``mode="full"`` perturbs every entry (central differences, step ``eps``) and fails with the
    input, the index, both values and the tolerance. ``mode="directional"`` compares
    ``grad . v`` with ``(f(x + eps v) - f(x - eps v)) / 2 eps`` for random directions ``v``
    over all inputs at once: cheap for large inputs. A non-scalar output is reduced with fixed
    random weights. Returns True, or raises GradcheckError (or returns False if
    ``raise_exception=False``).
    """
    if mode not in ("full", "directional"):
        raise ValueError(f"gradcheck: mode must be 'full' or 'directional', got {mode!r}")
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    if not any(isinstance(t, Tensor) and t.requires_grad for t in inputs):
        raise ValueError("gradcheck: no input requires grad")
    # the check runs on float64 leaf copies: float32 inputs are promoted, the caller's .grad untouched
    inputs = tuple(Tensor(t.numpy().astype(np.float64), device=t.device, requires_grad=True)
                   if isinstance(t, Tensor) and t.requires_grad else t for t in inputs)
    checked = [(i, t) for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    proj: list = []
    _scalar_of(fn(*inputs), proj).backward()
    analytic = {i: (t.grad.numpy().astype(np.float64) if t.grad is not None else np.zeros(t.shape)) for i, t in checked}

    def fail(msg: str) -> bool:
        if raise_exception:
            raise GradcheckError(msg)
        return False

    if mode == "full":
        for i, t in checked:
            host = t.numpy()
            flat = None if t._be.is_device else t._data.reshape(-1)
            for k in range(t.numel()):
                idx = np.unravel_index(k, t.shape)
                orig = float(host.reshape(-1)[k])
                _set(t, flat, k, orig + eps)
                fp = _value(fn, inputs, proj)
                _set(t, flat, k, orig - eps)
                fm = _value(fn, inputs, proj)
                _set(t, flat, k, orig)
                num = (fp - fm) / (2 * eps)
                ana = float(analytic[i][idx])
                if not abs(ana - num) <= atol + rtol * abs(num):
                    return fail(f"gradcheck failed for input {i} (shape {t.shape}) at index {tuple(int(x) for x in idx)}: "
                                f"analytic {ana:.10g} vs numerical {num:.10g} (|diff| {abs(ana - num):.3g} > "
                                f"atol {atol:g} + rtol {rtol:g} * |numerical|)")
        return True

    rng = np.random.default_rng(seed)
    for d in range(num_directions):
        # components away from zero: every entry of every input is exercised
        dirs = {i: rng.uniform(0.5, 1.5, t.shape) * rng.choice([-1.0, 1.0], t.shape) for i, t in checked}
        base = {i: t.numpy().copy() for i, t in checked}
        for i, t in checked:
            t.copy_(base[i] + eps * dirs[i])
        fp = _value(fn, inputs, proj)
        for i, t in checked:
            t.copy_(base[i] - eps * dirs[i])
        fm = _value(fn, inputs, proj)
        for i, t in checked:
            t.copy_(base[i])
        num = (fp - fm) / (2 * eps)
        ana = float(sum(np.sum(analytic[i] * dirs[i]) for i, _ in checked))
        if not abs(ana - num) <= atol + rtol * abs(num):
            return fail(f"directional gradcheck failed along random direction {d} (seed {seed}) over inputs "
                        f"{[i for i, _ in checked]}: analytic {ana:.10g} vs numerical {num:.10g} "
                        f"(|diff| {abs(ana - num):.3g} > atol {atol:g} + rtol {rtol:g} * |numerical|)")
    return True


def _set(t: Tensor, flat: Any, k: int, value: float) -> None:
    if flat is not None and np.shares_memory(flat, t._data):
        flat[k] = value
    else:
        idx = np.unravel_index(k, t.shape)
        t._data[idx] = value
