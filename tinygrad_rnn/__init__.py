"""tinygrad_rnn: a small reverse-mode autograd engine for recurrent networks.

    >>> import tinygrad_rnn as tr
    >>> x = tr.tensor([[1.0, -2.0]], requires_grad=True)
    >>> (x @ tr.ones(2, 3)).tanh().sum().backward(); x.grad.shape
    (1, 2)
"""
# ruff: noqa: I001  (ops must load first: it installs the Tensor methods)
from . import ops  # noqa: F401
from .backend import DeviceUnavailableError, get_backend, get_num_threads, set_num_threads
from .gradcheck import GradcheckError, gradcheck
from .ops import amax, amin, cat, chunk, clamp, clip, matmul, maximum, minimum, multinomial, narrow, split, stack, topk, where
from .dtypes import bfloat16, bool_, float16, float32, float64, half, int32, int64
from .random import Generator, get_rng_state, manual_seed, set_rng_state
from .tensor import (Function, Tensor, arange, as_tensor, device, enable_grad, eye, from_numpy, full, full_like,
                     is_grad_enabled, no_grad, ones, ones_like, rand, rand_like, randint, randn, randn_like, tensor, zeros,
                     zeros_like)
from .serialization import load, save
from .amp import autocast, get_autocast_dtype, is_autocast_enabled
from . import autograd, cuda, distributed, nn, optim, utils  # noqa: E402
from .nn.recurrent import scan  # noqa: E402 - tr.scan: JAX's lax.scan for recurrences (compiled)

__version__ = "0.1.0"

# PyTorch's top-level forms (``tr.exp(x)``, ``tr.sum(x, 1)``) and dtype names (``tr.float``, ``tr.long`` ...);
# set here, not imported by name, so that this module's own code never sees ``max``/``float`` shadowed
globals().update(ops.function_forms)
globals().update({"float": float32, "double": float64, "long": int64, "int": int32, "bool": bool_})

__all__ = [
    "Tensor", "Function", "tensor", "zeros", "ones", "full", "randn", "rand", "randint", "arange", "eye",
    "zeros_like", "ones_like", "full_like", "randn_like", "rand_like", "Generator", "manual_seed",
    "get_rng_state", "set_rng_state", "save", "load",
    "no_grad", "enable_grad", "is_grad_enabled", "cat", "stack", "split", "chunk", "where", "matmul",
    "gradcheck", "GradcheckError", "DeviceUnavailableError", "get_backend", "cuda", "distributed", "nn", "optim", "utils",
    "float32", "float64", "int32", "int64", "bool_", "__version__", "autograd", "clamp", "clip", "maximum",
    "minimum", "amax", "amin", "set_num_threads", "get_num_threads", "from_numpy", "as_tensor", "device", "topk",
    "multinomial", "narrow", "half", "float16", "scan", "bfloat16", "autocast", "is_autocast_enabled",
    "get_autocast_dtype", "amp",
]
