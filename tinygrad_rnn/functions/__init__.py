"""Every differentiable op: a ``Function`` with its forward and its local derivative side by side,
one module per family (the ``Tensor`` methods that call them are in ``ops.py``). Arrays come from the
inputs' backend (``self.xp`` is numpy or cupy), so each body is written once; every broadcasting
op's backward reduces its gradient to the input's shape with ``sum_to_shape``.

    >>> import tinygrad_rnn as tr; from tinygrad_rnn.functions import Tanh
    >>> Tanh.apply(tr.zeros(2)).tolist()
    [0.0, 0.0]
"""
# ruff: noqa: I001  (a compact index: one line per family module)
from ._broadcast import sum_to_shape
from .elementwise import (Abs, Add, Cast, Clamp, Div, Exp, Identity, Log, Maximum, Minimum, Mul, Neg, Pow, PowScalar,
                          Relu, Sigmoid, Sqrt, Sub, Tanh, ToDevice, Where)
from .indexing import Embedding, GetItem
from .linalg import Linear, MatMul
from .recurrent import CompiledRecurrence, FusedCell, FusedRecurrence
from .reduce import Max, MaxDim, Mean, Sum, TopK
from .shape import Cat, Expand, Permute, Reshape, Split, Stack
from .softmax import LogSoftmax, Softmax, SoftmaxCrossEntropy

__all__ = ["sum_to_shape", "Add", "Sub", "Mul", "Div", "Pow", "PowScalar", "Sqrt", "Maximum", "Minimum", "Clamp", "Where", "Neg",
           "Identity", "Exp", "Log", "Tanh", "Sigmoid", "Relu", "Abs", "Cast", "ToDevice", "MatMul", "Linear", "Sum", "Mean",
           "Max", "MaxDim", "TopK", "Reshape", "Permute", "Expand", "Cat", "Stack", "Split", "GetItem", "Embedding", "Softmax",
           "LogSoftmax", "SoftmaxCrossEntropy", "FusedRecurrence", "FusedCell", "CompiledRecurrence"]
