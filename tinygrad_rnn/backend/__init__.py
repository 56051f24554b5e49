"""The one place that decides where arrays live and which kernels run.

The engine (``tensor.py``, ``ops.py``) never imports numba or cupy: every op asks its
inputs' backend for the array module (``be.xp``) and for fused kernels by name
(``be.softmax_xent``, ``be.scatter_add_rows``, ...). A backend is created lazily, once
per device name, so importing the library never touches a GPU.

    >>> get_backend("cpu").xp.__name__
    'numpy'
"""
from __future__ import annotations

import threading
from typing import Any

__all__ = ["Backend", "DeviceUnavailableError", "get_backend", "get_num_threads", "normalize_device", "set_num_threads"]


class DeviceUnavailableError(RuntimeError):
    """Raised when a device is asked for that this machine or install cannot provide."""


class Backend:
    """Interface every backend implements; see ``cpu.py`` for the reference one."""

    name: str = "?"
    xp: Any = None

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        return self.xp.asarray(x, dtype=dtype)

    def to_host(self, a: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def mm(self, a: Any, b: Any, bias: Any = None) -> Any:
        """``a @ b (+ bias)`` for 2-D arrays and a bias row (the CPU backend may route it to its own BLAS)."""
        out = a @ b
        if bias is not None:
            out += bias
        return out

    def rnn_forward_input(self, mode: str, x: Any, w_ih: Any, bias: Any, w_hh: Any, b_hn: Any, h0: Any, c0: Any,
                          mask: Any, train: bool = True) -> Any:
        """A recurrent layer's forward from its input itself, the input projection made inside the time
        loop; None where the backend does not (the caller then projects and calls ``rnn_forward``)."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


_BACKENDS: dict[str, Backend] = {}
# an RLock: creating the CUDA backend may itself ask for the CPU one
_BACKENDS_LOCK = threading.RLock()


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
    OpenBLAS, OpenBLAS's thread count. Default: one per logical core. See backend/blas.py."""
    from . import blas

    blas.set_num_threads(n)


def get_num_threads() -> int:
    """The CPU thread count ``set_num_threads`` sets (``torch.get_num_threads``)."""
    from . import blas

    return blas.get_num_threads()
