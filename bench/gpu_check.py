"""GPU check: every op and recurrent layer on the CuPy backend against the CPU backend, and
LSTM/GRU/RNN training-step timings against PyTorch's cuDNN layers, in one run.

    PYTHONPATH=. python bench/gpu_check.py              # on a GPU machine (no install needed)
    PYTHONPATH=. python bench/gpu_check.py --dry-run    # no GPU: run the CPU parts at toy sizes

Accuracy: each op / layer runs on the same host inputs on both devices, forward and backward
(through a fixed random projection of its outputs); the error is max over outputs and input
gradients of ||gpu - cpu|| / ||cpu|| in float32 and float64. Timing: one training step is the
layer's forward and backward (input and weight gradients), (T, B, D) input, float32, medians
over repeats with the device synchronised around each step, after warm-ups (which also capture
our CUDA graphs); cuDNN runs with TF32 off, as our cuBLAS GEMMs do. Prints the card, versions
and one table; writes it to $OUT/gpu_check.txt (when OUT is set) and
bench/results/gpu_check_<card>.txt. Without a GPU and without --dry-run it prints
"no GPU: skipped" and exits 0.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import tinygrad_rnn as tr  # noqa: E402
import tinygrad_rnn.nn.functional as F  # noqa: E402
from tinygrad_rnn import nn  # noqa: E402

# ------------------------------------------------------------------------------------------
# the catalogue of ops (tests/test_cuda.py runs the same list on a GPU)


@dataclass(frozen=True)
class Inp:
    kind: str  # "f": float (requires grad), "i": int64 in [low, high)
    shape: tuple[int, ...]
    low: float = -2.0
    high: float = 2.0


def fl(*shape: int, low: float = -2.0, high: float = 2.0) -> Inp:
    return Inp("f", shape, low, high)


def ints(*shape: int, high: int) -> Inp:
    return Inp("i", shape, 0, high)


def _parts(a: tr.Tensor, parts) -> tr.Tensor:
    # weight each part differently so a gradient routed to the wrong part shows
    return tr.cat([p * (k + 1) for k, p in enumerate(parts)], dim=1)


OPS: dict[str, tuple[Callable[..., Any], list[Inp]]] = {
    "add": (lambda a, b: a + b, [fl(3, 4), fl(4)]),
    "sub": (lambda a, b: a - b, [fl(3, 1), fl(1, 5)]),
    "mul": (lambda a, b: a * b, [fl(2, 3, 4), fl(3, 1)]),
    "div": (lambda a, b: a / b, [fl(3, 4), fl(3, 4, low=0.5, high=2.0)]),
    "pow": (lambda a, b: a ** b, [fl(3, 4, low=0.5, high=2.0), fl(3, 4, low=-1.5, high=1.5)]),
    "pow_scalar": (lambda a: a ** 3, [fl(3, 4)]),
    "rpow": (lambda a: 2.0 ** a, [fl(3, 4)]),
    "scalar_arith": (lambda a: (2 * a - 1) / 3 + 0.5 - a * 0.25, [fl(2, 3)]),
    "neg": (lambda a: -a, [fl(5)]),
    "exp": (lambda a: a.exp(), [fl(3, 4)]),
    "log": (lambda a: a.log(), [fl(3, 4, low=0.5, high=3.0)]),
    "tanh": (lambda a: a.tanh(), [fl(3, 4, low=-4.0, high=4.0)]),
    "sigmoid": (lambda a: a.sigmoid(), [fl(4, 5, low=-30.0, high=30.0)]),
    "relu": (lambda a: a.relu(), [fl(3, 4)]),
    "abs": (lambda a: a.abs(), [fl(3, 4)]),
    "sqrt": (lambda a: a.sqrt(), [fl(3, 4, low=0.5, high=3.0)]),
    "matmul": (lambda a, b: a @ b, [fl(3, 4), fl(4, 5)]),
    "matmul_batched": (lambda a, b: a @ b, [fl(2, 3, 4), fl(4, 5)]),
    "matmul_vector": (lambda a, b: a @ b, [fl(4), fl(4, 3)]),
    "sum": (lambda a: a.sum(), [fl(3, 4)]),
    "sum_dim": (lambda a: a.sum(1), [fl(3, 4, 2)]),
    "sum_keepdim": (lambda a: a.sum((0, 2), keepdim=True), [fl(3, 4, 2)]),
    "mean": (lambda a: a.mean(0), [fl(3, 4)]),
    "max": (lambda a: a.max(), [fl(3, 4)]),
    "max_dim": (lambda a: a.max(1).values, [fl(3, 4)]),
    "min_dim": (lambda a: a.min(0).values, [fl(3, 4)]),
    "amax": (lambda a: a.amax((0, 1)), [fl(2, 3, 4)]),
    "argmax": (lambda a: a.argmax(1), [fl(3, 5)]),
    "reshape": (lambda a: a.reshape(4, 3) * 2, [fl(3, 4)]),
    "permute": (lambda a: a.permute(2, 0, 1) * 2, [fl(2, 3, 4)]),
    "transpose": (lambda a: a.transpose(0, 1) @ a, [fl(3, 4)]),
    "squeeze_unsqueeze": (lambda a: a.unsqueeze(0).squeeze(1) * 3, [fl(1, 4)]),
    "flatten": (lambda a: a.flatten(1) * 2, [fl(2, 3, 4)]),
    "expand": (lambda a: a.expand(3, 4) * tr.arange(12, dtype=a.dtype, device=a.device).reshape(3, 4), [fl(1, 4)]),
    "getitem_slice": (lambda a: a[1:, ::2] * 2, [fl(4, 5)]),
    "getitem_rows": (lambda a: a[[0, 2, 0, 3]] * 2, [fl(4, 5)]),
    "getitem_pairs": (lambda a: a[[0, 1, 1, 3], [2, 0, 2, 4]] * 2, [fl(4, 5)]),
    "getitem_tensor": (lambda a, i: a[i] * 2, [fl(6, 3), ints(5, high=6)]),
    "getitem_mask": (lambda a: a[a > 0] * 2, [fl(4, 5)]),
    "cat": (lambda a, b: tr.cat([a, b * 2], dim=1), [fl(3, 2), fl(3, 4)]),
    "stack": (lambda a, b: tr.stack([a, b * 2], dim=1), [fl(3, 2), fl(3, 2)]),
    "split": (lambda a: _parts(a, a.split(2, dim=1)), [fl(3, 5)]),
    "chunk": (lambda a: _parts(a, a.chunk(3, dim=1)), [fl(3, 6)]),
    "where": (lambda a, b: tr.where(a > 0, a, b * 2), [fl(3, 4), fl(3, 4)]),
    "softmax": (lambda a: a.softmax(-1), [fl(3, 5)]),
    "log_softmax": (lambda a: a.log_softmax(0), [fl(3, 5)]),
    "clone": (lambda a: a.clone() * 2, [fl(3, 4)]),
    "to_float64": (lambda a: a.to(tr.float64) * 2, [fl(3, 4)]),
    "compare": (lambda a, b: a > b, [fl(3, 4), fl(3, 4)]),
    "cross_entropy": (lambda z, t: F.cross_entropy(z, t, ignore_index=1), [fl(8, 5, low=-4, high=4), ints(8, high=5)]),
    "cross_entropy_sum": (lambda z, t: F.cross_entropy(z, t, reduction="sum"), [fl(6, 7), ints(6, high=7)]),
    "cross_entropy_none": (lambda z, t: F.cross_entropy(z, t, reduction="none"), [fl(2, 5, 3), ints(2, 3, high=5)]),
    "cross_entropy_wide": (lambda z, t: F.cross_entropy(z, t), [fl(4, 1000, low=-6, high=6), ints(4, high=1000)]),
    "nll_loss": (lambda z, t: F.nll_loss(z.log_softmax(-1), t, ignore_index=0), [fl(6, 4), ints(6, high=4)]),
    "embedding": (lambda w, i: F.embedding(i, w, padding_idx=0), [fl(7, 3), ints(4, 5, high=7)]),
    "mse_loss": (lambda a, b: F.mse_loss(a, b), [fl(3, 4), fl(3, 4)]),
    "dropout": (lambda a: F.dropout(a, 0.3, seed=0), [fl(4, 5)]),
    "linear": (lambda x, w, b: F.linear(x, w, b), [fl(2, 3, 4), fl(5, 4), fl(5)]),
}


def _draw(inp: Inp, rng: np.random.Generator, dtype: Any) -> np.ndarray:
    if inp.kind == "i":
        return rng.integers(int(inp.low), int(inp.high), size=inp.shape).astype(np.int64)
    return rng.uniform(inp.low, inp.high, size=inp.shape).astype(dtype)


def run_op(name: str, dtype: Any, device: str, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Outputs and input gradients (host arrays) of catalogue op ``name`` on ``device``."""
    fn, inps = OPS[name]
    rng = np.random.default_rng([seed, len(name)])
    host = [_draw(i, rng, dtype) for i in inps]
    ts = [tr.tensor(h, device=device, requires_grad=h.dtype.kind == "f") for h in host]
    out = fn(*ts)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    float_outs = [o for o in outs if o.requires_grad]
    if float_outs:
        wrng = np.random.default_rng(seed + 1)
        loss = None
        for o in float_outs:
            w = wrng.uniform(0.5, 1.5, size=o.shape) * wrng.choice([-1.0, 1.0], size=o.shape)
            term = (o * tr.tensor(w.astype(o.dtype), device=device)).sum()
            loss = term if loss is None else loss + term
        loss.backward()
    return [o.numpy() for o in outs], [None if t.grad is None else t.grad.numpy() for t in ts]


def rel_err(got: Any, ref: Any) -> float:
    """||got - ref|| / ||ref|| in float64; exact comparison (0 or inf) for int/bool arrays."""
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape:
        return float("inf")
    if ref.dtype.kind not in "fc":
        return 0.0 if np.array_equal(got, ref) else float("inf")
    g, r = got.astype(np.float64), ref.astype(np.float64)
    if not np.all(np.isfinite(g) == np.isfinite(r)):
        return float("inf")
    fin = np.isfinite(r)
    return float(np.linalg.norm(g[fin] - r[fin]) / max(np.linalg.norm(r[fin]), 1e-300))


def max_err(a: list, b: list) -> float:
    errs = [rel_err(x, y) for x, y in zip(a, b) if x is not None or y is not None]
    if any((x is None) != (y is None) for x, y in zip(a, b)):
        return float("inf")
    return max(errs, default=0.0)


def compare_op(name: str, dtype: Any, device: str = "cuda") -> tuple[float, float]:
    """(output error, gradient error) of op ``name`` on ``device`` against the CPU."""
    o1, g1 = run_op(name, dtype, device)
    o0, g0 = run_op(name, dtype, "cpu")
    return max_err(o1, o0), max_err([g for g in g1], [g for g in g0])


# ------------------------------------------------------------------------------------------
# recurrent layers

LAYER_KINDS = {
    "LSTM": lambda d, h, **kw: nn.LSTM(d, h, **kw),
    "GRU": lambda d, h, **kw: nn.GRU(d, h, **kw),
    "RNN_tanh": lambda d, h, **kw: nn.RNN(d, h, nonlinearity="tanh", **kw),
    "RNN_relu": lambda d, h, **kw: nn.RNN(d, h, nonlinearity="relu", **kw),
}
LAYER_CONFIGS = {
    "1 layer": dict(num_layers=1),
    "1 layer, T=1, h0": dict(num_layers=1, t=1, hx=True),
    "2 layers, bidir, batch_first, lengths, h0": dict(num_layers=2, bidirectional=True, batch_first=True,
                                                       lengths=True, hx=True),
}


def run_layer(kind: str, config: str, dtype: Any, device: str, repeats: int = 1, seed: int = 0,
              sizes: tuple[int, int, int, int] = (3, 5, 4, 6)) -> list[tuple[list, list]]:
    """Outputs and gradients (x, h0, c0, then every parameter) of a layer, ``repeats`` times."""
    cfg = dict(LAYER_CONFIGS[config])
    b, t, d, h = sizes
    t = cfg.pop("t", t)
    use_h0, use_len = cfg.pop("hx", False), cfg.pop("lengths", False)
    model = LAYER_KINDS[kind](d, h, dtype=dtype, seed=seed, **cfg).to(device)
    rng = np.random.default_rng(seed + 1)
    nd = model.num_layers * model.num_directions
    x_host = rng.uniform(-1, 1, (b, t, d) if model.batch_first else (t, b, d)).astype(dtype)
    h0_host = rng.uniform(-1, 1, (nd, b, h)).astype(dtype)
    c0_host = rng.uniform(-1, 1, (nd, b, h)).astype(dtype)
    lengths = [t, max(1, t - 2), 1][:b] if use_len else None
    results = []
    for _ in range(repeats):
        model.zero_grad()
        x = tr.tensor(x_host, device=device, requires_grad=True)
        h0 = tr.tensor(h0_host, device=device, requires_grad=True) if use_h0 else None
        c0 = tr.tensor(c0_host, device=device, requires_grad=True) if use_h0 and kind == "LSTM" else None
        hx = (h0, c0) if kind == "LSTM" and use_h0 else h0
        out, state = model(x, hx, lengths=lengths)
        outs = [out] + (list(state) if isinstance(state, tuple) else [state])
        wrng = np.random.default_rng(seed + 2)
        loss = None
        for o in outs:
            w = wrng.uniform(0.5, 1.5, size=o.shape) * wrng.choice([-1.0, 1.0], size=o.shape)
            term = (o * tr.tensor(w.astype(o.dtype), device=device)).sum()
            loss = term if loss is None else loss + term
        loss.backward()
        grads = [x.grad] + ([h0.grad] if h0 is not None else []) + ([c0.grad] if c0 is not None else [])
        grads += [p.grad for p in model.parameters()]
        results.append(([o.numpy() for o in outs], [None if g is None else g.numpy() for g in grads]))
    return results


def compare_layer(kind: str, config: str, dtype: Any, device: str = "cuda", repeats: int = 1) -> tuple[float, float]:
    """Worst (output error, gradient error) over ``repeats`` runs on ``device`` against one CPU run."""
    ref_o, ref_g = run_layer(kind, config, dtype, "cpu")[0]
    errs = [(max_err(o, ref_o), max_err(g, ref_g)) for o, g in run_layer(kind, config, dtype, device, repeats)]
    return max(e[0] for e in errs), max(e[1] for e in errs)


# ------------------------------------------------------------------------------------------
# timing


def median_ms(step: Callable[[], None], sync: Callable[[], None], warmup: int = 3, repeats: int = 15,
              budget_s: float = 3.0) -> float:
    for _ in range(warmup):
        step()
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < 5 or time.perf_counter() - start < budget_s):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def ours_step(kind: str, size: tuple[int, int, int, int], device: str) -> Callable[[], None]:
    b, t, d, h = size
    model = LAYER_KINDS[kind](d, h, seed=0).to(device)
    rng = np.random.default_rng(0)
    x = tr.tensor(rng.standard_normal((t, b, d)).astype(np.float32), device=device, requires_grad=True)
    g = tr.tensor(rng.standard_normal((t, b, h)).astype(np.float32), device=device)
    params = list(model.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        x.grad = None
        out = model(x)[0]
        out.backward(g)

    return step


def torch_step(kind: str, size: tuple[int, int, int, int], device: str) -> Callable[[], None]:
    import torch

    b, t, d, h = size
    cls = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}.get(kind)
    model = cls(d, h) if cls else torch.nn.RNN(d, h, nonlinearity=kind.split("_")[1])
    model = model.to(device)
    x = torch.randn(t, b, d, device=device, requires_grad=True)
    g = torch.randn(t, b, h, device=device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = model(x)
        out.backward(g)

    return step


# ------------------------------------------------------------------------------------------
# the report


def environment(gpu: bool) -> tuple[str, list[str]]:
    lines = [f"python {platform.python_version()}, numpy {np.__version__}, tinygrad_rnn {tr.__version__}"]
    try:
        import numba

        lines[0] += f", numba {numba.__version__}"
    except Exception:  # pragma: no cover
        pass
    card = "cpu-dry-run"
    if gpu:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        card = name.decode() if isinstance(name, bytes) else str(name)
        rt, drv = cupy.cuda.runtime.runtimeGetVersion(), cupy.cuda.runtime.driverGetVersion()
        lines.append(f"card {card} (sm_{props['major']}{props['minor']}, {props['multiProcessorCount']} SMs, "
                     f"{props['totalGlobalMem'] / 2 ** 30:.0f} GiB); CUDA runtime {rt // 1000}.{rt % 1000 // 10}, "
                     f"driver {drv // 1000}.{drv % 1000 // 10}; cupy {cupy.__version__}")
        be = tr.get_backend("cuda")
        graphs = "on" if be.use_graphs and not be.graphs.disabled_reason else f"off ({be.graphs.disabled_reason})"
        blas = "on" if be.runner.blas is not None else f"off ({be.runner.blas_error})"
        lines.append(f"our backend: CUDA graphs {graphs}; direct cuBLAS GEMM {blas}; "
                     f"CUPY_TF32={os.environ.get('CUPY_TF32', '0')}")
    try:
        import torch

        cudnn = torch.backends.cudnn.version() if torch.cuda.is_available() else None
        lines.append(f"torch {torch.__version__}, cuDNN {cudnn}, TF32 off for the baseline "
                     "(torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False)")
    except Exception as e:
        lines.append(f"torch unavailable ({type(e).__name__}): no cuDNN baseline")
    return card, lines


def fmt_err(e: float) -> str:
    return "inf" if not np.isfinite(e) else f"{e:.1e}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="no GPU needed: CPU against CPU at toy sizes")
    ap.add_argument("--quick", action="store_true", help="fewer timing repeats")
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args(argv)
    gpu = tr.cuda.is_available()
    if not gpu and not args.dry_run:
        print(f"no GPU: skipped ({tr.cuda.unavailable_reason()})")
        return 0
    dev = "cuda" if gpu else "cpu"
    t_start = time.perf_counter()
    card, env = environment(gpu)
    out: list[str] = [f"tinygrad_rnn GPU check: {card}" + ("" if gpu else " (dry run: CPU vs CPU, toy sizes)")]
    out += env
    print("\n".join(out), flush=True)

    # -- accuracy: ops
    worst = {np.float32: 0.0, np.float64: 0.0}
    rows = []
    for name in OPS:
        errs = []
        for dt in (np.float32, np.float64):
            try:
                eo, eg = compare_op(name, dt, dev)
            except Exception as e:  # report and go on: the table shows which op broke
                print(f"  op {name} {np.dtype(dt).name}: {type(e).__name__}: {e}", flush=True)
                eo = eg = float("inf")
            errs += [eo, eg]
            worst[dt] = max(worst[dt], eo, eg)
        rows.append(f"  {name:<20} " + "  ".join(f"{fmt_err(e):>8}" for e in errs))
    acc = ["", f"ops: max relative error, {dev} vs cpu  (||gpu - cpu|| / ||cpu||, outputs | input gradients)",
           f"  {'op':<20} {'f32 out':>8}  {'f32 grad':>8}  {'f64 out':>8}  {'f64 grad':>8}"] + rows
    acc.append(f"  worst: float32 {fmt_err(worst[np.float32])}, float64 {fmt_err(worst[np.float64])}")

    # -- accuracy: recurrent layers (3 repeats: the 2nd and 3rd run through captured CUDA graphs)
    acc += ["", f"recurrent layers: max relative error, {dev} vs cpu (forward outputs | all gradients; "
                "3 runs each, runs 2-3 replay CUDA graphs)",
            f"  {'layer':<9} {'config':<44} {'f32 out':>8}  {'f32 grad':>8}  {'f64 out':>8}  {'f64 grad':>8}"]
    for kind in LAYER_KINDS:
        for config in LAYER_CONFIGS:
            errs = []
            for dt in (np.float32, np.float64):
                try:
                    errs += list(compare_layer(kind, config, dt, dev, repeats=3))
                except Exception as e:
                    print(f"  layer {kind} {config} {np.dtype(dt).name}: {type(e).__name__}: {e}", flush=True)
                    errs += [float("inf")] * 2
                worst[dt] = max(worst[dt], *errs[-2:])
            acc.append(f"  {kind:<9} {config:<44} " + "  ".join(f"{fmt_err(e):>8}" for e in errs))
    acc.append(f"  worst over ops and layers: float32 {fmt_err(worst[np.float32])} (expect < 1e-4), "
               f"float64 {fmt_err(worst[np.float64])} (expect < 1e-10)")
    print("\n".join(acc), flush=True)
    out += acc

    # -- timing
    table = ["", f"card: {card}"] + (timing_table(gpu, dev, args.quick) if not args.no_timing else [])
    if gpu:
        be = tr.get_backend("cuda")
        if be.graphs is not None:
            table.append(f"  CUDA graphs: {be.graphs.stats}" + (f"; disabled: {be.graphs.disabled_reason}"
                                                               if be.graphs.disabled_reason else ""))
    table.append(f"total {time.perf_counter() - t_start:.0f} s")
    out += table
    print("\n".join(table), flush=True)
    write_report("\n".join(out) + "\n", card, results_dir=gpu)
    return 0 if worst[np.float32] < 1e-3 and worst[np.float64] < 1e-8 else 1


def timing_table(gpu: bool, dev: str, quick: bool) -> list[str]:
    sizes = [(32, 100, 256, 512), (64, 100, 1024, 1024)] if gpu else [(4, 10, 8, 16)]
    kinds = ["LSTM", "GRU", "RNN_tanh"]
    repeats = 7 if quick else 15
    have_torch = True
    try:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.manual_seed(0)
    except Exception:
        have_torch = False
    if gpu:
        import cupy

        def sync_ours() -> None:
            cupy.cuda.get_current_stream().synchronize()
        be = tr.get_backend("cuda")
    else:
        def sync_ours() -> None:
            pass
        be = None

    def sync_torch() -> None:
        if gpu:
            torch.cuda.synchronize()

    lines = [f"ms/step: one training step (forward + backward, input and weight gradients), float32, (T, B, D) input, "
             f"median of up to {repeats} after 3 warm-ups",
             "(x cuDNN: our time over cuDNN's, below 1 is faster; tokens/s = B*T per second)",
             f"  {'layer':<9} {'(B, T, D, H)':<22} {'variant':<24} {'ms/step':>9} {'x cuDNN':>8} {'tokens/s':>11}"]
    for size in sizes:
        b, t, _, _ = size
        for kind in kinds:
            base = None
            results = []
            if have_torch:
                try:
                    base = median_ms(torch_step(kind, size, dev), sync_torch, repeats=repeats)
                    results.append(("cuDNN (torch)" if gpu else "torch (cpu)", base))
                except Exception as e:
                    print(f"  torch {kind} {size}: {type(e).__name__}: {e}", flush=True)
            variants = [("ours, CUDA graphs", True), ("ours, no graphs", False)] if gpu else [("ours (cpu)", None)]
            for label, graphs in variants:
                if be is not None:
                    be.use_graphs = graphs
                try:
                    results.append((label, median_ms(ours_step(kind, size, dev), sync_ours, repeats=repeats)))
                except Exception as e:
                    print(f"  ours {kind} {size} {label}: {type(e).__name__}: {e}", flush=True)
                finally:
                    if be is not None:
                        be.use_graphs = True
                        if be.graphs is not None:
                            be.graphs.clear()
            for label, ms in results:
                ratio = f"{ms / base:.2f}" if base else "-"
                lines.append(f"  {kind:<9} {str(size):<22} {label:<24} {ms:>9.3f} {ratio:>8} {b * t / ms * 1000:>11,.0f}")
            print(f"  timed {kind} {size}: " + ", ".join(f"{label} {ms:.2f} ms" for label, ms in results),
                  file=sys.stderr, flush=True)
    return lines


def write_report(text: str, card: str, results_dir: bool = True) -> None:
    """To bench/results/gpu_check_<card>.txt (not for a dry run) and $OUT/gpu_check.txt when OUT is set."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", card).strip("_") or "unknown"
    paths = [os.path.join(ROOT, "bench", "results", f"gpu_check_{slug}.txt")] if results_dir else []
    if os.environ.get("OUT"):
        paths.append(os.path.join(os.environ["OUT"], "gpu_check.txt"))
    for p in paths:
        try:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(text)
            print(f"wrote {p}")
        except OSError as e:
            print(f"could not write {p}: {e}")


if __name__ == "__main__":
    sys.exit(main())
