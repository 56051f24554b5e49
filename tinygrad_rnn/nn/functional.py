"""Stateless neural-network functions: ``tr.nn.functional`` (``F``), with PyTorch's names.

    >>> import tinygrad_rnn as tr; import tinygrad_rnn.nn.functional as F
    >>> round(F.cross_entropy(tr.tensor([[0.0, 0.0]]), tr.tensor([1])).item(), 4)
    0.6931
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _checks
from ..functions import Embedding, SoftmaxCrossEntropy
from ..functions import Linear as _LinearOp
from ..ops import where
from ..tensor import _FLOATS, Generator, Tensor, _rng

__all__ = ["cross_entropy", "nll_loss", "embedding", "mse_loss", "dropout", "softmax", "log_softmax",
           "linear", "relu", "tanh", "sigmoid"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_targets(input: Tensor, target: Any, what: str, ignore_index: int) -> Any:
    if not isinstance(input, Tensor):
        raise TypeError(f"{what}: input must be a Tensor, got {type(input).__name__}")
    if input.dtype not in _FLOATS:
        raise TypeError(f"{what}: input must be float32/float64, got {input.dtype}")
    t = target if isinstance(target, Tensor) else Tensor(np.asarray(target), device=input.device)
    if t.device != input.device:
        raise ValueError(f"{what}: input is on {input.device} but target on {t.device}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"{what}: target must hold integer class indices, got {t.dtype}")
    return t


def _flatten_classes(input: Tensor, t: Tensor, what: str) -> tuple[Tensor, Any]:
    """(N, C) logits and (N,) targets from PyTorch's accepted layouts: (C,), (N, C), (N, C, d1, ...)."""
    if input.ndim == 1:
        if t.ndim != 0:
            raise ValueError(f"{what}: 1-D input of shape {input.shape} needs a 0-d target, got {t.shape}")
        return input.reshape(1, -1), t._data.reshape(1)
    if input.ndim == 2:
        if t.shape != input.shape[:1]:
            raise ValueError(f"{what}: input of shape {input.shape} needs target of shape {input.shape[:1]}, got {t.shape}")
        return input, t._data
    expect = (input.shape[0],) + input.shape[2:]
    if t.shape != expect:
        raise ValueError(f"{what}: input of shape {input.shape} (N, C, ...) needs target of shape {expect}, got {t.shape}")
    perm = (0,) + tuple(range(2, input.ndim)) + (1,)
    return input.permute(perm).reshape(-1, input.shape[1]), t._data.reshape(-1)


def cross_entropy(input: Tensor, target: Any, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy of logits ``input`` (N, C) against class indices ``target`` (N,).

    ``ignore_index`` rows add nothing to the loss or the gradient and are not counted in the
    mean. Logits of shape (N, C, d1, ...) with targets (N, d1, ...) are accepted as in PyTorch.
    """
    _checks.one_of("cross_entropy: reduction", reduction, _REDUCTIONS)
    t = _check_targets(input, target, "cross_entropy", ignore_index)
    logits, tgt = _flatten_classes(input, t, "cross_entropy")
    c = logits.shape[1]
    # an owned copy: the backward kernels index by these targets, and the caller's array may change
    tgt = tgt.astype(np.int64, copy=True)
    bad = (tgt != ignore_index) & ((tgt < 0) | (tgt >= c))
    if bool(bad.any()):
        v = int(tgt[bad].reshape(-1)[0])
        raise ValueError(f"cross_entropy: target {v} is out of range for {c} classes (ignore_index={ignore_index})")
    out = SoftmaxCrossEntropy.apply(logits, targets=tgt, ignore_index=int(ignore_index), reduction=reduction)
    if reduction == "none" and input.ndim > 2:
        out = out.reshape((input.shape[0],) + input.shape[2:])
    elif reduction == "none" and input.ndim == 1:
        out = out.reshape(())
    return out


def nll_loss(input: Tensor, target: Any, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of log-probabilities ``input`` (N, C) at ``target`` (N,)."""
    _checks.one_of("nll_loss: reduction", reduction, _REDUCTIONS)
    t = _check_targets(input, target, "nll_loss", ignore_index)
    logp, tgt = _flatten_classes(input, t, "nll_loss")
    tgt = tgt.astype(np.int64, copy=False)
    keep = tgt != ignore_index
    c = logp.shape[1]
    if bool(((tgt < 0) | (tgt >= c))[keep].any()):
        raise ValueError(f"nll_loss: a target is out of range for {c} classes")
    xp = logp._be.xp
    safe = xp.where(keep, tgt, 0)
    picked = logp[xp.arange(logp.shape[0]), safe]
    # where, not a 0/1 weight: an ignored row's log-probability may be -inf, and -inf * 0 is nan
    rows = where(Tensor(keep, device=logp.device), -picked, 0.0)
    if reduction == "none":  # PyTorch's shape: the target's
        return rows.reshape(t.shape)
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / max(int(keep.sum()), 1)


def embedding(input: Any, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Rows of ``weight`` (V, D) at integer ids ``input`` (any shape) -> shape ``input.shape + (D,)``."""
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise ValueError(f"embedding: weight must be a 2-D Tensor (num_embeddings, dim), got {getattr(weight, 'shape', weight)}")
    ids = input if isinstance(input, Tensor) else Tensor(np.asarray(input), device=weight.device)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got {ids.dtype}")
    if ids.device != weight.device:
        raise ValueError(f"embedding: ids on {ids.device} but weight on {weight.device}")
    v = weight.shape[0]
    if padding_idx is not None:
        if not -v <= _checks.integer("embedding: padding_idx", padding_idx) < v:
            raise ValueError(f"embedding: padding_idx {padding_idx} is out of range for {v} embeddings")
    # an owned copy: the backward scatters by these ids, and the caller may reuse the buffer meanwhile
    arr = ids._data.astype(np.int64, copy=True)
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)  # one read each, also from a GPU
    if arr.size and (lo < 0 or hi >= v):
        raise ValueError(f"embedding: id {lo if lo < 0 else hi} is out of range for {v} embeddings")
    if padding_idx is not None and padding_idx < 0:
        padding_idx += v
    return Embedding.apply(weight, ids=arr, padding_idx=padding_idx)


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Mean squared error; shapes must match exactly (no silent broadcast)."""
    _checks.one_of("mse_loss: reduction", reduction, _REDUCTIONS)
    t = target if isinstance(target, Tensor) else Tensor(np.asarray(target, dtype=input.dtype), device=input.device)
    if t.shape != input.shape:
        raise ValueError(f"mse_loss: input shape {input.shape} and target shape {t.shape} differ")
    d = input - t
    sq = d * d
    if reduction == "none":
        return sq
    return sq.sum() if reduction == "sum" else sq.mean()


def dropout(input: Tensor, p: float = 0.5, training: bool = True, generator: Generator | None = None,
            seed: int | None = None) -> Tensor:
    """Inverted dropout: zero each entry with probability p and scale the rest by 1/(1-p)."""
    if not 0.0 <= _checks.finite_number("dropout: p", p) <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    keep = _rng(seed, generator).random(input.shape) >= p
    mask = (keep / (1.0 - p)).astype(input.dtype)
    return input * Tensor(mask, device=input.device)


def softmax(input: Tensor, dim: int = -1) -> Tensor: return input.softmax(dim)
def log_softmax(input: Tensor, dim: int = -1) -> Tensor: return input.log_softmax(dim)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``input @ weight.T + bias`` with PyTorch's (out_features, in_features) weight layout.

    A 2-D weight runs as one GEMM over all of ``input``'s leading dimensions (``functions.Linear``).

    >>> linear(Tensor(np.ones((5, 7, 3))), Tensor(np.ones((4, 3))), Tensor(np.zeros(4))).shape
    (5, 7, 4)
    """
    for what, t in (("input", input), ("weight", weight), ("bias", bias)):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"linear: {what} must be a Tensor, got {type(t).__name__}")
    if input.ndim == 0 or weight.ndim == 0:
        raise ValueError(f"linear: input and weight need at least 1 dimension, got shapes {input.shape} and {weight.shape}")
    if input.shape[-1] != weight.shape[-1]:
        raise ValueError(f"linear: input features {input.shape[-1]} (shape {input.shape}) do not match "
                         f"weight shape {weight.shape} (out_features, in_features)")
    fused = (weight.ndim == 2 and input.dtype in _FLOATS and weight.dtype == input.dtype
             and (bias is None or (bias.shape == weight.shape[:1] and bias.dtype == input.dtype)))
    if not fused:  # mixed dtypes, a 1-D weight, a broadcasting bias: the general ops handle (and check) them
        out = input @ weight.T
        return out + bias if bias is not None else out
    return _LinearOp.apply(input, weight) if bias is None else _LinearOp.apply(input, weight, bias)


def relu(input: Tensor) -> Tensor: return input.relu()
def tanh(input: Tensor) -> Tensor: return input.tanh()
def sigmoid(input: Tensor) -> Tensor: return input.sigmoid()


