"""tinygrad_rnn: a small reverse-mode autograd engine for recurrent networks.

    >>> import tinygrad_rnn as tr
    >>> x = tr.tensor([[1.0, -2.0]], requires_grad=True)
    >>> (x @ tr.ones(2, 3)).tanh().sum().backward(); x.grad.shape
    (1, 2)
"""
# ruff: noqa: I001  (ops must load first: it attaches the operators to Tensor)
from . import ops  # noqa: F401
from .backend import DeviceUnavailableError, get_backend, get_num_threads, set_num_threads
from .gradcheck import GradcheckError, gradcheck
from .ops import amax, amin, cat, chunk, clamp, clip, matmul, maximum, minimum, split, stack, where
from .tensor import (Function, Generator, Tensor, arange, bool_, enable_grad, eye, float32, float64, full,
                     full_like, int32, int64, is_grad_enabled, manual_seed, no_grad, ones, ones_like, rand,
                     rand_like, randint, randn, randn_like, tensor, zeros, zeros_like)
from .tensor import get_rng_state, set_rng_state
from .serialization import load, save
from . import autograd, cuda, distributed, nn, optim  # noqa: E402
from .nn.recurrent import scan  # noqa: E402 - tr.scan: JAX's lax.scan for recurrences (compiled)

__version__ = "0.1.0"

__all__ = [
    "Tensor", "Function", "tensor", "zeros", "ones", "full", "randn", "rand", "randint", "arange", "eye",
    "zeros_like", "ones_like", "full_like", "randn_like", "rand_like", "Generator", "manual_seed",
    "get_rng_state", "set_rng_state", "save", "load",
    "no_grad", "enable_grad", "is_grad_enabled", "cat", "stack", "split", "chunk", "where", "matmul",
    "gradcheck", "GradcheckError", "DeviceUnavailableError", "get_backend", "cuda", "distributed", "nn", "optim",
    "float32", "float64", "int32", "int64", "bool_", "__version__", "autograd", "clamp", "clip", "maximum",
    "minimum", "amax", "amin", "set_num_threads", "get_num_threads", "scan",
]
