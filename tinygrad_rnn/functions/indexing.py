"""Indexing: ``GetItem`` (basic slicing is a view) and ``Embedding`` (rows of a weight; scatter-add backward)."""
from __future__ import annotations

import numpy as np

from ..tensor import Function


class GetItem(Function):
    saves_inputs, is_view = False, True  # basic slicing is a view

    def forward(self, a, index, advanced):
        self.src, self.dtype, self.index, self.advanced = a.shape, a.dtype, index, advanced
        return a[index]

    def backward(self, g):
        xp = self.xp
        idx = self.index
        if not self.advanced:
            out = xp.zeros(self.src, dtype=self.dtype)
            out[idx] = g
            return out
        if len(self.src) == 2 and not isinstance(idx, tuple) and idx.dtype != np.bool_:
            # rows gathered by one integer array: the embedding-style fused scatter-add
            return self.be.scatter_add_rows(self.src[0], idx.reshape(-1), g.reshape(-1, self.src[1]))
        out = xp.zeros(self.src, dtype=self.dtype)
        self.be.index_add(out, idx, g)
        return out


class Embedding(Function):
    """Gather rows of the weight; backward scatter-adds the output gradient into those rows."""

    fresh_grads = True  # the scatter-add result is a new array

    def forward(self, weight, ids, padding_idx):
        self.ids, self.num, self.padding_idx = ids, weight.shape[0], padding_idx
        return weight[ids]

    def backward(self, g):
        d = g.shape[-1]
        gw = self.be.scatter_add_rows(self.num, self.ids.reshape(-1), g.reshape(-1, d))
        if self.padding_idx is not None:
            gw[self.padding_idx] = 0
        return gw
