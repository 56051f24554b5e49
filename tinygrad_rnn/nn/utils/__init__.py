"""Gradient clipping and flat parameter vectors, as ``torch.nn.utils``.

Clipping the global gradient norm is what keeps RNN training from exploding (Pascanu et al.
2013; Zaremba et al. 2014 clip at 5):

    >>> import tinygrad_rnn as tr
    >>> w = tr.tensor([0.0, 0.0], requires_grad=True)
    >>> (w * tr.tensor([3.0, 4.0])).sum().backward()
    >>> round(clip_grad_norm_([w], max_norm=1.0).item(), 4), [round(g, 4) for g in w.grad.tolist()]
    (5.0, [0.6, 0.8])
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from ...tensor import Tensor, no_grad
from . import rnn  # noqa: F401  (torch.nn.utils.rnn)

__all__ = ["clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "vector_to_parameters"]


def _as_list(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    if isinstance(parameters, Tensor):
        return [parameters]
    params = list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"expected Tensors, got {type(p).__name__} at position {i}")
    return params


def _norm_type(norm_type: float | str) -> float:
    if norm_type in ("inf", "Inf"):
        return math.inf
    p = float(norm_type)
    if not p > 0:
        raise ValueError(f"norm_type must be > 0 or inf, got {norm_type!r}")
    return p


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float, norm_type: float | str = 2.0,
                    error_if_nonfinite: bool = False) -> Tensor:
    """Scale all gradients together so their joint ``norm_type``-norm is at most ``max_norm``.

    The norm is taken over all gradients as if concatenated into one vector (parameters whose
    ``.grad`` is None are skipped); gradients are multiplied in place by
    ``max_norm / (total + 1e-6)`` only when that is below 1. Returns the total norm before
    clipping as a 0-d tensor (dtype and device of the first gradient). Norms accumulate in float64.
    """
    p = _norm_type(norm_type)
    grads = [t.grad for t in _as_list(parameters) if t.grad is not None]
    if not grads:
        return Tensor(np.zeros((), dtype=np.float32))
    # one host transfer per device, not one per parameter
    per_device: dict[int, list] = {}
    for g in grads:
        per_device.setdefault(id(g._be), []).append(g)
    norms = [n for gs in per_device.values() for n in gs[0]._be.vector_norms([g._data for g in gs], p)]
    total = max(norms) if p == math.inf else float(np.linalg.norm(np.asarray(norms), p))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"the total norm of order {norm_type} of the gradients is non-finite ({total}), so it cannot be "
            "clipped; set error_if_nonfinite=False to scale them anyway (they become nan/0)")
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # also true for a nan total, which then spreads to the grads, as PyTorch
        with no_grad(), np.errstate(invalid="ignore"):  # inf * 0 -> nan is the documented outcome
            for g in grads:
                g._data *= coef
                g._bump_version()  # a graph that saved this gradient (create_graph) must see it changed
    first = grads[0]
    return Tensor(np.asarray(total, dtype=first.dtype), device=first.device)


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clamp every gradient element into [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    for t in _as_list(parameters):
        if t.grad is not None:
            xp = t.grad._be.xp
            xp.clip(t.grad._data, -clip_value, clip_value, out=t.grad._data)
            t.grad._bump_version()


def parameters_to_vector(parameters: Tensor | Iterable[Tensor]) -> Tensor:
    """All parameters flattened and concatenated into one 1-D tensor (differentiable)."""
    from ...ops import cat

    params = _as_list(parameters)
    if not params:
        raise ValueError("parameters_to_vector: no parameters")
    return cat([t.reshape(-1) for t in params])


def vector_to_parameters(vec: Tensor, parameters: Tensor | Iterable[Tensor]) -> None:
    """Copy consecutive slices of the 1-D ``vec`` into the parameters' values (in place, no graph)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected vec to be a Tensor, got {type(vec).__name__}")
    params = _as_list(parameters)
    total = sum(t.numel() for t in params)
    if vec.ndim != 1 or vec.numel() != total:
        raise ValueError(f"vector_to_parameters: vec of shape {vec.shape} for parameters with {total} elements in all")
    data = vec._data
    start = 0
    with no_grad():
        for t in params:
            n = t.numel()
            t.copy_(data[start:start + n].reshape(t.shape))
            start += n
