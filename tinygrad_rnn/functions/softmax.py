"""The softmax family: ``Softmax``, ``LogSoftmax`` and the fused ``SoftmaxCrossEntropy``."""
from __future__ import annotations

from ..tensor import Function


class Softmax(Function):
    saves_inputs, saves_outputs = False, True

    def forward(self, a, axis):
        xp = self.xp
        self.axis = axis
        if a.size == 0:  # an empty axis (or batch): nothing to normalise, and max() would raise
            self.out = a.copy()
            return self.out
        e = xp.exp(a - a.max(axis=axis, keepdims=True))
        self.out = e / e.sum(axis=axis, keepdims=True)
        return self.out

    def backward(self, g):
        y = self.out
        return y * (g - (g * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    saves_inputs, saves_outputs = False, True

    def forward(self, a, axis):
        self.axis = axis
        if a.size == 0:
            self.out = a.copy()
            return self.out
        self.out = self.be.log_softmax(a, axis)  # the backend's: fused where it can (CPU float32 rows)
        return self.out

    def backward(self, g):
        return self.be.log_softmax_backward(self.out, g, self.axis)


class SoftmaxCrossEntropy(Function):
    """log-softmax and negative log-likelihood fused: one pass forward, one pass backward.

    The backward is ``softmax(z) - onehot(t)`` per row, computed from the saved row max and
    log-sum (kept apart: their sum, the log-sum-exp, rounds for huge logits): no (N, C)
    probability matrix is kept between the passes.
    """

    fresh_grads = True  # the logits' gradient is a new array (the backward kernel's output)

    def forward(self, logits, targets, ignore_index, reduction):
        self.logits, self.targets, self.ignore_index, self.reduction = logits, targets, ignore_index, reduction
        loss_rows, self.row_max, self.log_sum = self.be.softmax_xent(logits, targets, ignore_index)
        self.count = int((targets != ignore_index).sum())
        if reduction == "none":
            return loss_rows
        total = loss_rows.sum()
        if reduction == "sum":
            return total
        # all targets ignored: 0 rather than PyTorch's 0/0 = nan, so an all-padding batch is harmless
        return total / max(self.count, 1)

    def backward(self, g):
        xp = self.xp
        if self.reduction == "none":
            rows = g
        elif self.reduction == "sum":
            rows = xp.broadcast_to(g, (self.logits.shape[0],))
        else:
            rows = xp.broadcast_to(g / max(self.count, 1), (self.logits.shape[0],))
        return self.be.softmax_xent_backward(self.logits, self.row_max, self.log_sum, self.targets, self.ignore_index, rows)
