"""Reductions: ``Sum``, ``Mean``, ``Max`` (ties share the gradient) and ``MaxDim`` (the indexed form)."""
from __future__ import annotations

import numpy as np

from ..tensor import Function


class Sum(Function):
    saves_inputs = False

    def forward(self, a, axis, keepdims):
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        return a.sum(axis=axis, keepdims=keepdims)

    def backward(self, g):
        if not self.keepdims and self.axis is not None:
            g = self.xp.expand_dims(g, self.axis)
        return self.xp.broadcast_to(g, self.shape)


class Mean(Sum):
    """Sum's backward, scaled by 1/n."""

    def forward(self, a, axis, keepdims):
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        n = a.size if axis is None else int(np.prod([a.shape[i] for i in axis]))
        self.scale = 1.0 / max(n, 1)
        return a.mean(axis=axis, keepdims=keepdims)

    def backward(self, g):
        return super().backward(g * self.scale)


class Max(Function):
    """Max over axes; ties share the gradient equally (a subgradient, as in PyTorch's max() and amax())."""

    saves_inputs = False  # keeps the mask of maxima

    def forward(self, a, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims
        m = a.max(axis=axis, keepdims=True)
        self.mask = a == m
        return m if keepdims else (m.reshape(()) if axis is None else m.squeeze(axis))

    def backward(self, g):
        if not self.keepdims and self.axis is not None:
            g = self.xp.expand_dims(g, self.axis)
        count = self.mask.sum(axis=self.axis, keepdims=True)
        return self.mask * (g / count)


class MaxDim(Function):
    """``max(dim)``/``min(dim)`` values: the gradient goes to the index returned (PyTorch's rule for
    the indexed forms; ties are not split as in ``max()``). ``pick`` is argmax or argmin."""

    saves_inputs = False  # keeps the indices

    def forward(self, a, axis, keepdims, pick):
        xp = self.xp
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        self.idx = xp.expand_dims(pick(a, axis=axis), axis)
        v = xp.take_along_axis(a, self.idx, axis=axis)
        return v if keepdims else v.squeeze(axis)

    def backward(self, g):
        xp = self.xp
        if not self.keepdims:
            g = xp.expand_dims(g, self.axis)
        pos = xp.arange(self.shape[self.axis]).reshape((-1,) + (1,) * (len(self.shape) - 1 - self.axis))
        return xp.where(pos == self.idx, g, xp.zeros((), dtype=g.dtype))


class TopK(Function):
    """``topk`` values along ``axis``: each output takes its gradient back to the entry it came from
    (the k indices along a row are distinct, so a plain scatter is exact)."""

    saves_inputs = False  # keeps the indices

    def forward(self, a, k, axis, largest, sorted_):
        xp = self.xp
        self.shape, self.axis = a.shape, axis
        # a stable sort of -a (largest) keeps the first of tied entries first, as NumPy's argmax does
        order = xp.argsort(-a if largest else a, axis=axis, kind="stable")
        idx = xp.take(order, xp.arange(k), axis=axis)
        if not sorted_:  # PyTorch leaves the order unspecified; ascending index order is one valid choice
            idx = xp.sort(idx, axis=axis)
        self.idx = idx
        return xp.take_along_axis(a, idx, axis=axis)

    def backward(self, g):
        xp = self.xp
        # scatter along the last axis of a contiguous buffer (plain fancy assignment: NumPy and CuPy alike)
        idx, gl = xp.moveaxis(self.idx, self.axis, -1), xp.moveaxis(g, self.axis, -1)
        n, k = self.shape[self.axis], idx.shape[-1]
        out = xp.zeros(idx.shape[:-1] + (n,), dtype=g.dtype)
        if k == 0 or out.size == 0:
            return xp.moveaxis(out, -1, self.axis)
        rows = xp.arange(out.size // max(n, 1))[:, None]
        out.reshape(-1, n)[rows, idx.reshape(-1, k)] = gl.reshape(-1, k)
        return xp.moveaxis(out, -1, self.axis)
