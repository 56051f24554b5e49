"""CuPy backend (optional): arrays on one CUDA GPU, cuBLAS for matrix products, generated kernels.

Importing this module never imports cupy; ``make_cuda_backend()`` does, and only when a GPU is
usable (``cuda_unavailable_reason()`` is None). The kernels' per-element math lives in
``cuda_kernels.py`` as descriptions that the CPU tests check against the Numba kernels; this file
holds what needs a GPU: compiling and launching them (``CupyRunner``), the GEMM the recurrent time
loop (recurrence.py, shared with the CPU) calls, and the loop's capture into CUDA graphs.

    >>> from tinygrad_rnn.backend.cuda import cuda_unavailable_reason
    >>> isinstance(cuda_unavailable_reason(), (str, type(None)))
    True

**Recurrent layers.** Per step the loop (recurrence.py) runs one GEMM and one fused pointwise kernel
(biases are folded into the input projection, padding masks into the kernel); backward folds
``dh += dh_pass`` into the GEMM (cuBLAS ``beta = 1``), so it too is one GEMM and one kernel per step.
Launching ~2T small kernels from Python costs more than they run for at moderate sizes (about
40 us of host time per step against ~10 us of GPU work), so the whole forward (or backward) loop
of a (mode, shapes, dtype) seen twice is captured into a CUDA graph and replayed: inputs are copied
into the graph's own buffers, one launch runs all 2T nodes, outputs are copied out. On an H200 this
took a (B, T, D, H) = (32, 100, 256, 512) LSTM training step from 11.0 to 3.1 ms (cuDNN: 5.2 ms).
Capture needs a stream other than the legacy default one and a private memory pool that the cached
graph owns; the GEMMs go to cuBLAS through ctypes (``DirectCublas``) because CuPy's own cuBLAS
wrappers refuse to run during a capture. The first replay is checked against the plain loop, and
any failure falls back to the plain loop with one warning. Switch graphs off with
``TINYGRAD_RNN_CUDA_GRAPHS=0`` or ``get_backend("cuda").use_graphs = False``; without direct
cuBLAS (``TINYGRAD_RNN_DIRECT_CUBLAS=0``, or libcublas not found) GEMMs use cupy.matmul and the
loops are not captured.

**Emulation.** ``CUDABackend(xp=numpy, runner=NumpyRunner())`` runs this backend's code paths on
the CPU with every kernel evaluated from its description: the tests use it to check the wiring
(argument order, layouts, loops) without a GPU.
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from typing import Any

import numpy as np

from . import Backend, DeviceUnavailableError, cuda_kernels
from .recurrence import recurrence_backward, recurrence_forward

__all__ = ["CUDABackend", "CupyRunner", "NumpyRunner", "cuda_unavailable_reason", "gpu_count", "make_cuda_backend",
           "use_gpu", "INSTALL_HINT"]

INSTALL_HINT = ("install CuPy for your CUDA version: pip install 'tinygrad_rnn[cuda]' (cupy-cuda13x, CUDA 13 drivers) "
                "or pip install 'tinygrad_rnn[cuda12]' (cupy-cuda12x, CUDA 12 drivers)")
GRAPHS_ENV = "TINYGRAD_RNN_CUDA_GRAPHS"


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


def gpu_count() -> int:
    """CUDA GPUs visible through CuPy: 0 where CuPy is absent or finds no driver (never raises)."""
    import importlib.util

    if importlib.util.find_spec("cupy") is None:
        return 0
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # noqa: BLE001 - CuPy without a driver/GPU: no GPU to use
        return 0


def use_gpu(index: int, who: str = "this process") -> None:
    """Make GPU ``index`` the current device, before any GPU memory exists (one GPU per MPI rank).
    Raises RuntimeError if the CUDA backend already lives on another GPU."""
    import cupy

    from . import _BACKENDS

    current = cupy.cuda.runtime.getDevice()
    if "cuda" in _BACKENDS and current != index:  # GPU memory already lives on the wrong device
        raise RuntimeError(f"init_process_group() must come before the first GPU tensor: {who} should use GPU "
                           f"{index} but GPU {current} is already in use")
    cupy.cuda.runtime.setDevice(index)


def make_cuda_backend() -> Backend:
    reason = cuda_unavailable_reason()
    if reason is not None:
        raise DeviceUnavailableError(f"device 'cuda' is not available: {reason}")
    return CUDABackend()


# ------------------------------------------------------------------------------------------
# kernel runners: launch on the GPU, or evaluate the same descriptions with NumPy


class NumpyRunner:
    """Runs every kernel description with NumPy on host arrays (the CPU stand-in for CupyRunner)."""

    def cell(self, k: cuda_kernels.Kernel, arrays: tuple, rows: int, h: int) -> None:
        cuda_kernels.run_numpy(k, dict(zip((a for a, _ in k.arrays), arrays)), rows=rows, h=h)

    def flat(self, k: cuda_kernels.Kernel, arrays: tuple, scalars: tuple, n: int) -> None:
        cuda_kernels.run_numpy(k, dict(zip((a for a, _ in k.arrays), arrays)), dict(zip(k.scalars, scalars)))

    def xent_forward(self, logits, targets, ignore_index, loss, row_max, log_sum) -> None:
        n, c = logits.shape
        x = logits.astype(np.float64)
        mx = x.max(axis=1, keepdims=True)
        s = cuda_kernels.evaluate(cuda_kernels.XENT_TERM, {"x": x, "mx": mx})["e"].sum(axis=1)
        ok = (targets != ignore_index) & (targets >= 0) & (targets < c)
        xt = np.where(ok, x[np.arange(n), np.clip(targets, 0, max(c - 1, 0))], 0.0)
        out = cuda_kernels.evaluate(cuda_kernels.XENT_ROW,
                                    {"mx": mx[:, 0], "s": s, "xt": xt, "keep": (targets != ignore_index) * 1.0})
        row_max[...] = mx[:, 0]
        log_sum[...] = out["ls"]
        loss[...] = out["loss"]

    def xent_backward(self, logits, row_max, log_sum, targets, ignore_index, grad_rows, out) -> None:
        n, c = logits.shape
        vals = {"x": logits.astype(np.float64), "mx": row_max[:, None], "ls": log_sum[:, None], "g": grad_rows[:, None],
                "keep": (targets != ignore_index)[:, None] * 1.0, "hit": (targets[:, None] == np.arange(c)) * 1.0}
        out[...] = cuda_kernels.evaluate(cuda_kernels.XENT_BACKWARD, vals)["d"]

    def add_at(self, out, index, src) -> None:
        np.add.at(out, index, src)

    def gemm(self, a, b, out, beta: int) -> None:
        """out = a @ b (beta 0) or out += a @ b (beta 1); 2-D C-contiguous arrays of one dtype."""
        if beta:
            out += a @ b
        else:
            np.matmul(a, b, out=out)


class DirectCublas:
    """cuBLAS GEMMs through ctypes on a handle of our own.

    CuPy's cuBLAS wrappers refuse to run while a stream is being captured (NotImplementedError), so
    the captured time loops call cuBLAS directly: the library CuPy already loaded, a handle bound to
    the current stream, and a fixed 32 MiB workspace (so that captured GEMMs never allocate).
    """

    WORKSPACE_BYTES = 32 << 20

    def __init__(self, cupy: Any):
        import ctypes

        self.cp, self.ct = cupy, ctypes
        cupy.cuda.device.get_cublas_handle()  # makes CuPy load libcublas: we open the same file
        self.lib = lib = _open_cublas(ctypes)
        vp, i = ctypes.c_void_p, ctypes.c_int
        for name in ("cublasSgemm_v2", "cublasDgemm_v2"):
            f = getattr(lib, name)
            f.argtypes = [vp, i, i, i, i, i, vp, vp, i, vp, i, vp, vp, i]
            f.restype = i
        lib.cublasCreate_v2.argtypes = [ctypes.POINTER(vp)]
        lib.cublasSetStream_v2.argtypes = [vp, vp]
        lib.cublasSetWorkspace_v2.argtypes = [vp, vp, ctypes.c_size_t]
        for name in ("cublasCreate_v2", "cublasSetStream_v2", "cublasSetWorkspace_v2"):
            getattr(lib, name).restype = i
        handle = vp()
        self._check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        self.handle = handle
        self.workspace = cupy.empty(self.WORKSPACE_BYTES, dtype=np.uint8)
        self._stream: int | None = None
        self._scalars = {np.dtype(np.float32): (ctypes.c_float(0.0), ctypes.c_float(1.0), lib.cublasSgemm_v2),
                         np.dtype(np.float64): (ctypes.c_double(0.0), ctypes.c_double(1.0), lib.cublasDgemm_v2)}

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what} failed with cuBLAS status {status}")

    def gemm(self, a: Any, b: Any, out: Any, beta: int) -> None:
        """out = a @ b + beta * out for C-contiguous 2-D arrays of one float dtype, on the current stream."""
        stream = self.cp.cuda.get_current_stream().ptr
        if stream != self._stream:
            lib, vp = self.lib, self.ct.c_void_p
            self._check(lib.cublasSetStream_v2(self.handle, vp(stream)), "cublasSetStream")
            # set after the stream: cublasSetStream puts the handle back on cuBLAS's own workspace pool
            self._check(lib.cublasSetWorkspace_v2(self.handle, vp(self.workspace.data.ptr), self.WORKSPACE_BYTES),
                        "cublasSetWorkspace")
            self._stream = stream
        zero, one, f = self._scalars[out.dtype]
        m, k = a.shape
        n = b.shape[1]
        # row-major C (m x n) = A (m x k) B (k x n) is column-major C^T = B^T A^T: swap the operands
        self._check(f(self.handle, 0, 0, n, m, k, self.ct.byref(one), b.data.ptr, n, a.data.ptr, k,
                      self.ct.byref(one if beta else zero), out.data.ptr, n), "cublas gemm")


def _open_cublas(ctypes: Any) -> Any:
    names = []
    try:
        with open("/proc/self/maps") as f:
            names += [line.split()[-1] for line in f if "/libcublas.so" in line]
    except OSError:  # pragma: no cover - not Linux
        pass
    names += ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so", "cublas64_13.dll", "cublas64_12.dll"]
    for name in dict.fromkeys(names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise OSError("libcublas not found")


class CupyRunner:
    """Compiles each (kernel, dtype) once with NVRTC and launches it on the current stream."""

    BLOCK = 256

    def __init__(self, cupy: Any):
        self.cp = cupy
        self._fns: dict[tuple[str, str], Any] = {}
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        self.max_blocks = int(props.get("multiProcessorCount", 80)) * 32
        self.blas: DirectCublas | None = None
        self.blas_error: str | None = None
        if os.environ.get("TINYGRAD_RNN_DIRECT_CUBLAS", "1") == "0":
            self.blas_error = "switched off by TINYGRAD_RNN_DIRECT_CUBLAS=0"
        else:
            try:
                blas = DirectCublas(cupy)
                if self._probe(blas):
                    self.blas = blas
                else:  # pragma: no cover
                    self.blas_error = "its results disagreed with cupy.matmul"
            except Exception as e:  # pragma: no cover - depends on the CUDA install
                self.blas_error = f"{type(e).__name__}: {e}"

    @property
    def capturable(self) -> str | None:
        """None when the time loops can be captured in a CUDA graph, else why not."""
        return None if self.blas is not None else f"direct cuBLAS is unavailable ({self.blas_error})"

    def _probe(self, blas: DirectCublas) -> bool:
        """One small GEMM per dtype, both betas, against cupy.matmul."""
        cp = self.cp
        rng = np.random.default_rng(0)
        for dt in (np.float32, np.float64):
            a = cp.asarray(rng.standard_normal((5, 7)).astype(dt))
            b = cp.asarray(rng.standard_normal((7, 3)).astype(dt))
            c0 = cp.asarray(rng.standard_normal((5, 3)).astype(dt))
            for beta in (0, 1):
                out = c0.copy()
                blas.gemm(a, b, out, beta)
                if not bool(cp.allclose(out, a @ b + beta * c0, rtol=1e-4, atol=1e-5)):
                    return False
        return True

    # -- compile ----------------------------------------------------------------------------
    def function(self, k: cuda_kernels.Kernel, dtype: Any) -> Any:
        key = (k.name, np.dtype(dtype).name)
        fn = self._fns.get(key)
        if fn is None:
            name = "softmax_xent_forward" if k in (cuda_kernels.XENT_TERM, cuda_kernels.XENT_ROW) else k.name
            src = cuda_kernels.cuda_source(k, dtype)
            try:
                fn = self.cp.RawKernel(src, name)
                if hasattr(fn, "compile"):  # compile now, so an error names this kernel
                    fn.compile()
            except Exception as e:
                raise RuntimeError(f"compiling GPU kernel {name} for {key[1]} failed ({type(e).__name__}: {e})\n"
                                   f"--- source ---\n{src}") from e
            self._fns[key] = fn
        return fn

    def _grid(self, n: int) -> int:
        return max(1, min((n + self.BLOCK - 1) // self.BLOCK, self.max_blocks))

    # -- launches -----------------------------------------------------------------------------
    def cell(self, k: cuda_kernels.Kernel, arrays: tuple, rows: int, h: int) -> None:
        n = rows * h
        if n == 0:
            return
        fn = self.function(k, arrays[0].dtype)
        fn((self._grid(n),), (self.BLOCK,), arrays + (np.int32(rows), np.int32(h)))

    def flat(self, k: cuda_kernels.Kernel, arrays: tuple, scalars: tuple, n: int) -> None:
        if n == 0:
            return
        fn = self.function(k, arrays[0].dtype)
        fn((self._grid(n),), (self.BLOCK,), arrays + tuple(np.float64(s) for s in scalars) + (np.int64(n),))

    def xent_forward(self, logits, targets, ignore_index, loss, row_max, log_sum) -> None:
        n, c = logits.shape
        if n == 0:
            return
        block = int(min(256, max(32, 32 * ((c + 31) // 32))))
        fn = self.function(cuda_kernels.XENT_TERM, logits.dtype)
        fn((n,), (block,), (logits, targets, np.int64(ignore_index), loss, row_max, log_sum, np.int32(c)))

    def xent_backward(self, logits, row_max, log_sum, targets, ignore_index, grad_rows, out) -> None:
        n, c = logits.shape
        if n * c == 0:
            return
        fn = self.function(cuda_kernels.XENT_BACKWARD, logits.dtype)
        fn((self._grid(n * c),), (self.BLOCK,), (logits, row_max, log_sum, targets, np.int64(ignore_index), grad_rows, out,
                                                  np.int64(n), np.int32(c)))

    def add_at(self, out, index, src) -> None:
        at = getattr(getattr(self.cp, "add", None), "at", None)
        if at is not None:
            try:
                at(out, index, src)
                return
            except Exception:  # an index form this CuPy's ufunc.at does not take: cupyx handles those
                pass
        import cupyx

        cupyx.scatter_add(out, index, src)

    def gemm(self, a, b, out, beta: int) -> None:
        """out = a @ b (beta 0) or out += a @ b (beta 1): one direct cuBLAS call, else cupy.matmul."""
        if self.blas is not None:
            self.blas.gemm(a, b, out, beta)
        elif beta:
            out += self.cp.matmul(a, b)
        else:
            self.cp.matmul(a, b, out=out)


# ------------------------------------------------------------------------------------------
# CUDA graphs of the recurrent time loops


class _GraphEntry:
    __slots__ = ("graph", "pool", "static", "outs")

    def __init__(self, graph: Any, pool: Any, static: list, outs: tuple):
        self.graph, self.pool, self.static, self.outs = graph, pool, static, outs


class GraphCache:
    """Captured time loops, keyed by (loop, mode, stream, input shapes and dtypes), least recently used
    evicted beyond ``max_entries``. A key is captured the ``capture_after``-th time it is seen."""

    def __init__(self, cupy: Any, max_entries: int = 8, capture_after: int = 2, disabled_reason: str | None = None):
        self.cp = cupy
        self.max_entries, self.capture_after = max_entries, capture_after
        self.entries: OrderedDict[tuple, _GraphEntry] = OrderedDict()
        self.seen: dict[tuple, int] = {}
        self.failed: set[tuple] = set()
        self.disabled_reason = disabled_reason
        self.stats = {"captures": 0, "replays": 0, "fallbacks": 0}
        self._stream = None

    def clear(self) -> None:
        self.cp.cuda.get_current_stream().synchronize()
        self.entries.clear()
        self.seen.clear()

    def call(self, tag: tuple, fn: Any, args: tuple) -> tuple | None:
        """fn(*args) through a graph, or None when the caller should run the plain loop."""
        if self.disabled_reason is not None:
            return None
        cur = self.cp.cuda.get_current_stream()
        if cur.is_capturing():  # the caller is capturing a graph itself: record the plain loop into it
            return None
        key = tag + (cur.ptr,) + tuple(None if a is None else (a.shape, a.dtype.str) for a in args)
        ent = self.entries.get(key)
        if ent is not None:
            self.entries.move_to_end(key)
            self.stats["replays"] += 1
            return self._replay(ent, args, cur)
        if key in self.failed:
            return None
        n = self.seen.get(key, 0) + 1
        self.seen[key] = n
        if n < self.capture_after:
            return None
        return self._capture(key, fn, args, cur)

    def _capture(self, key: tuple, fn: Any, args: tuple, cur: Any) -> tuple:
        cp = self.cp
        ref = fn(*args)  # the plain loop: this call's answer if anything below fails, and the check
        pool = cp.cuda.MemoryPool()
        try:
            with cp.cuda.using_allocator(pool.malloc):
                static = [None if a is None else cp.empty(a.shape, dtype=a.dtype) for a in args]
                for st, a in zip(static, args):
                    if st is not None:
                        st.data.copy_from_device_async(a.data, a.nbytes, cur)
                if self._stream is None:
                    self._stream = cp.cuda.Stream(non_blocking=True)
                s = self._stream
                s.wait_event(cur.record())
                err: BaseException | None = None
                outs = None
                with s:
                    # one uncaptured run on the capture stream first: cuBLAS and the private pool meet
                    # the stream outside the capture, and the capture then allocates nothing new
                    fn(*static)
                    s.begin_capture()
                    try:
                        outs = fn(*static)
                    except Exception as e:
                        err = e
                    try:
                        graph = s.end_capture()
                    except Exception as e:
                        err = err or e
                if err is not None:
                    raise err
            cur.wait_event(s.record())
            ent = _GraphEntry(graph, pool, static, tuple(outs))
            got = self._replay(ent, args, cur)
            bad = [i for i, (r, g) in enumerate(zip(ref, got)) if r is not None and not _close(cp, r, g)]
            if bad:
                raise RuntimeError(f"graph replay differs from the plain loop in output(s) {bad}")
        except Exception as e:
            self.failed.add(key)
            self.stats["fallbacks"] += 1
            if isinstance(e, RuntimeError) and "differs" in str(e):
                warnings.warn(f"tinygrad_rnn: CUDA graph for {key[:2]} not used: {e}", RuntimeWarning, stacklevel=4)
            else:
                self.disabled_reason = f"{type(e).__name__}: {e}"
                warnings.warn(f"tinygrad_rnn: CUDA graph capture failed ({self.disabled_reason}); the recurrent "
                              "loops run uncaptured from now on", RuntimeWarning, stacklevel=4)
            return ref
        self.stats["captures"] += 1
        self.entries[key] = ent
        if len(self.entries) > self.max_entries:
            cur.synchronize()  # the evicted graphs' memory may still be in use by a queued replay
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        return ref

    def _replay(self, ent: _GraphEntry, args: tuple, cur: Any) -> tuple:
        for s, a in zip(ent.static, args):
            if s is not None:
                s.data.copy_from_device_async(a.data, a.nbytes, cur)
        ent.graph.launch(cur)
        copies: dict[int, Any] = {}
        out = []
        for o in ent.outs:
            if o is None:
                out.append(None)
                continue
            if id(o) not in copies:  # dxw and dhw are one array except for the GRU: keep that
                copies[id(o)] = o.copy()
            out.append(copies[id(o)])
        return tuple(out)


def _close(cp: Any, ref: Any, got: Any) -> bool:
    tol = 1e-4 if ref.dtype == np.float32 else 1e-10
    scale = float(cp.abs(ref).max()) if ref.size else 0.0
    return ref.size == 0 or float(cp.abs(ref - got).max()) <= tol * (scale + 1e-30)


# ------------------------------------------------------------------------------------------
# the backend


def _check_out(a: Any, what: str) -> None:
    if a is not None and not a.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous (the GPU kernels write it in place)")


class CUDABackend(Backend):
    """Arrays are ``cupy.ndarray`` on the current device; same method contract as ``CPUBackend``.

    ``use_graphs`` (default: on unless ``TINYGRAD_RNN_CUDA_GRAPHS=0``) captures the recurrent time
    loops into CUDA graphs; ``graphs.stats`` counts captures, replays and fallbacks.
    """

    name = "cuda"

    def __init__(self, xp: Any = None, runner: Any = None):
        if xp is None:
            import cupy

            xp = cupy
        self.xp = xp
        self.emulated = xp is np
        self.runner = runner if runner is not None else (NumpyRunner() if self.emulated else CupyRunner(xp))
        self.is_device = not self.emulated
        self.use_graphs = os.environ.get(GRAPHS_ENV, "1") != "0" and not self.emulated
        self.graphs = None if self.emulated else GraphCache(xp, disabled_reason=self.runner.capturable)

    def to_host(self, a: Any) -> np.ndarray:
        return np.asarray(a) if self.emulated else self.xp.asnumpy(a)

    def from_host(self, a: np.ndarray, copy: bool = False) -> Any:
        return np.array(a, copy=True) if copy and self.emulated else self.xp.asarray(a)  # a GPU copy is a copy

    def check_index(self, shape: tuple, index: Any) -> None:
        """CuPy wraps out-of-bounds integer indices instead of raising: validate on a host stand-in."""
        if not self.is_device:
            return
        items = index if isinstance(index, tuple) else (index,)
        host = tuple(self.to_host(i) if hasattr(i, "__cuda_array_interface__") else i for i in items)
        np.empty(shape, dtype=np.bool_)[host if isinstance(index, tuple) else host[0]]

    def gemm(self, a: Any, b: Any, out: Any, beta: int) -> None:
        """The time loop's GEMM: direct cuBLAS (capturable in a CUDA graph), else cupy.matmul."""
        self.runner.gemm(a, b, out, beta)

    # -- fused kernels -----------------------------------------------------------------------
    def softmax_xent(self, logits: Any, targets: Any, ignore_index: int):
        """Rows of (loss, row_max, log_sum) for 2-D logits and int64 targets (the CPU backend's contract)."""
        xp = self.xp
        logits = xp.ascontiguousarray(logits)
        n = logits.shape[0]
        loss = xp.empty(n, dtype=logits.dtype)
        row_max = xp.empty(n, dtype=np.float64)
        log_sum = xp.empty(n, dtype=np.float64)
        self.runner.xent_forward(logits, xp.ascontiguousarray(targets, dtype=np.int64), int(ignore_index), loss,
                                 row_max, log_sum)
        return loss, row_max, log_sum

    def softmax_xent_backward(self, logits, row_max, log_sum, targets, ignore_index, grad_rows):
        xp = self.xp
        logits = xp.ascontiguousarray(logits)
        out = xp.empty_like(logits)
        g = xp.ascontiguousarray(xp.broadcast_to(xp.asarray(grad_rows), (logits.shape[0],)), dtype=np.float64)
        self.runner.xent_backward(logits, xp.ascontiguousarray(row_max, dtype=np.float64),
                                  xp.ascontiguousarray(log_sum, dtype=np.float64),
                                  xp.ascontiguousarray(targets, dtype=np.int64), int(ignore_index), g, out)
        return out

    def scatter_add_rows(self, num_rows: int, idx: Any, src: Any) -> Any:
        """zeros((num_rows, D)) with src's rows added at idx (duplicates accumulate, by atomic adds)."""
        xp = self.xp
        src = xp.ascontiguousarray(src)
        out = xp.zeros((num_rows, src.shape[1]), dtype=src.dtype)
        if src.shape[0]:
            self.runner.add_at(out, xp.ascontiguousarray(idx, dtype=np.int64), src)
        return out

    def index_add(self, out: Any, index: Any, src: Any) -> None:
        """out[index] += src with repeated indices accumulating (general advanced indexing)."""
        items = index if isinstance(index, tuple) else (index,)
        arrays = [i for i in items if hasattr(i, "dtype") and getattr(i, "ndim", 0) > 0]
        if arrays and all(a.dtype == np.bool_ for a in arrays):
            out[index] += src  # a boolean mask selects each element once: nothing to accumulate
        else:
            self.runner.add_at(out, index, src)

    # -- recurrent layers ------------------------------------------------------------------------
    @staticmethod
    def _check_size(rows: int, h: int) -> None:
        if rows * 4 * h >= 2 ** 31:  # the widest per-step array is (rows, 4H)
            raise ValueError(f"a recurrent step of batch {rows} and hidden size {h} is too large for the GPU "
                             "kernels' 32-bit indexing")

    def rnn_step_forward(self, mode, xw, hw, b_hn, h_prev, c_prev, mask, store, h_out, c_out):
        xp = self.xp
        contig = xp.ascontiguousarray
        self._check_size(*h_prev.shape)
        for what, a in (("h_out", h_out), ("c_out", c_out), ("store", store)):
            _check_out(a, what)
        self._step_forward(mode, contig(xw), contig(hw), None if b_hn is None else contig(b_hn), contig(h_prev),
                           None if c_prev is None else contig(c_prev), contig(mask), store, h_out, c_out)

    def _step_forward(self, mode, xw, hw, b_hn, h_prev, c_prev, mask, store, h_out, c_out):
        b_, h_ = h_prev.shape
        k = cuda_kernels.cell_kernel(mode, "forward")
        if mode == "lstm":
            self.runner.cell(k, (xw, hw, h_prev, c_prev, mask, store, h_out, c_out), b_, h_)
        elif mode == "gru":
            self.runner.cell(k, (xw, hw, b_hn, h_prev, mask, store, h_out), b_, h_)
        else:
            self.runner.cell(k, (xw, hw, h_prev, mask, h_out), b_, h_)

    def rnn_step_backward(self, mode, store, h_prev, h_t, c_prev, c_t, mask, dout, dh_carry, dc_carry,
                          dxw, dhw, dh_pass, dc_prev):
        xp = self.xp
        contig = xp.ascontiguousarray
        for what, a in (("dxw", dxw), ("dhw", dhw if mode == "gru" else None), ("dh_pass", dh_pass),
                        ("dc_prev", dc_prev if mode == "lstm" else None)):
            _check_out(a, what)
        self._check_size(*dout.shape)
        opt = (lambda a: None if a is None else contig(a))
        self._step_backward(mode, opt(store), opt(h_prev), opt(h_t), opt(c_prev), opt(c_t), contig(mask), contig(dout),
                            contig(dh_carry), opt(dc_carry), dxw, dhw, dh_pass, dc_prev)

    def _step_backward(self, mode, store, h_prev, h_t, c_prev, c_t, mask, dout, dh_carry, dc_carry,
                       dxw, dhw, dh_pass, dc_prev):
        b_, h_ = dout.shape
        k = cuda_kernels.cell_kernel(mode, "backward")
        if mode == "lstm":
            self.runner.cell(k, (store, c_prev, c_t, mask, dout, dh_carry, dc_carry, dxw, dh_pass, dc_prev), b_, h_)
        elif mode == "gru":
            self.runner.cell(k, (store, h_prev, mask, dout, dh_carry, dxw, dhw, dh_pass), b_, h_)
        else:
            self.runner.cell(k, (h_t, mask, dout, dh_carry, dxw, dh_pass), b_, h_)

    def rnn_forward(self, mode, x, w_ih, bias, w_hh, b_hn, h0, c0, mask, train=True):
        """``(h_all, c_all, store)`` from the layer's input: one whole-sequence GEMM (cuBLAS) makes the
        projection, then the time loop (recurrence.py); ``train=False`` keeps no store."""
        t_, b_, d_ = x.shape
        xw = self.mm(self.xp.ascontiguousarray(x).reshape(t_ * b_, d_), w_ih.T, bias)
        # explicit last axis: reshape(..., -1) cannot infer it for a batch of 0
        return self.rnn_forward_projected(mode, xw.reshape(t_, b_, w_ih.shape[0]), w_hh, b_hn, h0, c0, mask, train)

    def rnn_forward_projected(self, mode, xw, w_hh, b_hn, h0, c0, mask, train=True):
        c = self.xp.ascontiguousarray
        self._check_size(*h0.shape)
        args = (c(xw), c(w_hh), None if b_hn is None else c(b_hn), c(h0), None if c0 is None else c(c0), c(mask))
        return self._run_loop(("forward", mode, bool(train)),
                              lambda *a: recurrence_forward(self, mode, *a, train=train), args)

    def rnn_backward(self, mode, w_hh, store, h_all, c_all, mask, dout, dh_n, dc_n):
        c = self.xp.ascontiguousarray
        self._check_size(*dh_n.shape)
        opt = (lambda a: None if a is None else c(a))
        args = (c(w_hh), opt(store), c(h_all), opt(c_all), c(mask), c(dout), c(dh_n), opt(dc_n))
        return self._run_loop(("backward", mode), lambda *a: recurrence_backward(self, mode, *a), args)

    def _run_loop(self, tag: tuple, loop: Any, args: tuple) -> tuple:
        """``loop(*args)``: replayed from a captured CUDA graph where one is cached (see GraphCache)."""
        if self.use_graphs and self.graphs is not None:
            out = self.graphs.call(tag, loop, args)
            if out is not None:
                return out
        return loop(*args)

    # -- reductions -----------------------------------------------------------------------------
    def sum_squares(self, a: Any) -> float:
        """sum(a**2) accumulated in float64 (a float: one host transfer)."""
        v = self.xp.asarray(a).reshape(-1).astype(np.float64)
        return float(self.to_host(self.xp.dot(v, v)))

    # -- optimizer steps (contract: optim_kernels.py) -----------------------------------------
    def _flat_step(self, k: cuda_kernels.Kernel, param: Any, grad: Any, states: tuple, scalars: tuple) -> None:
        xp = self.xp
        dt = param.dtype
        g = xp.ascontiguousarray(grad, dtype=dt).reshape(-1)
        flat_states = []
        for s in states:
            if not s.flags.c_contiguous or s.dtype != dt:
                # a copy would swallow the kernel's writes: the optimizer allocates C-contiguous state
                raise ValueError(f"optimizer state must be C-contiguous {np.dtype(dt)}, got {s.dtype} with strides {s.strides}")
            flat_states.append(s.reshape(-1))
        if param.flags.c_contiguous:
            self.runner.flat(k, (param.reshape(-1), g, *flat_states), scalars, param.size)
        else:
            work = xp.ascontiguousarray(param).reshape(-1)
            self.runner.flat(k, (work, g, *flat_states), scalars, param.size)
            param[...] = work.reshape(param.shape)

    def sgd_step(self, param: Any, grad: Any, momentum_buf: Any, *, lr: float, momentum: float, dampening: float,
                 weight_decay: float, nesterov: bool, first_step: bool) -> None:
        mom = float(momentum) != 0.0
        k = cuda_kernels.sgd_kernel(mom, bool(first_step), bool(nesterov))
        self._flat_step(k, param, grad, (momentum_buf,) if mom else (),
                        (float(lr), float(momentum), float(dampening), float(weight_decay)))

    def adam_step(self, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any, *, beta1: float,
                  beta2: float, eps: float, weight_decay: float, decoupled_decay: float, step_size: float,
                  bias_correction2_sqrt: float, amsgrad: bool) -> None:
        k = cuda_kernels.adam_kernel(bool(amsgrad))
        states = (exp_avg, exp_avg_sq) + ((max_exp_avg_sq,) if amsgrad else ())
        self._flat_step(k, param, grad, states, (float(beta1), float(beta2), float(eps), float(weight_decay),
                                                 float(decoupled_decay), float(step_size), float(bias_correction2_sqrt)))

    def rmsprop_step(self, param: Any, grad: Any, square_avg: Any, grad_avg: Any, momentum_buf: Any, *, lr: float,
                     alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool) -> None:
        mom = float(momentum) > 0.0
        k = cuda_kernels.rmsprop_kernel(bool(centered), mom)
        states = (square_avg,) + ((grad_avg,) if centered else ()) + ((momentum_buf,) if mom else ())
        self._flat_step(k, param, grad, states, (float(lr), float(alpha), float(eps), float(weight_decay), float(momentum)))

    def adagrad_step(self, param: Any, grad: Any, state_sum: Any, *, clr: float, eps: float, weight_decay: float) -> None:
        self._flat_step(cuda_kernels.adagrad_kernel(), param, grad, (state_sum,), (float(clr), float(eps), float(weight_decay)))
