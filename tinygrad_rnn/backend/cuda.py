"""CuPy backend (optional). Importing this module never requires cupy."""
from __future__ import annotations

from . import Backend, DeviceUnavailableError

INSTALL_HINT = "install the GPU extra with: pip install 'tinygrad_rnn[cuda]' (CuPy for CUDA 12)"


def cuda_unavailable_reason() -> str | None:
    """None when a CUDA GPU is usable through CuPy, else a sentence saying why not."""
    try:
        import cupy
    except Exception as e:  # ImportError, or a broken CUDA install raising on import
        return f"CuPy is not installed or failed to import ({type(e).__name__}: {e}); {INSTALL_HINT}"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return f"CuPy is installed but no CUDA driver/GPU was found ({type(e).__name__}: {e})"
    if n < 1:
        return "CuPy is installed but no CUDA GPU is visible"
    return None


def make_cuda_backend() -> Backend:
    reason = cuda_unavailable_reason()
    if reason is not None:
        raise DeviceUnavailableError(f"device 'cuda' is not available: {reason}")
    raise DeviceUnavailableError("device 'cuda': the CuPy backend is not built yet")
