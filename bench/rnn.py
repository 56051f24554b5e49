"""Recurrent-layer benchmark: training step (forward + BPTT + weight gradients) and inference.

Each contender runs in its own fresh process, as a user runs it (bench/_proc.py): ours (the fused
path, plus the composite path of cells unrolled from primitive ops on the small configs), PyTorch's
``nn.LSTM/GRU/RNN`` on the CPU, a ``jax.jit`` + ``lax.scan`` LSTM and a plain-NumPy LSTM (the last
three when installed; JAX and NumPy for the LSTM only). One child per framework per config, alternating
ours, torch, jax, numpy, ours, torch, ... over ``--rounds`` rounds, each child timing ``--repeats``
calls after a warm-up; the tables quote the best (or ``--stat median``) of all of them and print the
torch / ours ratio both ways (best and median). Beside it: the training FLOPs, the float32 GEMM peak
measured in its own process for the same thread count, the time a step would take at that peak, the
fraction of peak each framework reaches, and the GEMM rate at the recurrent step's own shape.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/rnn.py                 # full table, all cores
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/rnn.py --threads 1
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/rnn.py --quick         # 2 rounds, fewer repeats
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/rnn.py --layout time_major

FLOPs (GEMMs only): forward 2*B*T*G*H*(D+H) with G = 4 (LSTM), 3 (GRU), 1 (RNN); backward twice
that, so a training step is 3x the forward.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _proc  # noqa: E402

# (B, T, D, H); (32, 64, 64, 256) is the char LM's layer (examples/char_lm.py)
CONFIGS = [(1, 100, 32, 64), (32, 64, 64, 128), (32, 64, 64, 256), (32, 100, 256, 512), (64, 100, 1024, 1024)]
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
FRAMEWORKS = ("ours", "torch", "jax", "numpy")


def forward_flops(cfg, gates: int) -> int:
    bsz, t_, d_, h_ = cfg
    return 2 * bsz * t_ * gates * h_ * (d_ + h_)


def first_call_times(threads: int) -> tuple[float, float]:
    """Seconds for import + first fused LSTM/GRU/RNN train step in a fresh process: cold (empty Numba
    cache dir) and warm (the cache the cold run just wrote)."""
    code = ("import time; t=time.perf_counter(); import tinygrad_rnn as tr; from tinygrad_rnn import nn\n"
            "for cls in (nn.LSTM, nn.GRU, nn.RNN):\n"
            "  for B in (1, 64):\n"
            "    m = cls(8, 16 if B == 1 else 128); x = tr.randn(5, B, 8, seed=0); out, _ = m(x); out.sum().backward()\n"
            "emit(time.perf_counter()-t)")
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d)
        cold = _proc.run_fresh(code, threads, env=env)
        warm = _proc.run_fresh(code, threads, env=env)
    return cold, warm


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


# ---------------------------------------------------------------------------------------------
# the child: one framework, one config, every requested model; imports only that framework


def _input(spec: dict) -> np.ndarray:
    bsz, t_, d_, _ = spec["cfg"]
    shape = (bsz, t_, d_) if spec["batch_first"] else (t_, bsz, d_)
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _reps(spec: dict, name: str) -> int:
    flops = 3 * forward_flops(spec["cfg"], GATES[name])
    return spec["repeats"] if flops < 5e10 else max(3, spec["repeats"] // 3)


def _np_lstm_weights(spec: dict):
    _, _, d_, h_ = spec["cfg"]
    rng = np.random.default_rng(1)
    k = 1.0 / np.sqrt(h_)
    w_ih = rng.uniform(-k, k, (4 * h_, d_)).astype(np.float32)
    w_hh = rng.uniform(-k, k, (4 * h_, h_)).astype(np.float32)
    return w_ih, w_hh, rng.uniform(-k, k, 4 * h_).astype(np.float32)


def worker(spec: dict) -> dict:
    """Time one framework (spec['fw']) on one config in this process; {model: {kind: [seconds]}}."""
    fw, threads, bf = spec["fw"], _proc.child_threads(), spec["batch_first"]
    x_np = _input(spec)
    time_calls = _proc.time_calls
    out: dict = {}
    if fw == "ours":
        import tinygrad_rnn as tr
        from tinygrad_rnn import nn
        from tinygrad_rnn.backend import blas as kblas

        tr.get_backend("cpu")  # loads the kernels' BLAS, so the limits below reach it
        tr.set_num_threads(threads)
        _proc.limit_blas(threads)
        bsz, t_, _, h_ = spec["cfg"]
        for name in spec["models"]:
            m = getattr(nn, name)(spec["cfg"][2], h_, batch_first=bf, seed=0)
            x = tr.tensor(x_np)

            def train(m=m, x=x):
                m.zero_grad()
                with tr.autocast("cpu", enabled=spec.get("bf16", False)):
                    o, _ = m(x)
                o.sum().backward()

            def infer(m=m, x=x):
                with tr.no_grad(), tr.autocast("cpu", enabled=spec.get("bf16", False)):
                    return m(x)

            reps = _reps(spec, name)
            r = {"train": time_calls(train, reps, budget_s=spec["budget"]),
                 "infer": time_calls(infer, reps, budget_s=spec["budget"])}
            if spec["mem"]:
                r["mem_inf"] = peak_mb(infer)
                r["mem_train"] = peak_mb(lambda m=m, x=x: m(x))
            if bsz * t_ * h_ <= spec["composite_max"]:
                m.fused = False
                r["composite"] = time_calls(train, max(3, reps // 2), budget_s=spec["budget"])
                m.fused = True
            out[name] = r
        out["info"] = (f"tinygrad_rnn {tr.get_num_threads()} thr; our GEMMs (TINYGRAD_RNN_BLAS="
                       f"{os.environ.get('TINYGRAD_RNN_BLAS', 'auto')}): {kblas.PROVIDER or 'NumPy matmul'}; {_proc.blas_info()}")
    elif fw == "torch":
        import torch

        torch.set_num_threads(threads)
        tx = torch.tensor(x_np)
        for name in spec["models"]:
            tm = getattr(torch.nn, name)(spec["cfg"][2], spec["cfg"][3], batch_first=bf)

            def train(tm=tm):
                tm.zero_grad()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec.get("bf16", False)):
                    o, _ = tm(tx)
                o.float().sum().backward()

            def infer(tm=tm):
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec.get("bf16", False)):
                    tm(tx)

            reps = _reps(spec, name)
            out[name] = {"train": time_calls(train, reps, budget_s=spec["budget"]),
                         "infer": time_calls(infer, reps, budget_s=spec["budget"])}
        out["info"] = f"torch {torch.__version__} {torch.get_num_threads()} thr; {_proc.blas_info()}"
    elif fw == "jax":
        pinned = ""
        if threads < (os.cpu_count() or 1) and hasattr(os, "sched_setaffinity"):
            # XLA has no thread-count flag beyond the single-thread one: pin the process to `threads` cores
            cpus = sorted(os.sched_getaffinity(0))[:threads]
            os.sched_setaffinity(0, cpus)
            pinned = f", pinned to CPUs {cpus}"
        import jax

        jax_train, jax_infer = jax_lstm_fns(*_np_lstm_weights(spec), bf)
        xj = jax.numpy.asarray(x_np)
        reps = _reps(spec, "LSTM")
        out["LSTM"] = {"train": time_calls(lambda: jax_train(xj), reps, budget_s=spec["budget"]),
                       "infer": time_calls(lambda: jax_infer(xj), reps, budget_s=spec["budget"])}
        out["info"] = f"jax {jax.__version__} (XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}{pinned}); {_proc.blas_info()}"
    elif fw == "numpy":
        _proc.limit_blas(threads)
        xt = np.ascontiguousarray(x_np.transpose(1, 0, 2)) if bf else x_np
        a = (xt, *_np_lstm_weights(spec))
        reps = _reps(spec, "LSTM")
        out["LSTM"] = {"train": time_calls(lambda: numpy_lstm_train_step(*a), reps, budget_s=spec["budget"]),
                       "infer": time_calls(lambda: numpy_lstm_train_step(*a, train=False), reps, budget_s=spec["budget"])}
        out["info"] = f"numpy {np.__version__}; {_proc.blas_info()}"
    else:
        raise ValueError(f"unknown framework {fw!r}")
    return out


# ---------------------------------------------------------------------------------------------
# the parent: alternate the children, collect, print


def available(args: argparse.Namespace) -> list[str]:
    fws = ["ours"]
    if importlib.util.find_spec("torch") is not None:
        fws.append("torch")
    else:
        print("torch not installed: PyTorch columns skipped")
    if "LSTM" in args.models and not args.bf16:  # (JAX's and NumPy's LSTMs: float32 only)
        if not args.no_jax and importlib.util.find_spec("jax") is not None:
            fws.append("jax")
        fws.append("numpy")
    return fws


def run(args: argparse.Namespace) -> None:
    threads = args.threads or os.cpu_count() or 1
    configs = CONFIGS[: args.max_configs]
    shapes = sorted({(c[0], c[3], GATES[m] * c[3]) for c in configs for m in args.models})
    gemm = _proc.gemm_peak(threads, shapes=shapes, repeats=3 if args.quick else 7)
    _proc.print_machine(threads, gemm)
    print(f"layout: {args.layout}; {args.rounds} rounds x {args.repeats} repeats per child; ms columns: {args.stat}")
    if args.bf16:
        print("bfloat16 autocast for ours (tr.autocast) and PyTorch (torch.autocast): bf16 products, float32 "
              "accumulation; '%pk' columns are the float32 GEMM FLOPs over the float32 peak (> 100% possible)")
    if not args.no_compile:
        cold, warm = first_call_times(threads)
        print(f"first call (import + first fused LSTM/GRU/RNN steps, both kernel paths): cold compile {cold:.2f} s, "
              f"Numba cache hit {warm:.2f} s")
    fws = available(args)
    infos: dict[str, str] = {}
    rows = []
    print("\n" + _header(), flush=True)
    for cfg in configs:
        acc: dict = {}
        for rnd in range(args.rounds):
            for fw in fws:
                models = args.models if fw in ("ours", "torch") else ["LSTM"]
                spec = {"fw": fw, "cfg": list(cfg), "models": models, "batch_first": args.layout == "batch_first",
                        "repeats": args.repeats, "budget": args.budget, "mem": fw == "ours" and rnd == 0,
                        "composite_max": 0 if args.bf16 else args.composite_max, "bf16": args.bf16}
                res = _proc.run_fresh(f"import json, rnn; emit(rnn.worker(json.loads({json.dumps(spec)!r})))", threads)
                infos.setdefault(fw, res.pop("info"))
                for name, r in res.items():
                    slot = acc.setdefault(name, {})
                    for k, v in r.items():
                        if isinstance(v, list):
                            slot.setdefault(f"{fw}:{k}", []).extend(v)
                        else:
                            slot[f"{fw}:{k}"] = v
        for name in args.models:
            row = _summarise(cfg, name, acc.get(name, {}), gemm, args.stat)
            rows.append(row)
            print(_row(row), flush=True)
    print("\ncontenders (each in its own process):")
    for fw, info in infos.items():
        print(f"  {fw}: {info}")
    gemm = _proc.remeasure_peak(threads, gemm, repeats=3 if args.quick else 7)
    for r in rows:
        r["peak"], r["shape_gf"] = gemm["peak"], gemm["shapes"].get(r["shape"])
    print("\n" + _header())
    for r in rows:
        print(_row(r))
    print(f"load average {os.getloadavg()[0]:.2f} at end")


def _summarise(cfg, name: str, acc: dict, gemm: dict, stat: str) -> dict:
    fwd = forward_flops(cfg, GATES[name])
    shape = f"{cfg[0]}x{cfg[3]}x{GATES[name] * cfg[3]}"
    r = {"cfg": "(" + ",".join(map(str, cfg)) + ")", "model": name, "flops": 3 * fwd, "peak": gemm["peak"],
         "shape": shape, "shape_gf": gemm["shapes"].get(shape)}
    for k, v in acc.items():
        if isinstance(v, list):
            best, med = _proc.best_and_median(v)
            r[k] = best if stat == "min" else med
            r[k + ":best"], r[k + ":med"] = best, med
        else:
            r[k] = v
    return r


def _header() -> str:
    return (f"{'config (B,T,D,H)':<20}{'model':<6}{'GFLOP':>7}{'@peak ms':>9}{'ours ms':>9}{'torch ms':>9}"
            f"{'torch/ours':>11}{'(median)':>9}{'ours %pk':>9}{'torch %pk':>10}{'step GEMM%':>11}{'compos. ms':>11}"
            f"{'numpy ms':>9}{'jax ms':>8}{'inf ms':>8}{'torch inf':>10}{'torch/inf':>10}{'(median)':>9}{'inf %pk':>8}"
            f"{'jax inf':>8}{'inf MB':>7}{'trfwd MB':>9}")


def _fmt(v, w, spec=".2f"):
    return f"{'—':>{w}}" if v is None else f"{v:>{w}{spec}}"


def _row(r: dict) -> str:
    ms = lambda k: None if k not in r else r[k] * 1e3  # noqa: E731
    ratio = lambda a, b: r[a] / r[b] if a in r and b in r else None  # noqa: E731
    pct = lambda k, flops: 100 * flops / r[k] / 1e9 / r["peak"] if k in r else None  # noqa: E731
    at_peak = r["flops"] / r["peak"] / 1e9
    shape_pct = 100 * r["shape_gf"] / r["peak"] if r.get("shape_gf") else None
    return (f"{r['cfg']:<20}{r['model']:<6}{r['flops'] / 1e9:>7.3g}{at_peak * 1e3:>9.2f}{_fmt(ms('ours:train'), 9)}"
            f"{_fmt(ms('torch:train'), 9)}{_fmt(ratio('torch:train:best', 'ours:train:best'), 11)}"
            f"{_fmt(ratio('torch:train:med', 'ours:train:med'), 9)}{_fmt(pct('ours:train', r['flops']), 9, '.1f')}"
            f"{_fmt(pct('torch:train', r['flops']), 10, '.1f')}{_fmt(shape_pct, 11, '.1f')}{_fmt(ms('ours:composite'), 11)}"
            f"{_fmt(ms('numpy:train'), 9)}{_fmt(ms('jax:train'), 8)}{_fmt(ms('ours:infer'), 8)}{_fmt(ms('torch:infer'), 10)}"
            f"{_fmt(ratio('torch:infer:best', 'ours:infer:best'), 10)}{_fmt(ratio('torch:infer:med', 'ours:infer:med'), 9)}"
            f"{_fmt(pct('ours:infer', r['flops'] / 3), 8, '.1f')}{_fmt(ms('jax:infer'), 8)}"
            f"{_fmt(r.get('ours:mem_inf'), 7, '.1f')}{_fmt(r.get('ours:mem_train'), 9, '.1f')}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 rounds, fewer repeats")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds of fresh processes (default 3, quick 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per child (default 7, quick 3)")
    p.add_argument("--budget", type=float, default=20.0, help="seconds of timed calls per case per child (at least 3 calls)")
    p.add_argument("--models", nargs="+", default=["LSTM", "GRU", "RNN"], choices=list(GATES))
    p.add_argument("--max-configs", type=int, default=len(CONFIGS), help="only the first N configs")
    p.add_argument("--composite-max", type=int, default=32 * 64 * 128,
                   help="time the composite path only where B*T*H is at most this")
    p.add_argument("--no-compile", action="store_true", help="skip the first-call (compile) measurement")
    p.add_argument("--layout", choices=["batch_first", "time_major"], default="batch_first",
                   help="input layout of every contender (batch_first=True, or PyTorch's default time-major)")
    p.add_argument("--no-jax", action="store_true", help="skip the JAX contender even when jax is installed")
    p.add_argument("--bf16", action="store_true", help="ours and PyTorch under bfloat16 autocast (no JAX/NumPy)")
    p.add_argument("--stat", choices=["min", "median"], default="min",
                   help="statistic the ms and %%peak columns show (both ratios are always printed)")
    p.add_argument("--threads", type=int, default=0,
                   help="threads for every contender, set in each child before import (0 = all cores)")
    args = p.parse_args()
    if args.rounds is None:
        args.rounds = 2 if args.quick else 3
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    run(args)


if __name__ == "__main__":
    main()
