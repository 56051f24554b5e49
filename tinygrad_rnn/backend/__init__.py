"""The one place that decides where arrays live and which kernels run.

The engine (``tensor.py``, ``ops.py``) never imports numba or cupy: every op asks its
inputs' backend for the array module (``be.xp``) and for fused kernels by name
(``be.softmax_xent``, ``be.scatter_add_rows``, ...). A backend is created lazily, once
per device name, so importing the library never touches a GPU.

    >>> get_backend("cpu").xp.__name__
    'numpy'
"""
from __future__ import annotations

import functools
import math
import threading
from typing import Any

import numpy as np

from .._fork import renew_in_child

__all__ = ["Backend", "DeviceUnavailableError", "backend_of_array", "get_backend", "get_num_threads", "host_array",
           "is_host_array", "normalize_device", "set_num_threads"]


class DeviceUnavailableError(RuntimeError):
    """Raised when a device is asked for that this machine or install cannot provide."""


def _abstract(fn: Any) -> Any:
    """Mark a Backend method every backend must implement: calling the base one says which is missing."""
    @functools.wraps(fn)
    def missing(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement Backend.{fn.__name__} "
                                  f"(every backend must: see backend/__init__.py)")

    missing.__isabstractmethod__ = True  # type: ignore[attr-defined]
    return missing


class Backend:
    """The contract between the library and a place where arrays live: every method the engine, ``nn``,
    ``optim`` and ``distributed`` call on a backend is declared here. Methods marked abstract must be
    implemented; the others have a generic body written against ``xp`` that a backend may replace.
    ``cpu.py`` is the reference implementation; ``Backend.abstract_methods()`` is the checklist.

    Recurrent layers (modes ``"lstm"``, ``"gru"``, ``"rnn_tanh"``, ``"rnn_relu"``; layout in
    recurrence.py): ``rnn_forward`` from the layer's input, ``rnn_backward`` back to the projection's
    gradient; both may run recurrence.py's one time loop over ``gemm`` and ``rnn_step_*``.
    """

    name: str = "?"
    xp: Any = None
    # True when arrays live in memory the host cannot address (a GPU): host code must go through
    # to_host / from_host, and collectives take the device path (NCCL)
    is_device: bool = False

    @classmethod
    def abstract_methods(cls) -> list[str]:
        """Names of the methods a backend must implement (the checklist for a new one)."""
        return sorted(k for k, v in vars(Backend).items() if getattr(v, "__isabstractmethod__", False))

    # -- arrays in and out ----------------------------------------------------------------------
    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """Any array-like (lists, scalars, NumPy or another backend's array) as this backend's array."""
        return self.xp.asarray(host_array(x) if _foreign(self, x) else x, dtype=dtype)

    @_abstract
    def to_host(self, a: Any) -> np.ndarray:
        """This backend's array as a NumPy array (a copy for a device; the same memory on the CPU)."""

    @_abstract
    def from_host(self, a: np.ndarray, copy: bool = False) -> Any:
        """A NumPy array as this backend's array (``copy=True``: never the caller's memory)."""

    def check_index(self, shape: tuple, index: Any) -> None:
        """Raise IndexError where NumPy would for ``index`` into ``shape`` (for backends that wrap instead)."""

    # -- matrix products -------------------------------------------------------------------------
    def mm(self, a: Any, b: Any, bias: Any = None) -> Any:
        """``a @ b (+ bias)`` for 2-D arrays and a bias row (the CPU backend may route it to its own BLAS)."""
        out = a @ b
        if bias is not None:
            out += bias
        return out

    def mm_operand(self, a: Any) -> Any:
        """A 2-D matrix about to be an operand of several ``mm`` calls, made ready once: ``a`` itself here;
        the CPU backend under autocast returns it rounded to bfloat16 (so each product does not round it
        again). Only ``mm`` takes the result (and its ``.T``); anything else keeps using ``a``."""
        return a

    @_abstract
    def gemm(self, a: Any, b: Any, out: Any, beta: int) -> None:
        """``out = a @ b`` (beta 0) or ``out += a @ b`` (beta 1) in place, 2-D C-contiguous: the time loop's GEMM."""

    # -- fused kernels ---------------------------------------------------------------------------
    @_abstract
    def softmax_xent(self, logits: Any, targets: Any, ignore_index: int) -> tuple[Any, Any, Any]:
        """Rows of ``(loss, row_max, log_sum)`` of a cross-entropy over 2-D logits and int64 targets."""

    @_abstract
    def softmax_xent_backward(self, logits: Any, row_max: Any, log_sum: Any, targets: Any, ignore_index: int,
                              grad_rows: Any) -> Any:
        """``(softmax(logits) - onehot(targets)) * grad_rows[:, None]``, zero on ignored rows."""

    def log_softmax(self, a: Any, axis: int) -> Any:
        """``log_softmax`` of a non-empty array along ``axis`` (a backend may fuse it; this is the
        array-library form every backend inherits)."""
        xp = self.xp
        shifted = a - a.max(axis=axis, keepdims=True)
        return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))

    def log_softmax_backward(self, out: Any, g: Any, axis: int) -> Any:
        """The gradient of ``log_softmax`` from its output ``out`` and the output's gradient ``g``."""
        return g - self.xp.exp(out) * g.sum(axis=axis, keepdims=True)

    @_abstract
    def scatter_add_rows(self, num_rows: int, idx: Any, src: Any) -> Any:
        """``zeros((num_rows, D))`` with src's rows added at idx (duplicates accumulate)."""

    @_abstract
    def index_add(self, out: Any, index: Any, src: Any) -> None:
        """``out[index] += src`` with repeated indices accumulating (general advanced indexing)."""

    # -- activations of the op-by-op engine (functions/elementwise.py) ---------------------------
    def sigmoid(self, a: Any) -> Any:
        """``1 / (1 + exp(-a))`` as a new array, exact at NaN, +-inf and +-0 and without overflow."""
        xp = self.xp
        # exp of a negative number only: 1/(1+exp(-a)) overflows for very negative a. The numerator,
        # 1 where a >= 0 and e elsewhere, is max(e, a >= 0) (e <= 1; NaN propagates): the same values
        # as a select, without one (np.where is ~10 passes' worth on a random mask)
        if a.ndim == 0:  # NumPy's ufuncs give scalars (not writable) for 0-d input
            e = xp.exp(-xp.abs(a))
            return xp.asarray(xp.maximum(e, a >= 0) / (e + 1)).astype(a.dtype, copy=False)
        e = xp.abs(a)
        xp.negative(e, out=e)
        xp.exp(e, out=e)
        d = e + 1
        xp.maximum(e, a >= 0, out=e)
        xp.divide(e, d, out=e)
        return e

    def sigmoid_backward(self, y: Any, g: Any) -> Any:
        """``g * y * (1 - y)`` (y = sigmoid(a)) as a new array, multiplied in that order."""
        t = g * y
        t *= 1 - y
        return t

    def tanh_backward(self, y: Any, g: Any) -> Any:
        """``g * (1 - y * y)`` (y = tanh(a)) as a new array."""
        t = y * y
        if t.dtype != g.dtype or t.ndim == 0:
            return g * (1 - t)
        self.xp.subtract(1, t, out=t)  # in one buffer
        t *= g
        return t

    # -- recurrent layers -------------------------------------------------------------------------
    @_abstract
    def rnn_step_forward(self, mode: str, xw: Any, hw: Any, b_hn: Any, h_prev: Any, c_prev: Any, mask: Any,
                         store: Any, h_out: Any, c_out: Any) -> None:
        """One time step's pointwise gate math (writes h_out, c_out and the step's store row)."""

    @_abstract
    def rnn_step_backward(self, mode: str, store: Any, h_prev: Any, h_t: Any, c_prev: Any, c_t: Any, mask: Any,
                          dout: Any, dh_carry: Any, dc_carry: Any, dxw: Any, dhw: Any, dh_pass: Any,
                          dc_prev: Any) -> None:
        """One time step's backward gate math (writes dxw, dhw, dh_pass and dc_prev)."""

    def rnn_biases(self, mode: str, b_ih: Any, b_hh: Any, hidden: int, dtype: Any) -> tuple[Any, Any]:
        """A layer's two biases (or None, None) as ``rnn_forward``'s ``(bias, b_hn)``: summed into the
        projection's bias, except the GRU's b_hn, which stays inside ``r * (W_hn h + b_hn)``."""
        xp = self.xp
        if b_ih is None:
            return None, (xp.zeros(hidden, dtype=dtype) if mode == "gru" else None)
        if mode != "gru":
            return b_ih + b_hh, None
        bias = b_ih.copy()
        bias[: 2 * hidden] += b_hh[: 2 * hidden]
        return bias, xp.ascontiguousarray(b_hh[2 * hidden:])

    @_abstract
    def rnn_forward(self, mode: str, x: Any, w_ih: Any, bias: Any, w_hh: Any, b_hn: Any, h0: Any, c0: Any,
                    mask: Any, train: bool = True) -> tuple[Any, Any, Any]:
        """A layer's forward from its input x (T, B, D): ``(h_all, c_all, store)``; the backend decides where
        the projection ``x W_ih^T + bias`` is made. ``train=False`` keeps no store (None)."""

    @_abstract
    def rnn_forward_projected(self, mode: str, xw: Any, w_hh: Any, b_hn: Any, h0: Any, c0: Any, mask: Any,
                              train: bool = True) -> tuple[Any, Any, Any]:
        """As ``rnn_forward``, given the projection xw (T, B, G*H) already made."""

    @_abstract
    def rnn_backward(self, mode: str, w_hh: Any, store: Any, h_all: Any, c_all: Any, mask: Any, dout: Any,
                     dh_n: Any, dc_n: Any) -> tuple[Any, Any, Any, Any]:
        """Backprop through time: ``(dxw, dhw, dh0, dc0)`` (dhw is dxw except for the GRU)."""

    # -- reductions and optimizer steps --------------------------------------------------------------
    @_abstract
    def sum_squares(self, a: Any) -> float:
        """``sum(a**2)`` accumulated in float64, as a Python float."""

    def vector_norms(self, arrays: list, p: float) -> list[float]:
        """The p-norm of each array (flattened, in float64), as floats, with one host transfer for all."""
        xp = self.xp
        if not arrays:
            return []
        parts = [_vector_norm(xp, xp.asarray(a).reshape(-1).astype(np.float64), p) for a in arrays]
        return [float(v) for v in self.to_host(xp.stack(parts))]

    @_abstract
    def sgd_step(self, param: Any, grad: Any, momentum_buf: Any, *, lr: float, momentum: float, dampening: float,
                 weight_decay: float, nesterov: bool, first_step: bool) -> None:
        """One SGD update of ``param`` (and its momentum buffer) in place, as ``torch.optim.SGD``."""

    @_abstract
    def adam_step(self, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any, *, beta1: float,
                  beta2: float, eps: float, weight_decay: float, decoupled_decay: float, step_size: float,
                  bias_correction2_sqrt: float, amsgrad: bool) -> None:
        """One Adam/AdamW update in place, as ``torch.optim.Adam``."""

    @_abstract
    def rmsprop_step(self, param: Any, grad: Any, square_avg: Any, grad_avg: Any, momentum_buf: Any, *, lr: float,
                     alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool) -> None:
        """One RMSprop update in place, as ``torch.optim.RMSprop``."""

    @_abstract
    def adagrad_step(self, param: Any, grad: Any, state_sum: Any, *, clr: float, eps: float,
                     weight_decay: float) -> None:
        """One Adagrad update in place, as ``torch.optim.Adagrad``."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _vector_norm(xp: Any, v: Any, p: float) -> Any:
    if p == 2.0:  # one BLAS dot instead of abs, square and sum passes
        return xp.sqrt(xp.dot(v, v))
    a = xp.abs(v)
    if p == math.inf:
        return a.max() if a.size else xp.zeros((), dtype=a.dtype)
    if p == 1.0:
        return a.sum()
    return (a ** p).sum() ** (1.0 / p)


# ---------------------------------------------------------------------------------------------
# which backend owns an array: the one place that knows array types by their module


def _device_module(a: Any) -> bool:
    return type(a).__module__.startswith("cupy")


def backend_of_array(a: Any) -> Backend | None:
    """The backend whose arrays ``a`` is (NumPy: the CPU; CuPy: CUDA), None for anything else."""
    if isinstance(a, np.ndarray):
        return get_backend("cpu")
    if _device_module(a) and hasattr(a, "shape"):
        return get_backend("cuda")
    return None


def is_host_array(a: Any) -> bool:
    """True for arrays in host memory (NumPy), False for device arrays and non-arrays."""
    return isinstance(a, np.ndarray)


def host_array(a: Any) -> np.ndarray:
    """``a`` as a NumPy array: a device array copied to the host, anything else through ``np.asarray``."""
    if isinstance(a, np.ndarray):
        return a
    if _device_module(a) and hasattr(a, "shape"):
        return get_backend("cuda").to_host(a)
    return np.asarray(a)


def _foreign(be: Backend, a: Any) -> bool:
    """Whether ``a`` is a device array that ``be`` (a host backend) must copy in."""
    return not be.is_device and _device_module(a)


_BACKENDS: dict[str, Backend] = {}
# an RLock: creating the CUDA backend may itself ask for the CPU one
_BACKENDS_LOCK = threading.RLock()
renew_in_child(globals(), "_BACKENDS_LOCK", threading.RLock)


def normalize_device(device: Any) -> str:
    """Map ``"cpu"``, ``"cuda"``, ``"cuda:0"`` (or a Tensor/Backend) to a backend name."""
    if device is None:
        return "cpu"
    if isinstance(device, Backend):
        return device.name
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda', got {type(device).__name__}")
    name = device.strip().lower()
    if name.startswith("cuda"):
        if name not in ("cuda", "cuda:0"):
            raise ValueError(f"only one GPU is supported: use 'cuda' or 'cuda:0', got {device!r}")
        return "cuda"
    if name == "cpu":
        return "cpu"
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


def get_backend(device: Any = "cpu") -> Backend:
    """Return the (cached) backend for ``device``; raises DeviceUnavailableError for a missing GPU.

    Thread-safe: the first call per device creates the backend under a lock, so threads that make
    their first tensors at once all get the same one (ops compare backends by identity)."""
    name = normalize_device(device)
    be = _BACKENDS.get(name)  # the common case: no lock once the backend exists
    if be is None:
        with _BACKENDS_LOCK:
            be = _BACKENDS.get(name)
            if be is None:
                if name == "cpu":
                    from .cpu import CPUBackend

                    be = CPUBackend()
                else:
                    from .cuda import make_cuda_backend

                    be = make_cuda_backend()
                _BACKENDS[name] = be
    return be


def set_num_threads(n: int) -> None:
    """CPU threads for matrix products and recurrent layers, as ``torch.set_num_threads``: with the
    mkl extra our own pool (GEMMs split into blocks, a layer's batch into row blocks); with NumPy's
    OpenBLAS, OpenBLAS's thread count. Default: one per logical core. See backend/threads.py."""
    from . import blas

    blas.set_num_threads(n)


def get_num_threads() -> int:
    """The CPU thread count ``set_num_threads`` sets (``torch.get_num_threads``)."""
    from . import blas

    return blas.get_num_threads()
