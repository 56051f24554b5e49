"""A cell of one's own, one training step: ours compiled vs ours op by op vs PyTorch's eager loop vs
JAX (jit + lax.scan) vs the built-in nn.LSTM (issue 19's table).

Peephole LSTM (Gers & Schmidhuber; or ``--cell layernorm``), B=32, T=64, D=64, H=256, float32:
forward over T, loss = sum_t mean(h_t^2), backward (``--inference``: the forward only, no_grad).
Every contender runs in its OWN process (two frameworks' thread pools in one process fight for
the cores and flatter whichever runs first), warms up (compiles), then reports the median of
``--reps`` timed steps. FLOPs are the GEMMs' (forward 2*T*B*(D+H)*4H, training 3x that) and the
fraction of the measured float32 GEMM peak (a 2048^3 product, same thread count) is printed.

    python bench/custom_cell.py                       # 2 threads (the library's default on 2 cores)
    python bench/custom_cell.py --threads 1
    python bench/custom_cell.py --cell layernorm --threads 1
    python bench/custom_cell.py --inference
    python bench/custom_cell.py --batch 4 --seq 5 --hidden 16 --input 8 --reps 2   # a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTENDERS = ["ours compiled", "ours op by op", "pytorch eager loop", "jax jit+scan", "ours nn.LSTM (built-in)",
              "gemm peak"]


def _thread_env(threads: int) -> dict:
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                         f"intra_op_parallelism_threads={n}"}


def _median_time(step, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _data(a: argparse.Namespace) -> tuple:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.seq, a.batch, a.input)).astype(np.float32)
    return x


# ------------------------------------------------------------------------------------------------
# the contenders (each called in a fresh process)


def run_ours(a: argparse.Namespace, compile: bool | None) -> float:
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from custom_cell import LayerNormLSTM, PeepholeLSTM

    import tinygrad_rnn as tr
    from tinygrad_rnn import nn

    tr.set_num_threads(a.threads)
    x = tr.tensor(_data(a))
    if compile is None:
        layer = nn.LSTM(a.input, a.hidden, seed=0)
        params = list(layer.parameters())
    else:
        cell = (PeepholeLSTM if a.cell == "peephole" else LayerNormLSTM)(a.input, a.hidden, seed=0)
        layer = nn.Recurrent(cell, compile=compile)
        params = list(cell.parameters())

    def step() -> None:
        if a.inference:
            with tr.no_grad():
                layer(x)
            return
        for p in params:
            p.grad = None
        out, _ = layer(x)
        (out * out).mean(axis=(1, 2)).sum().backward()

    t = _median_time(step, a.reps)
    if compile:
        assert layer.last_path == "compiled", layer.last_path
    return t


def run_torch(a: argparse.Namespace) -> float:
    import torch

    torch.set_num_threads(a.threads)
    h_ = a.hidden
    g = torch.Generator().manual_seed(0)
    k = 1 / h_ ** 0.5

    def u(*s):
        return ((torch.rand(*s, generator=g) * 2 - 1) * k).requires_grad_()

    w_ih, w_hh, b, peep = u(4 * h_, a.input), u(4 * h_, h_), u(4 * h_), u(3, h_)
    gam, bet, gc, bc = (torch.ones(4 * h_, requires_grad=True), torch.zeros(4 * h_, requires_grad=True),
                        torch.ones(h_, requires_grad=True), torch.zeros(h_, requires_grad=True))
    params = [w_ih, w_hh, b, peep, gam, bet, gc, bc]
    x = torch.from_numpy(_data(a))

    def norm(v, gg, bb):
        d = v - v.mean(-1, keepdim=True)
        return d / ((d * d).mean(-1, keepdim=True) + 1e-5).sqrt() * gg + bb

    def forward():
        h = torch.zeros(a.batch, h_)
        c = torch.zeros(a.batch, h_)
        outs = []
        for t in range(a.seq):
            z = x[t] @ w_ih.T + b + h @ w_hh.T
            if a.cell == "peephole":
                i, f, gg, o = z.chunk(4, -1)
                i = torch.sigmoid(i + peep[0] * c)
                f = torch.sigmoid(f + peep[1] * c)
                c = f * c + i * torch.tanh(gg)
                h = torch.sigmoid(o + peep[2] * c) * torch.tanh(c)
            else:
                i, f, gg, o = norm(z, gam, bet).chunk(4, -1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
                h = torch.sigmoid(o) * torch.tanh(norm(c, gc, bc))
            outs.append(h)
        return torch.stack(outs)

    def step() -> None:
        if a.inference:
            with torch.no_grad():
                forward()
            return
        for p in params:
            p.grad = None
        out = forward()
        (out * out).mean(dim=(1, 2)).sum().backward()

    return _median_time(step, a.reps)


def run_jax(a: argparse.Namespace) -> float:
    import jax
    import jax.numpy as jnp

    h_ = a.hidden
    key = jax.random.PRNGKey(0)
    ks = jax.random.split(key, 4)
    k = 1 / h_ ** 0.5
    p = {"w_ih": jax.random.uniform(ks[0], (4 * h_, a.input), minval=-k, maxval=k),
         "w_hh": jax.random.uniform(ks[1], (4 * h_, h_), minval=-k, maxval=k),
         "b": jax.random.uniform(ks[2], (4 * h_,), minval=-k, maxval=k),
         "peep": jax.random.uniform(ks[3], (3, h_), minval=-k, maxval=k),
         "gam": jnp.ones(4 * h_), "bet": jnp.zeros(4 * h_), "gc": jnp.ones(h_), "bc": jnp.zeros(h_)}
    x = jnp.asarray(_data(a))

    def norm(v, gg, bb):
        d = v - v.mean(-1, keepdims=True)
        return d / jnp.sqrt((d * d).mean(-1, keepdims=True) + 1e-5) * gg + bb

    def cell(p, carry, xt):
        h, c = carry
        z = xt @ p["w_ih"].T + p["b"] + h @ p["w_hh"].T
        if a.cell == "peephole":
            i, f, g, o = jnp.split(z, 4, -1)
            i = jax.nn.sigmoid(i + p["peep"][0] * c)
            f = jax.nn.sigmoid(f + p["peep"][1] * c)
            c = f * c + i * jnp.tanh(g)
            h = jax.nn.sigmoid(o + p["peep"][2] * c) * jnp.tanh(c)
        else:
            i, f, g, o = jnp.split(norm(z, p["gam"], p["bet"]), 4, -1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(norm(c, p["gc"], p["bc"]))
        return (h, c), h

    def forward(p, x):
        z = jnp.zeros((a.batch, h_))
        _, hs = jax.lax.scan(lambda carry, xt: cell(p, carry, xt), (z, z), x)
        return hs

    def loss(p, x):
        hs = forward(p, x)
        return jnp.sum(jnp.mean(hs * hs, axis=(1, 2)))

    fn = jax.jit(forward) if a.inference else jax.jit(jax.value_and_grad(loss))
    return _median_time(lambda: jax.block_until_ready(fn(p, x)), a.reps)


def run_peak(a: argparse.Namespace) -> float:
    """Seconds per GFLOP of a float32 2048^3 GEMM through the library's CPU matmul (its BLAS, its threads)."""
    sys.path.insert(0, ROOT)
    import tinygrad_rnn as tr
    from tinygrad_rnn.backend import blas

    tr.set_num_threads(a.threads)
    n = 2048
    m = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    t = _median_time(lambda: blas.matmul(m, m), a.reps)
    return t / (2 * n ** 3 / 1e9)


def worker(a: argparse.Namespace) -> None:
    name = a.worker
    if name == "ours compiled":
        t = run_ours(a, True)
    elif name == "ours op by op":
        t = run_ours(a, False)
    elif name == "ours nn.LSTM (built-in)":
        t = run_ours(a, None)
    elif name == "pytorch eager loop":
        t = run_torch(a)
    elif name == "jax jit+scan":
        t = run_jax(a)
    else:
        t = run_peak(a)
    print(json.dumps({"name": name, "seconds": t}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cell", choices=["peephole", "layernorm"], default="peephole")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--input", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--inference", action="store_true", help="time the forward only (no_grad)")
    p.add_argument("--only", default="", help="comma-separated contenders to run (default: all)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a)
        return
    names = [n.strip() for n in a.only.split(",")] if a.only else CONTENDERS
    flops = 2 * a.seq * a.batch * (a.input + a.hidden) * 4 * a.hidden * (1 if a.inference else 3)
    res = {}
    for name in names:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--cell", a.cell, "--batch", str(a.batch),
               "--seq", str(a.seq), "--input", str(a.input), "--hidden", str(a.hidden), "--threads", str(a.threads),
               "--reps", str(a.reps)] + (["--inference"] if a.inference else [])
        env = {**os.environ, **_thread_env(a.threads), "PYTHONPATH": ROOT}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}")
            continue
        res[name] = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
    peak = res.pop("gemm peak", None)
    what = "inference (no_grad forward)" if a.inference else "training step (forward + backward)"
    print(f"{a.cell} LSTM, B={a.batch} T={a.seq} D={a.input} H={a.hidden}, float32, {a.threads} thread(s), {what}; "
          f"median of {a.reps}, each framework in its own process; GEMM FLOPs {flops / 1e9:.3f} G")
    if peak:
        print(f"measured float32 GEMM peak: {1 / peak:.1f} GFLOP/s -> the FLOPs at peak take "
              f"{flops / 1e9 * peak * 1e3:.1f} ms")
    base = res.get("ours compiled")
    print(f"{'contender':28s} {'ms':>9s} {'GFLOP/s':>8s} {'of peak':>8s} {'compiled is':>12s}")
    for name, t in res.items():
        gf = flops / t / 1e9
        frac = f"{gf * peak:.0%}" if peak else "-"
        ratio = f"{t / base:.2f}x" if base else "-"
        print(f"{name:28s} {t * 1e3:9.2f} {gf:8.1f} {frac:>8s} {ratio:>12s}")


if __name__ == "__main__":
    main()
