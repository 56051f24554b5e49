"""Loss modules as ``torch.nn``: ``CrossEntropyLoss``, ``NLLLoss``, ``MSELoss`` over ``nn.functional``.

    >>> import tinygrad_rnn as tr
    >>> round(tr.nn.CrossEntropyLoss()(tr.tensor([[0.0, 0.0]]), tr.tensor([1])).item(), 4)
    0.6931
"""
from __future__ import annotations

from typing import Any

from .. import _checks
from ..tensor import Tensor
from . import functional as F
from .module import Module

__all__ = ["CrossEntropyLoss", "NLLLoss", "MSELoss"]


def _reduction(name: str, size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """PyTorch's legacy ``size_average``/``reduce`` flags, when given, decide the reduction (as there)."""
    if size_average is None and reduce is None:
        return _checks.one_of(f"{name}: reduction", reduction, F._REDUCTIONS)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return "none" if not reduce else ("mean" if size_average else "sum")


def _no_weight(name: str, weight: Any) -> None:
    if weight is not None:
        raise ValueError(f"{name}: per-class weight is not supported (our functional form has no weight); "
                         "weight the rows of reduction='none' yourself")


class _Loss(Module):
    def __init__(self, size_average: bool | None = None, reduce: bool | None = None, reduction: str = "mean"):
        super().__init__()
        self.reduction = _reduction(type(self).__name__, size_average, reduce, reduction)

    def extra_repr(self) -> str:
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """``nn.CrossEntropyLoss(ignore_index=-100, reduction='mean')``: logits (N, C[, d...]) against class indices.

    ``weight`` and ``label_smoothing`` are refused by name (not implemented) rather than ignored.
    """

    def __init__(self, weight: Tensor | None = None, size_average: bool | None = None, ignore_index: int = -100,
                 reduce: bool | None = None, reduction: str = "mean", label_smoothing: float = 0.0):
        _no_weight("CrossEntropyLoss", weight)
        if label_smoothing != 0.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing is not supported (got {label_smoothing})")
        super().__init__(size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.cross_entropy(input, target, ignore_index=self.ignore_index, reduction=self.reduction)


class NLLLoss(_Loss):
    """``nn.NLLLoss(ignore_index=-100, reduction='mean')``: log-probabilities (N, C[, d...]) at class indices."""

    def __init__(self, weight: Tensor | None = None, size_average: bool | None = None, ignore_index: int = -100,
                 reduce: bool | None = None, reduction: str = "mean"):
        _no_weight("NLLLoss", weight)
        super().__init__(size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.nll_loss(input, target, ignore_index=self.ignore_index, reduction=self.reduction)


class MSELoss(_Loss):
    """``nn.MSELoss(reduction='mean')``: input and target of the same shape."""

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)
