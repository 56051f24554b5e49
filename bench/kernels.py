"""Benchmark the CPU backend's Numba kernels and its softmax cross-entropy against NumPy (and PyTorch).

Reports, in one run:
  * start-up: a fresh interpreter importing the kernel modules and calling each Numba kernel
    once, with an empty Numba cache (a real compile) and again with that cache filled (a cache
    load), plus whether the package's own on-disk cache was hit;
  * warm medians of each Numba kernel next to the NumPy code doing the same maths, with ratios:
    scatter_add_rows (embedding backward), the LSTM step kernels and the whole-sequence kernel
    of a small layer, and the Adam step;
  * warm medians of the backend's softmax cross-entropy (per block of rows: NumPy's SIMD exp
    between Numba row kernels) next to a naive NumPy version (full log_softmax, gather, the
    probabilities kept for backward) and torch's F.cross_entropy, forward and forward+backward.

    python bench/kernels.py            # add --quick for fewer repeats
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tinygrad_rnn.backend import get_backend  # noqa: E402
from tinygrad_rnn.backend import optim_kernels as OK  # noqa: E402
from tinygrad_rnn.backend import rnn_kernels as R  # noqa: E402
from tinygrad_rnn.backend.cpu import _step_forward_vectorised  # noqa: E402

# every Numba kernel the start-up check calls, in this order (cpu_kernels, rnn_kernels, optim_kernels)
KERNELS = ("scatter_add_rows", "xent_shift_rows", "xent_finish_rows", "xent_grad_rows",
           "lstm_step_forward", "lstm_step_backward", "lstm_seq_forward", "adam_step")

# a fresh interpreter: time the imports, then one call of each kernel on tiny float32 inputs
_STARTUP = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
from tinygrad_rnn.backend import cpu_kernels as K, optim_kernels as OK, rnn_kernels as R
t_import = time.perf_counter() - t0
f = lambda *s: np.zeros(s, np.float32)
z = f(2, 3); t = np.zeros(2, np.int64); lse = np.zeros(2); g = np.ones(2)
b, h = 2, 3
calls = {
    "scatter_add_rows": lambda: K.scatter_add_rows(f(3, 3), t, z),
    "xent_shift_rows": lambda: K.xent_shift_rows(z, 0, True, lse, np.empty((2, 3))),
    "xent_finish_rows": lambda: K.xent_finish_rows(np.ones((2, 3)), 0, z, t, -100, lse, np.zeros(2), f(2)),
    "xent_grad_rows": lambda: K.xent_grad_rows(f(2, 3), 0, lse, t, -100, g),
    "lstm_step_forward": lambda: R.lstm_step_forward(f(b, 4 * h), f(b, 4 * h), f(b, h), f(b, h), f(b) + 1,
                                                     f(b, 4 * h), f(b, h), f(b, h)),
    "lstm_step_backward": lambda: R.lstm_step_backward(f(b, 4 * h), f(b, h), f(b, h), f(b) + 1, f(b, h), f(b, h), f(b, h),
                                                       f(b, 4 * h), f(b, h), f(b, h)),
    "lstm_seq_forward": lambda: R.lstm_seq_forward(f(2, b, 4 * h), f(h, 4 * h), f(b, h), f(b, h), f(2, b) + 1,
                                                   f(2, b, 4 * h), f(3, b, h), f(3, b, h)),
    "adam_step": lambda: OK.adam_step(f(4), f(4), f(4), f(4), f(0), 0.9, 0.999, 1e-8, 0.0, 0.0, 1e-3, 1.0, False),
}
res = {"import_s": t_import}
for name, fn in calls.items():
    t0 = time.perf_counter(); fn(); dt = time.perf_counter() - t0
    st = next(getattr(m, name) for m in (K, R, OK) if hasattr(m, name)).stats
    res[name] = {"first_call_s": dt, "hits": sum(st.cache_hits.values()), "misses": sum(st.cache_misses.values())}
print(json.dumps(res))
"""


def startup(cache_dir: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, "-c", _STARTUP], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_time(fn: Callable[[], object], min_time: float, max_reps: int = 200) -> float:
    fn()  # warm
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# ---------------------------------------------------------------------------------------
# the NumPy equivalents


def naive_xent_forward(z: np.ndarray, t: np.ndarray, ignore: int) -> tuple[np.ndarray, np.ndarray]:
    """log_softmax over the whole (N, C), gather, and the probabilities kept for backward."""
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    keep = t != ignore
    loss = np.where(keep, -logp[np.arange(len(t)), np.where(keep, t, 0)], 0).astype(z.dtype)
    return loss, np.exp(logp)


def naive_xent_backward(p: np.ndarray, t: np.ndarray, ignore: int, g: np.ndarray) -> np.ndarray:
    keep = t != ignore
    gk = np.where(keep, g, 0.0).astype(p.dtype)
    d = p * gk[:, None]
    d[np.arange(len(t)), np.where(keep, t, 0)] -= gk
    return d


def numpy_scatter_add(v: int, idx: np.ndarray, src: np.ndarray) -> np.ndarray:
    out = np.zeros((v, src.shape[1]), dtype=src.dtype)
    np.add.at(out, idx, src)
    return out


def numpy_lstm_step_backward(gates, c_prev, tanh_c, dout, dh_carry, dc_carry, dgates, dc_prev) -> None:
    """The lstm_step_backward maths with NumPy ufuncs (no padded rows)."""
    h = c_prev.shape[1]
    i, f, g, o = gates[:, :h], gates[:, h: 2 * h], gates[:, 2 * h: 3 * h], gates[:, 3 * h:]
    dh = dout + dh_carry
    dc = dc_carry + dh * o * (1 - tanh_c * tanh_c)
    dgates[:, :h] = dc * g * i * (1 - i)
    dgates[:, h: 2 * h] = dc * c_prev * f * (1 - f)
    dgates[:, 2 * h: 3 * h] = dc * i * (1 - g * g)
    dgates[:, 3 * h:] = dh * tanh_c * o * (1 - o)
    np.multiply(dc, f, out=dc_prev)


def numpy_lstm_seq_forward(xw, w_hh_t, h0, c0, mask, gates, h_all, c_all) -> None:
    """Per step: BLAS matmul and the backend's vectorised (NumPy) gate math."""
    h_all[0], c_all[0] = h0, c0
    hw = np.empty_like(xw[0])
    for t in range(xw.shape[0]):
        np.matmul(h_all[t], w_hh_t, out=hw)
        _step_forward_vectorised("lstm", xw[t], hw, None, h_all[t], c_all[t], mask[t], gates[t], h_all[t + 1], c_all[t + 1])


def numpy_adam_step(p, g, m, v, beta1, beta2, eps, step_size, bc2_sqrt) -> None:
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    denom = np.sqrt(v)
    denom /= bc2_sqrt
    denom += eps
    p -= step_size * (m / denom)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch intra-op threads (default 1: single-threaded like the kernels and NumPy ufuncs)")
    args = ap.parse_args()
    min_time = 0.3 if args.quick else 1.0
    try:
        import torch

        torch.set_num_threads(args.torch_threads)
    except ImportError:
        torch = None

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, numba {__import__('numba').__version__}"
          + (f", torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else ", torch not installed")
          + f", {os.cpu_count()} CPUs; Numba kernels are single-threaded")

    # -- start-up: compile vs cache load, measured in fresh interpreters -------------------------
    with tempfile.TemporaryDirectory() as cache:
        cold, cached = startup(cache), startup(cache)
    default = startup(None)
    names = list(KERNELS)
    print("\nstart-up in a fresh interpreter (import + one call each; the first call also pays Numba's one-off"
          "\n  initialisation, whichever kernel it is):")
    print(f"  {'':24s}{'empty cache (compile)':>24s}{'filled cache (load)':>22s}{'package cache':>18s}")
    print(f"  {'import the 3 modules':24s}{cold['import_s'] * 1e3:21.0f} ms{cached['import_s'] * 1e3:19.0f} ms"
          f"{default['import_s'] * 1e3:15.0f} ms")
    for k in names:
        hit = "hit" if default[k]["hits"] and not default[k]["misses"] else "MISS (compiled)"
        print(f"  {k:24s}{cold[k]['first_call_s'] * 1e3:21.0f} ms{cached[k]['first_call_s'] * 1e3:19.1f} ms"
              f"{default[k]['first_call_s'] * 1e3:15.1f} ms  {hit}")
    print(f"  {'total':24s}{sum(cold[k]['first_call_s'] for k in names) * 1e3:21.0f} ms"
          f"{sum(cached[k]['first_call_s'] for k in names) * 1e3:19.1f} ms"
          f"{sum(default[k]['first_call_s'] for k in names) * 1e3:15.1f} ms")
    assert all(cached[k]["hits"] >= 1 for k in names), "the filled cache was not used"

    be = get_backend("cpu")
    rng = np.random.default_rng(0)

    # -- Numba kernels vs NumPy -------------------------------------------------------------------
    rows: list[tuple[str, float, float, float | None]] = []

    def row(name: str, ours, numpy_fn, torch_fn=None) -> None:
        t_ours = median_time(ours, min_time)
        t_np = median_time(numpy_fn, min_time)
        t_th = median_time(torch_fn, min_time) if torch_fn is not None else None
        rows.append((name, t_ours, t_np, t_th))

    n, v, d = 400, 10_000, 200
    idx = rng.integers(0, v, n)
    idx[: n // 4] = idx[0]  # repeated ids, as with padding or frequent words
    src = rng.standard_normal((n, d)).astype(np.float32)
    np.testing.assert_allclose(be.scatter_add_rows(v, idx, src), numpy_scatter_add(v, idx, src), rtol=1e-5, atol=1e-5)
    ti = None
    if torch is not None:
        it, st = torch.from_numpy(idx), torch.from_numpy(src)
        ti = lambda: torch.zeros(v, d).index_add_(0, it, st)
    row(f"scatter_add_rows    N={n} V={v} D={d}", lambda: be.scatter_add_rows(v, idx, src),
        lambda: numpy_scatter_add(v, idx, src), ti)

    # a small LSTM layer: the backend runs these sizes in the Numba step / sequence kernels
    T, B, H = 35, 16, 32
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
    xw, hw, h0, c0 = f32(T, B, 4 * H), f32(B, 4 * H), f32(B, H), f32(B, H)
    w_t = (f32(H, 4 * H) / np.sqrt(H)).astype(np.float32)
    mask = np.ones((T, B), np.float32)
    gates, gates2 = np.empty((B, 4 * H), np.float32), np.empty((B, 4 * H), np.float32)
    h1, c1, h2, c2 = (np.empty((B, H), np.float32) for _ in range(4))
    R.lstm_step_forward(xw[0], hw, h0, c0, mask[0], gates, h1, c1)
    _step_forward_vectorised("lstm", xw[0], hw, None, h0, c0, mask[0], gates2, h2, c2)
    np.testing.assert_allclose(h1, h2, rtol=1e-5, atol=1e-6)
    row(f"lstm_step_forward   B={B} H={H}", lambda: R.lstm_step_forward(xw[0], hw, h0, c0, mask[0], gates, h1, c1),
        lambda: _step_forward_vectorised("lstm", xw[0], hw, None, h0, c0, mask[0], gates2, h2, c2))

    tanh_c = np.tanh(c1)
    dout, dhc, dcc = f32(B, H), f32(B, H), f32(B, H)
    dg1, dg2 = np.empty((B, 4 * H), np.float32), np.empty((B, 4 * H), np.float32)
    dhp, dcp1, dcp2 = (np.empty((B, H), np.float32) for _ in range(3))
    R.lstm_step_backward(gates, c0, tanh_c, mask[0], dout, dhc, dcc, dg1, dhp, dcp1)
    numpy_lstm_step_backward(gates, c0, tanh_c, dout, dhc, dcc, dg2, dcp2)
    np.testing.assert_allclose(dg1, dg2, rtol=1e-5, atol=1e-6)
    row(f"lstm_step_backward  B={B} H={H}",
        lambda: R.lstm_step_backward(gates, c0, np.tanh(c1), mask[0], dout, dhc, dcc, dg1, dhp, dcp1),
        lambda: numpy_lstm_step_backward(gates, c0, np.tanh(c1), dout, dhc, dcc, dg2, dcp2))

    seq = [(np.empty((T, B, 4 * H), np.float32), np.empty((T + 1, B, H), np.float32), np.empty((T + 1, B, H), np.float32))
           for _ in range(2)]
    R.lstm_seq_forward(xw, w_t, h0, c0, mask, *seq[0])
    numpy_lstm_seq_forward(xw, w_t, h0, c0, mask, *seq[1])
    np.testing.assert_allclose(seq[0][1], seq[1][1], rtol=1e-4, atol=1e-5)
    row(f"lstm_seq_forward    T={T} B={B} H={H}", lambda: R.lstm_seq_forward(xw, w_t, h0, c0, mask, *seq[0]),
        lambda: numpy_lstm_seq_forward(xw, w_t, h0, c0, mask, *seq[1]))

    size = 1 << 20
    p1, g = f32(size), f32(size)
    m1, v1 = np.zeros(size, np.float32), np.zeros(size, np.float32)
    p2, m2, v2 = p1.copy(), m1.copy(), v1.copy()
    hyper = dict(beta1=0.9, beta2=0.999, eps=1e-8, step_size=1e-3, bc2_sqrt=0.5)
    empty = np.empty(0, np.float32)
    adam = lambda: OK.adam_step(p1, g, m1, v1, empty, 0.9, 0.999, 1e-8, 0.0, 0.0, 1e-3, 0.5, False)
    adam()
    numpy_adam_step(p2, g, m2, v2, **hyper)
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)
    ta = None
    if torch is not None:
        tp = torch.from_numpy(f32(size)).requires_grad_()
        tp.grad = torch.from_numpy(g)
        topt = torch.optim.Adam([tp], lr=1e-3, foreach=False)
        ta = topt.step
    row(f"adam_step           {size} params", adam, lambda: numpy_adam_step(p2, g, m2, v2, **hyper), ta)

    print("\nwarm medians, f32 (Numba kernel next to the NumPy code doing the same maths; torch: its op):")
    print(f"  {'kernel':44s}{'numba':>10s}{'numpy':>10s}{'torch':>10s}{'numpy/numba':>13s}{'torch/numba':>13s}")
    for name, t_ours, t_np, t_th in rows:
        th = f"{t_th * 1e3:8.3f}ms" if t_th is not None else f"{'-':>10s}"
        rt = f"{t_th / t_ours:12.2f}x" if t_th is not None else f"{'-':>13s}"
        print(f"  {name:44s}{t_ours * 1e3:8.3f}ms{t_np * 1e3:8.3f}ms{th}{t_np / t_ours:12.2f}x{rt}")

    # -- softmax cross-entropy: the backend vs naive NumPy vs torch ---------------------------------
    rows = []
    for n, c, dt in ((640, 10_000, np.float32), (640, 10_000, np.float64), (4096, 65, np.float32)):
        z = rng.standard_normal((n, c)).astype(dt)
        t = rng.integers(0, c, n)
        t[::10] = -100  # some padding
        g = np.ones(n)
        loss, mx, ls = be.softmax_xent(z, t, -100)
        ref_loss, p = naive_xent_forward(z, t, -100)
        tol = dict(rtol=1e-4, atol=1e-5) if dt == np.float32 else dict(rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(loss, ref_loss, **tol)
        np.testing.assert_allclose(be.softmax_xent_backward(z, mx, ls, t, -100, g), naive_xent_backward(p, t, -100, g), **tol)
        tf = tb = None
        if torch is not None:
            zt, tt = torch.from_numpy(z), torch.from_numpy(t)
            tf = lambda zt=zt, tt=tt: torch.nn.functional.cross_entropy(zt, tt, reduction="sum")

            def tb(zt=zt, tt=tt):
                zz = zt.clone().requires_grad_()
                torch.nn.functional.cross_entropy(zz, tt, reduction="sum").backward()

        label = f"N={n} C={c} {np.dtype(dt).name}"
        row(f"softmax_xent fwd   {label}", lambda z=z, t=t: be.softmax_xent(z, t, -100),
            lambda z=z, t=t: naive_xent_forward(z, t, -100), tf)
        row(f"softmax_xent bwd   {label}", lambda z=z, t=t, mx=mx, ls=ls, g=g: be.softmax_xent_backward(z, mx, ls, t, -100, g),
            lambda t=t, p=p, g=g: naive_xent_backward(p, t, -100, g), None)
        row(f"softmax_xent f+b   {label}",
            lambda z=z, t=t, g=g: be.softmax_xent_backward(z, *be.softmax_xent(z, t, -100)[1:], t, -100, g),
            lambda z=z, t=t, g=g: naive_xent_backward(naive_xent_forward(z, t, -100)[1], t, -100, g), tb)

    print("\nsoftmax cross-entropy, warm medians (backend: blocks of rows, NumPy exp between Numba row kernels;"
          "\n  naive NumPy: full log_softmax + gather, probabilities kept; torch: F.cross_entropy, f+b with autograd):")
    print(f"  {'':44s}{'backend':>10s}{'naive':>10s}{'torch':>10s}{'naive/backend':>15s}{'torch/backend':>15s}")
    for name, t_ours, t_np, t_th in rows:
        th = f"{t_th * 1e3:8.2f}ms" if t_th is not None else f"{'-':>10s}"
        rt = f"{t_th / t_ours:14.2f}x" if t_th is not None else f"{'-':>15s}"
        print(f"  {name:44s}{t_ours * 1e3:8.2f}ms{t_np * 1e3:8.2f}ms{th}{t_np / t_ours:14.2f}x{rt}")


if __name__ == "__main__":
    main()
