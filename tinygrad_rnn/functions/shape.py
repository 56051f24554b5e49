"""Shape ops: views (``Reshape``, ``Permute``, ``Expand``, ``Split``) and the copies ``Cat``, ``Stack``."""
from __future__ import annotations

import numpy as np

from ..tensor import Function
from ._broadcast import sum_to_shape


class Reshape(Function):
    saves_inputs, is_view = False, True

    def forward(self, a, shape):
        self.src = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return g.reshape(self.src)


class Permute(Function):
    saves_inputs, is_view = False, True

    def forward(self, a, axes):
        self.inv = tuple(np.argsort(axes))
        return a.transpose(axes)

    def backward(self, g):
        return g.transpose(self.inv)


class Expand(Function):
    saves_inputs, is_view = False, True

    def forward(self, a, shape):
        self.src = a.shape
        return self.xp.broadcast_to(a, shape)

    def backward(self, g):
        return sum_to_shape(self.xp, g, self.src)


class Cat(Function):
    saves_inputs = False

    def forward(self, *arrays, axis):
        self.axis = axis
        self.bounds = np.cumsum([a.shape[axis] for a in arrays])[:-1].tolist()
        return self.xp.concatenate(arrays, axis=axis)

    def backward(self, g):
        parts = self.xp.split(g, self.bounds, axis=self.axis)
        return tuple(p if need else None for p, need in zip(parts, self.needs))


class Stack(Function):
    saves_inputs = False

    def forward(self, *arrays, axis):
        self.axis = axis
        return self.xp.stack(arrays, axis=axis)

    def backward(self, g):
        return tuple(self.xp.take(g, i, axis=self.axis) if need else None for i, need in enumerate(self.needs))


class Split(Function):
    saves_inputs, is_view = False, True

    def forward(self, a, sizes, axis):
        self.axis = axis
        bounds = np.cumsum(sizes)[:-1].tolist()
        return tuple(self.xp.split(a, bounds, axis=axis))

    def backward(self, *gs):
        return self.xp.concatenate(gs, axis=self.axis)
