"""Which BLAS is faster here, measured: the GEMM provider per shape class (blas.py), calibrated once per
machine and thread count, and cached on disk.

With both oneMKL and NumPy's OpenBLAS bound (``TINYGRAD_RNN_BLAS=auto``), neither wins everywhere: MKL's
small-batch GEMMs were 1.3-1.7x faster on an Intel Xeon, and slower on an AMD EPYC at the same shapes.
So at first use per thread count, each shape class (``blas.SHAPE_CLASSES``) times both providers on one
representative product the way the backend makes it -- the recurrent step as a few steps of an LSTM
layer through the backend's sequence kernels (MKL: packed weights, batch rows on our threads; OpenBLAS:
one threaded GEMM per step), matmul's classes through ``blas.matmul`` itself -- interleaved, best of a
few, a few ms per class. With more than one thread only the step class is timed and its pick serves
every class: one provider then owns the cores. Mixing them costs more than any per-class pick gains, as
NumPy's OpenBLAS leaves its worker threads spinning for a while after each threaded call and our own
threads (MKL's row blocks and column blocks) then share the cores with them (an LSTM layer (32, 64, 64,
256) training on 2 threads of an Intel Xeon: 25.5 ms with MKL for the step and OpenBLAS for the rest,
18.8 ms with MKL for all; each class timed alone had shown them tied). The
picks are stored under a key naming the CPU (model and flags), the libraries' versions and the thread
count, in ``$TINYGRAD_RNN_CACHE_DIR`` (default ``~/.cache/tinygrad_rnn``) ``/blas_calibration.json``;
an unreadable or corrupt file is ignored (calibrate again, rewrite it).

    >>> from tinygrad_rnn.backend import calibration
    >>> calibration.cache_path().endswith("blas_calibration.json")
    True
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import threading
import time
from typing import Any, Callable

import numpy as np

from .._fork import renew_in_child
from . import blas

__all__ = ["cache_path", "choose", "machine_key"]

_FORMAT = 2  # 2: one provider for every class above one thread
# representative (M, K, N) per shape class: the recurrent step (an LSTM, batch 32, hidden 256), a
# char-LM output projection over 64 classes, a whole-sequence projection
SHAPES = {"step": (32, 256, 1024), "skinny": (2048, 256, 64), "large": (512, 256, 512)}
# the step class: time steps per timed run, forward only -- a layer's thread hand-off and MKL's packing of
# W_hh are once per pass, not per step, and fewer steps weighed them against MKL (T=8 forward+backward
# flipped picks to OpenBLAS that whole layers measured slower)
STEPS = 16
REPEATS = 5
BUDGET_S = 0.05  # per class, after the warm-up: fewer repeats (at least 2) where runs are slow
# the other provider must be this much faster to be picked over the first one bound (MKL where installed):
# a near tie is noise, and a pick flipped by noise would be cached for good
MARGIN = 1.1

_CHOSEN: dict[tuple[str, int], str] = {}
_LOCK = threading.RLock()
renew_in_child(globals(), "_LOCK", threading.RLock)
CALIBRATIONS = 0  # calibrations run in this process (one per thread count, none where the cache answers)
UNSAVED = 0  # calibrations not written to the cache because the machine was busy (others held the cores)


def machine_busy(n_threads: int) -> bool:
    """Whether other processes hold the cores a calibration at ``n_threads`` threads needs: the 1-minute
    load average, less this process's own one, above the cores left over. A calibration measured then
    holds for this process only, and is not cached (a busy machine's timings would decide for good)."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # pragma: no cover - no load average on this platform
        return False
    return load - 1.0 > (os.cpu_count() or 1) - n_threads


# the backend class whose sequence kernels time the step class: the CPU backend sets it (cpu.py), so that
# this module needs nothing from it and blas -> calibration -> cpu -> blas is no import cycle
STEP_BACKEND: Any = None


def cache_path() -> str:
    root = os.environ.get("TINYGRAD_RNN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "tinygrad_rnn")
    return os.path.join(root, "blas_calibration.json")


def _cpu() -> str:
    """The CPU's model name and feature flags (Linux's /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        return " ".join(info.get(k, "").strip() for k in ("model name", "flags"))
    except (OSError, ValueError):
        return f"{platform.machine()} {platform.processor()}"


def _versions() -> str:
    parts = [f"numpy {np.__version__}"]
    cfg = blas._numpy_fn(("scipy_openblas_get_config64_", "openblas_get_config64_", "openblas_get_config"))
    if cfg is not None:
        cfg.restype = ctypes.c_char_p
        parts.append(str(cfg()))
    if blas._MKL is not None:
        try:
            buf = ctypes.create_string_buffer(256)
            blas._MKL.MKL_Get_Version_String(buf, 256)
            parts.append(buf.value.decode(errors="replace"))
        except AttributeError:  # pragma: no cover - an MKL without the version call
            parts.append("mkl")
    return "; ".join(parts)


def machine_key(n_threads: int) -> str:
    """The cache key: a hash of the CPU model and flags, the providers and their versions, and the thread count."""
    text = f"{_cpu()}|{_versions()}|{','.join(blas.PROVIDERS)}|{n_threads}"
    return hashlib.sha256(text.encode()).hexdigest()[:24] + f"-t{n_threads}"


def _read() -> dict[str, Any]:
    try:
        with open(cache_path()) as f:
            data = json.load(f)
        if isinstance(data, dict) and data.get("format") == _FORMAT and isinstance(data.get("entries"), dict):
            return data
    except (OSError, ValueError):  # absent, unreadable or corrupt: calibrate again
        pass
    return {"format": _FORMAT, "entries": {}}


def _write(key: str, picks: dict[str, str]) -> None:
    data = _read()
    data["entries"][key] = picks
    path = cache_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
    except OSError:  # a read-only home: the picks still hold for this process
        pass


def _valid(picks: Any) -> bool:
    return isinstance(picks, dict) and all(picks.get(c) in blas.PROVIDERS for c in blas.SHAPE_CLASSES)


def choose(cls: str, n_threads: int) -> str:
    """The provider for shape class ``cls`` at ``n_threads`` threads: from this process's picks, the disk
    cache, or a calibration (once per thread count per process, and then written to the cache)."""
    global UNSAVED
    got = _CHOSEN.get((cls, n_threads))
    if got is not None:
        return got
    if cls not in blas.SHAPE_CLASSES:
        raise ValueError(f"provider_for: unknown shape class {cls!r} (one of {blas.SHAPE_CLASSES})")
    with _LOCK:
        if (cls, n_threads) not in _CHOSEN:
            key = machine_key(n_threads)
            picks = _read()["entries"].get(key)
            if not _valid(picks):
                busy = machine_busy(n_threads)
                picks = calibrate(n_threads)
                if busy:
                    UNSAVED += 1
                else:
                    _write(key, picks)
            for c in blas.SHAPE_CLASSES:
                _CHOSEN[(c, n_threads)] = picks[c]
    return _CHOSEN[(cls, n_threads)]


def _runner(cls: str, provider: str, n_threads: int, a: np.ndarray, w: np.ndarray) -> Callable[[], None]:
    """One timed run of class ``cls`` by ``provider``, as the backend makes it. ``w`` is (N, K), a layer's
    weight as stored. The step class runs STEPS steps of an LSTM layer's training forward through the
    CPU backend's own sequence kernels, on a private backend instance told to use ``provider``: the
    provider decides more than the GEMM (with MKL the batch rows, gate math included, run on parallel
    threads; with OpenBLAS only its GEMM is threaded), so the whole step is what is compared."""
    if cls != "step":
        wt = w.T
        return lambda: blas.matmul(a, wt, provider=provider)
    if STEP_BACKEND is None:
        from . import get_backend

        get_backend("cpu")  # importing the CPU backend's module sets STEP_BACKEND
    be = STEP_BACKEND()
    be.STEP_PROVIDER = provider
    b_, h_ = a.shape[0], w.shape[1]
    rng = np.random.default_rng(1)
    dt = a.dtype
    xw = (rng.standard_normal((STEPS, b_, w.shape[0])) * 0.5).astype(dt)
    w_hh = np.ascontiguousarray(w[:, :h_] * (1.0 / h_))
    h0, c0 = np.zeros((b_, h_), dt), np.zeros((b_, h_), dt)
    mask = np.ones((STEPS, b_), dt)

    def run() -> None:
        be.rnn_forward_projected("lstm", xw, w_hh, None, h0, c0, mask, True)

    return run


def measure(cls: str, n_threads: int) -> dict[str, float]:
    """Best-of-REPEATS seconds per provider for class ``cls``, the providers interleaved."""
    m, k, n = SHAPES[cls]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    runners = {p: _runner(cls, p, n_threads, a, w) for p in blas.PROVIDERS}
    for r in runners.values():  # warm-up: first-call costs (pool threads, BLAS buffers) are not the steady state
        r()
    best = dict.fromkeys(runners, float("inf"))
    start = time.perf_counter()
    for i in range(REPEATS):
        for p, r in runners.items():
            t0 = time.perf_counter()
            r()
            best[p] = min(best[p], time.perf_counter() - t0)
        if i >= 1 and time.perf_counter() - start > BUDGET_S:  # a loaded machine: stop at the budget
            break
    return best


def calibrate(n_threads: int) -> dict[str, str]:
    """The faster provider of every shape class at ``n_threads`` threads; above one thread, the step's
    provider for every class (see the module's docstring: providers mixed on shared cores)."""
    global CALIBRATIONS
    CALIBRATIONS += 1
    pointed = blas._POINTED[0]
    try:
        picks = {}
        first = blas.PROVIDERS[0]
        for cls in blas.SHAPE_CLASSES:
            times = measure(cls, n_threads)
            best = min(times, key=times.__getitem__)
            picks[cls] = best if times[first] > MARGIN * times[best] else first
            if n_threads > 1:
                return dict.fromkeys(blas.SHAPE_CLASSES, picks[cls])
        return picks
    finally:
        blas._point(pointed)
