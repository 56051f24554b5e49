"""Run one framework's timing in a fresh process with N threads; the benches' shared helpers.

A user runs one framework per process. Two frameworks' thread pools in one process compete for the
cores and flatter whichever is timed first, so every bench here times each contender in its own
child process: the thread limits are set in the child's environment *before* anything imports a
BLAS, and the child prints one JSON line that the parent reads back.

    from _proc import run_fresh
    spec = {"fw": "torch", "cfg": [32, 64, 64, 256], ...}
    res = run_fresh(f"import json, rnn; emit(rnn.worker(json.loads({json.dumps(spec)!r})))", threads=2)

The child runs with bench/ and the repository root on sys.path and has ``emit(obj)`` in scope; the
dict it emits comes back. ``time_calls``, ``best_and_median``, ``gemm_peak`` and ``print_machine`` are
the other pieces a bench (rnn.py, train_step.py, a custom-cell bench) shares.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
_MARK = "@@BENCH_RESULT@@ "

# Every threading knob a BLAS or runtime reads at load time. Set in the child's environment so they are
# in place before numpy / torch / jax / numba import (most read them once, at load).
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")

_PRELUDE = f"""
import json as _json, os as _os, sys as _sys
_sys.path[:0] = [{BENCH_DIR!r}, {REPO_DIR!r}]
def emit(obj):
    _sys.stdout.write({_MARK!r} + _json.dumps(obj) + "\\n")
    _sys.stdout.flush()
"""


def thread_env(threads: int, base: dict | None = None) -> dict:
    """The environment for a child limited to `threads` threads (BLAS, OpenMP, Numba and XLA)."""
    env = dict(os.environ if base is None else base)
    for k in _THREAD_VARS:
        env[k] = str(threads)
    env["TINYGRAD_BENCH_THREADS"] = str(threads)
    # XLA's CPU client has no thread-count flag beyond these; with one thread, turn Eigen's pool off.
    xla = env.get("XLA_FLAGS", "")
    if threads == 1:
        xla += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    env["XLA_FLAGS"] = xla.strip()
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONPATH"] = REPO_DIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_fresh(code: str, threads: int, timeout: float | None = 1800, env: dict | None = None) -> dict:
    """Run `code` in a fresh Python with `threads` threads; return the last object it passed to emit().

    Raises RuntimeError with the child's stderr tail when it fails or emits nothing."""
    proc = subprocess.run([sys.executable, "-c", _PRELUDE + code], env=thread_env(threads, env), capture_output=True,
                          text=True, timeout=timeout, cwd=REPO_DIR)
    results = [line[len(_MARK):] for line in proc.stdout.splitlines() if line.startswith(_MARK)]
    if proc.returncode != 0 or not results:
        tail = (proc.stderr or proc.stdout)[-3000:]
        raise RuntimeError(f"bench child failed (rc {proc.returncode}):\n{tail}")
    return json.loads(results[-1])


# ---------------------------------------------------------------------------------------------
# helpers for the child side


def child_threads() -> int:
    return int(os.environ.get("TINYGRAD_BENCH_THREADS", "0")) or (os.cpu_count() or 1)


def limit_blas(threads: int) -> None:
    """NumPy's (and any loaded) BLAS to `threads` threads; the env vars already did this at load, this
    catches a BLAS that ignores them."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")
    except ImportError:
        pass


def blas_info() -> str:
    """The BLAS libraries loaded in this process, as threadpoolctl sees them."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    infos = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture') or '-'}, {i.get('num_threads')} thr)"
             for i in threadpool_info() if i.get("user_api") in ("blas", "openmp")]
    return "; ".join(infos) or "none loaded"


def best_and_median(times: list[float]) -> tuple[float, float]:
    s = sorted(times)
    n = len(s)
    return s[0], (s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2]))


def time_calls(fn, repeats: int, warmup: int = 2, budget_s: float = 20.0) -> list[float]:
    """Wall times of `repeats` calls after `warmup` untimed ones (stops early past budget_s, keeping >= 3)."""
    import time

    for _ in range(warmup):
        fn()
    out: list[float] = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s and len(out) >= 3:
            break
    return out


# ---------------------------------------------------------------------------------------------
# the machine and the GEMM ceiling


def cpu_info() -> str:
    """CPU model, the ISA flags that matter for float32 GEMM, logical cores."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), model)
        flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
    isa = "+".join(f for f in wanted if f in flags) or "unknown"
    return f"{model} [{isa}], {os.cpu_count()} logical cores"


def _gemm_child(squares: list[int], shapes: list[list[int]], repeats: int) -> dict:
    import numpy as np

    limit_blas(child_threads())
    rng = np.random.default_rng(0)

    def gflops(m: int, k: int, n: int) -> float:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = np.empty((m, n), np.float32)
        inner = max(1, int(2e8 // (2 * m * k * n)))  # small shapes: loop so one sample is ~>= 10 ms of work

        def call():
            for _ in range(inner):
                np.matmul(a, b, out=c)

        return 2 * m * k * n * inner / min(time_calls(call, repeats, warmup=2)) / 1e9

    return {"square": {str(n): gflops(n, n, n) for n in squares},
            "shapes": {"x".join(map(str, s)): gflops(*s) for s in shapes},
            "blas": blas_info(), "numpy": np.__version__}


def gemm_peak(threads: int, squares=(1024, 2048), shapes=(), repeats: int = 7) -> dict:
    """float32 GFLOP/s of NumPy's matmul with `threads` threads, in a fresh process: 'peak' (the best
    square size), 'square' {n: GFLOP/s} and 'shapes' {"MxKxN": GFLOP/s} for the step's own shapes."""
    code = f"import _proc; emit(_proc._gemm_child({list(squares)!r}, {[list(s) for s in shapes]!r}, {repeats}))"
    res = run_fresh(code, threads)
    res["peak"] = max(res["square"].values())
    return res


def remeasure_peak(threads: int, gemm: dict, repeats: int = 7) -> dict:
    """Measure the GEMMs again (after the runs) and keep the better of the two for each entry, so one
    noisy moment at the start cannot lower the ceiling (and inflate every share of peak)."""
    again = gemm_peak(threads, squares=[int(n) for n in gemm["square"]],
                      shapes=[tuple(int(v) for v in s.split("x")) for s in gemm["shapes"]], repeats=repeats)
    best = dict(gemm, square={k: max(v, again["square"][k]) for k, v in gemm["square"].items()},
                shapes={k: max(v, again["shapes"][k]) for k, v in gemm["shapes"].items()})
    best["peak"] = max(best["square"].values())
    print(f"float32 GEMM peak re-measured after the runs: {again['peak']:.1f} GFLOP/s (start {gemm['peak']:.1f}); "
          f"the summary uses the higher, {best['peak']:.1f}")
    return best


def print_machine(threads: int, gemm: dict) -> None:
    print(f"CPU: {cpu_info()}; python {platform.python_version()}; threads per contender: {threads}")
    print(f"NumPy {gemm['numpy']} BLAS (threadpoolctl, in the GEMM child): {gemm['blas']}")
    sq = ", ".join(f"{n}^3 {g:.1f}" for n, g in gemm["square"].items())
    print(f"float32 GEMM peak ({threads} thr, NumPy matmul, best of several): {gemm['peak']:.1f} GFLOP/s  [{sq}]")
    if gemm["shapes"]:
        print("  at the recurrent step's shapes (M x K x N): "
              + ", ".join(f"{s} {g:.1f}" for s, g in gemm["shapes"].items()) + " GFLOP/s")
    noted = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ]
    if noted:
        print(f"WARNING: {', '.join(noted)} set: OpenBLAS runs an older, slower kernel (unset them for this run)")
    print(f"load average {os.getloadavg()[0]:.2f} at start", flush=True)
