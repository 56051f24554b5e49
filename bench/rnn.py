"""Recurrent-layer benchmark: training step (forward + BPTT + weight gradients) and inference.

Compares, in one run and on the same inputs: the fused path (default), the composite path
(cells unrolled from primitive ops), a plain-NumPy LSTM, PyTorch's ``nn.LSTM/GRU/RNN``
on the CPU (when torch is installed) and a ``jax.jit`` + ``lax.scan`` LSTM (when jax is
installed). Prints ms/step, tokens/s, GFLOP/s, % of this machine's float32 GEMM peak
(measured here), the ratios to PyTorch for training and inference (``no_grad`` forward),
the peak memory (tracemalloc) of an inference and of a training forward, plus the Numba
first-call time (cold compile and cache load, each in a fresh process).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/rnn.py            # full table
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/rnn.py --quick    # fewer repeats
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/rnn.py --layout time_major

Training FLOPs = 3 x 2*B*T*G*H*(D+H) with G = 4 (LSTM), 3 (GRU), 1 (RNN).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinygrad_rnn as tr  # noqa: E402
from tinygrad_rnn import nn  # noqa: E402

# (B, T, D, H); (32, 64, 64, 256) is the char LM's layer (examples/char_lm.py)
CONFIGS = [(1, 100, 32, 64), (32, 64, 64, 128), (32, 64, 64, 256), (32, 100, 256, 512), (64, 100, 1024, 1024)]
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


STAT = statistics.median  # --stat min: the fastest run, steadier than the median on a busy machine


def median_time(fn, repeats: int, warmup: int = 1, budget_s: float = 20.0) -> float:
    for _ in range(warmup):
        fn()
    times = []
    t_start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - t_start > budget_s and len(times) >= 3:
            break
    return STAT(times)


def gemm_peak(repeats: int = 5) -> float:
    """float32 GFLOP/s of a large square NumPy matmul on this machine (the BLAS ceiling)."""
    n = 2048
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    t = median_time(lambda: a @ b, repeats)
    return 2 * n ** 3 / t / 1e9


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info

        infos = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, {i.get('num_threads')} threads)"
                 for i in threadpool_info() if i.get("user_api") == "blas"]
        return "; ".join(infos) or "unknown"
    except ImportError:
        return "threadpoolctl not installed (pip install threadpoolctl)"


def first_call_times() -> tuple[float, float]:
    """Seconds for import + first fused LSTM/GRU/RNN train step in a fresh process: cold (empty Numba
    cache dir) and warm (the cache the cold run just wrote)."""
    code = ("import time; t=time.perf_counter(); import tinygrad_rnn as tr; from tinygrad_rnn import nn\n"
            "for cls in (nn.LSTM, nn.GRU, nn.RNN):\n"
            "  for B in (1, 64):\n"
            "    m = cls(8, 16 if B == 1 else 128); x = tr.randn(5, B, 8, seed=0); out, _ = m(x); out.sum().backward()\n"
            "print(time.perf_counter()-t)")
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d)
        cold = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True).stdout.split()[-1])
        warm = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True).stdout.split()[-1])
    return cold, warm


# ---------------------------------------------------------------------------------------------
# plain NumPy LSTM (what a careful NumPy user would write): per-step GEMM + NumPy pointwise math


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_lstm_train_step(x, w_ih, w_hh, b, train: bool = True):
    t_, b_, d_ = x.shape
    h_ = w_hh.shape[1]
    xw = (x.reshape(t_ * b_, d_) @ w_ih.T + b).reshape(t_, b_, 4 * h_)
    h = np.zeros((t_ + 1, b_, h_), np.float32)
    c = np.zeros((t_ + 1, b_, h_), np.float32)
    gates = np.empty((t_, b_, 4 * h_), np.float32)
    for t in range(t_):
        a = xw[t] + h[t] @ w_hh.T
        i, f, g, o = _sig(a[:, :h_]), _sig(a[:, h_:2 * h_]), np.tanh(a[:, 2 * h_:3 * h_]), _sig(a[:, 3 * h_:])
        gates[t] = np.concatenate([i, f, g, o], axis=1)
        c[t + 1] = f * c[t] + i * g
        h[t + 1] = o * np.tanh(c[t + 1])
    if not train:
        return h[1:]
    dgates = np.empty_like(gates)
    dh = np.zeros((b_, h_), np.float32)
    dc = np.zeros((b_, h_), np.float32)
    for t in range(t_ - 1, -1, -1):
        i, f, g, o = np.split(gates[t], 4, axis=1)
        tc = np.tanh(c[t + 1])
        dh = dh + 1.0  # d(sum of outputs)/dh_t
        dc = dc + dh * o * (1 - tc * tc)
        dgates[t] = np.concatenate([dc * g * i * (1 - i), dc * c[t] * f * (1 - f), dc * i * (1 - g * g),
                                    dh * tc * o * (1 - o)], axis=1)
        dh = dgates[t] @ w_hh
        dc = dc * f
    dg = dgates.reshape(t_ * b_, 4 * h_)
    return dg.T @ x.reshape(t_ * b_, d_), dg.T @ h[:-1].reshape(t_ * b_, h_), dg.sum(0), dg @ w_ih


# ---------------------------------------------------------------------------------------------
# JAX: jit + lax.scan LSTM (what a JAX user would write), optional


def jax_lstm_fns(w_ih, w_hh, b, batch_first: bool):
    """(train, infer) callables for a JAX LSTM with these weights; train returns the gradients
    of sum(outputs) with respect to the weights and the input, as the other contenders do."""
    import jax
    import jax.numpy as jnp

    def forward(params, x):
        w_ih, w_hh, b = params
        if batch_first:
            x = jnp.swapaxes(x, 0, 1)
        h_ = w_hh.shape[1]
        xw = x @ w_ih.T + b
        zero = jnp.zeros((x.shape[1], h_), x.dtype)

        def step(carry, xw_t):
            h, c = carry
            a = xw_t + h @ w_hh.T
            i, f, g, o = jnp.split(a, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        _, hs = jax.lax.scan(step, (zero, zero), xw)
        return jnp.swapaxes(hs, 0, 1) if batch_first else hs

    grad = jax.jit(jax.grad(lambda p, x: forward(p, x).sum(), argnums=(0, 1)))
    infer = jax.jit(forward)
    params = tuple(jnp.asarray(a) for a in (w_ih, w_hh, b))
    return (lambda x: jax.block_until_ready(grad(params, x)),
            lambda x: jax.block_until_ready(infer(params, x)))


def peak_mb(fn) -> float:
    """Peak traced allocation (NumPy arrays included) of one call, in MB."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        keep = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del keep
    return peak / 1e6


def run(args: argparse.Namespace) -> None:
    threads = args.threads or os.cpu_count() or 1
    try:  # before our CPU backend loads MKL (mkl extra): torch's own MKL could otherwise bind to it (README)
        import torch

        torch.set_num_threads(threads)
        have_torch = True
    except ImportError:
        have_torch = False
    tr.get_backend("cpu")  # loads the kernels' BLAS, so the limits below reach it
    tr.set_num_threads(threads)
    if args.threads:
        try:  # the same BLAS thread count for NumPy as for torch
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=threads, user_api="blas")
        except ImportError:
            print("WARNING: --threads needs threadpoolctl to limit NumPy's BLAS; it is not installed")
    have_jax = False
    if not args.no_jax:
        if args.threads == 1:  # before jax is imported: XLA reads its flags once
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
        try:
            import jax

            jax.config.update("jax_platforms", "cpu")
            have_jax = True
        except ImportError:
            pass
    batch_first = args.layout == "batch_first"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}; "
          f"numpy {np.__version__}; torch {torch.__version__ if have_torch else 'not installed (PyTorch columns skipped)'}")
    from tinygrad_rnn.backend import blas as _kblas

    print(f"our GEMMs (TINYGRAD_RNN_BLAS={os.environ.get('TINYGRAD_RNN_BLAS', 'auto')}): {_kblas.PROVIDER or 'NumPy matmul'}")
    print(f"BLAS: {blas_info()}; torch threads: {torch.get_num_threads() if have_torch else '-'}; "
          f"jax {jax.__version__ if have_jax else 'not installed (JAX column skipped)'}; layout: {args.layout}")
    env_note = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ]
    if env_note:
        print(f"WARNING: {', '.join(env_note)} set: OpenBLAS runs an older, slower kernel (unset them for this run)")
    peak = gemm_peak()
    print(f"float32 GEMM peak (2048^3 NumPy matmul): {peak:.1f} GFLOP/s")
    if not args.no_compile:
        cold, warm = first_call_times()
        print(f"first call (import + first fused LSTM/GRU/RNN steps, both kernel paths): cold compile {cold:.2f} s, "
              f"Numba cache hit {warm:.2f} s")
    rows = []
    configs = CONFIGS[: args.max_configs]
    for (bsz, t_, d_, h_) in configs:
        rng = np.random.default_rng(0)
        x_np = rng.standard_normal((bsz, t_, d_) if batch_first else (t_, bsz, d_)).astype(np.float32)
        for name in args.models:
            g = GATES[name]
            flops_train = 3 * 2 * bsz * t_ * g * h_ * (d_ + h_)
            reps = args.repeats if flops_train < 5e10 else max(3, args.repeats // 3)
            cls = getattr(nn, name)
            m = cls(d_, h_, batch_first=batch_first, seed=0)
            x = tr.tensor(x_np)

            def ours_train(m=m, x=x):
                m.zero_grad()
                out, _ = m(x)
                out.sum().backward()

            def ours_infer(m=m, x=x):
                with tr.no_grad():
                    return m(x)

            def ours_train_forward(m=m, x=x):
                return m(x)

            res = {"cfg": f"({bsz},{t_},{d_},{h_})", "model": name}
            m.fused = True
            res["fused"] = median_time(ours_train, reps)
            res["fused_inf"] = median_time(ours_infer, reps)
            res["mem_inf"] = peak_mb(ours_infer)
            res["mem_train"] = peak_mb(ours_train_forward)
            if bsz * t_ * h_ <= args.composite_max:
                m.fused = False
                res["composite"] = median_time(ours_train, max(3, reps // 2))
                m.fused = True
            if name == "LSTM":
                w_ih = m.weight_ih_l0.numpy()
                w_hh = m.weight_hh_l0.numpy()
                b = m.bias_ih_l0.numpy() + m.bias_hh_l0.numpy()
                xt = np.ascontiguousarray(x_np.transpose(1, 0, 2)) if batch_first else x_np
                args_np = (xt, w_ih, w_hh, b)
                res["numpy"] = median_time(lambda a=args_np: numpy_lstm_train_step(*a), reps)
                if have_jax:
                    jax_train, jax_infer = jax_lstm_fns(w_ih, w_hh, b, batch_first)
                    xj = jax.numpy.asarray(x_np)
                    res["jax"] = median_time(lambda f=jax_train, a=xj: f(a), reps, warmup=2)
                    res["jax_inf"] = median_time(lambda f=jax_infer, a=xj: f(a), reps, warmup=2)
            if have_torch:
                tm = getattr(torch.nn, name)(d_, h_, batch_first=batch_first)
                tx = torch.tensor(x_np)

                def torch_train(tm=tm, tx=tx):
                    tm.zero_grad()
                    out, _ = tm(tx)
                    out.sum().backward()

                def torch_infer(tm=tm, tx=tx):
                    with torch.no_grad():
                        tm(tx)

                res["torch"] = median_time(torch_train, reps)
                res["torch_inf"] = median_time(torch_infer, reps)
            res["gflops"] = flops_train / res["fused"] / 1e9
            res["tokens"] = bsz * t_ / res["fused"]
            rows.append(res)
            print(_row(res, peak), flush=True)
    print()
    print(_header())
    for r in rows:
        print(_row(r, peak))


def _header() -> str:
    return (f"{'config (B,T,D,H)':<22}{'model':<6}{'fused ms':>10}{'compos. ms':>11}{'numpy ms':>10}{'torch ms':>10}"
            f"{'torch/fused':>12}{'fused/comp':>11}{'tok/s':>10}{'GFLOP/s':>9}{'%peak':>7}"
            f"{'inf ms':>9}{'torch inf':>10}{'torch/inf':>10}{'jax ms':>8}{'jax inf':>8}{'inf MB':>8}{'trfwd MB':>9}")


def _fmt(v, w, spec=".2f"):
    return f"{'—':>{w}}" if v is None else f"{v:>{w}{spec}}"


def _row(r: dict, peak: float) -> str:
    ms = lambda k: None if k not in r else r[k] * 1e3  # noqa: E731
    ratio_t = r["torch"] / r["fused"] if "torch" in r else None
    ratio_c = r["composite"] / r["fused"] if "composite" in r else None
    ratio_i = r["torch_inf"] / r["fused_inf"] if "torch_inf" in r else None
    return (f"{r['cfg']:<22}{r['model']:<6}{_fmt(ms('fused'), 10)}{_fmt(ms('composite'), 11)}{_fmt(ms('numpy'), 10)}"
            f"{_fmt(ms('torch'), 10)}{_fmt(ratio_t, 12)}{_fmt(ratio_c, 11, '.1f')}{r['tokens']:>10.0f}{r['gflops']:>9.1f}"
            f"{100 * r['gflops'] / peak:>7.1f}{_fmt(ms('fused_inf'), 9)}{_fmt(ms('torch_inf'), 10)}{_fmt(ratio_i, 10)}"
            f"{_fmt(ms('jax'), 8)}{_fmt(ms('jax_inf'), 8)}{_fmt(r.get('mem_inf'), 8, '.1f')}{_fmt(r.get('mem_train'), 9, '.1f')}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--models", nargs="+", default=["LSTM", "GRU", "RNN"], choices=list(GATES))
    p.add_argument("--max-configs", type=int, default=len(CONFIGS), help="only the first N configs")
    p.add_argument("--composite-max", type=int, default=32 * 64 * 128,
                   help="time the composite path only where B*T*H is at most this")
    p.add_argument("--no-compile", action="store_true", help="skip the first-call (compile) measurement")
    p.add_argument("--layout", choices=["batch_first", "time_major"], default="batch_first",
                   help="input layout of every contender (batch_first=True, or PyTorch's default time-major)")
    p.add_argument("--no-jax", action="store_true", help="skip the JAX contender even when jax is installed")
    p.add_argument("--stat", choices=["median", "min"], default="median",
                   help="statistic over the repeats (min is steadier when other jobs share the machine)")
    p.add_argument("--threads", type=int, default=0,
                   help="BLAS / torch threads for every contender (0 = all cores); 1 gives steady numbers on a busy machine")
    args = p.parse_args()
    if args.repeats is None:
        args.repeats = 5 if args.quick else 15
    global STAT
    STAT = min if args.stat == "min" else statistics.median
    run(args)


if __name__ == "__main__":
    main()
