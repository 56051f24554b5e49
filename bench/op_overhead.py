"""The op-by-op engine's per-op cost (issue 19 item 7) and the ``LSTMCell`` loop (issue 20), against PyTorch eager.

    python bench/op_overhead.py                        # per-op µs at (4, 8) and (32, 256), LSTMCell loop; ours vs torch
    python bench/op_overhead.py --ref HEAD~3           # also the code of a git revision, interleaved with this tree's
    python bench/op_overhead.py --profile              # cProfile: Python function calls per op (noise-free)
    python bench/op_overhead.py --only ops --rounds 5  # just the elementwise chains

Chain: N elementwise ops (mul, add, tanh, sub, sigmoid, ... cycling) on tensors that require grad, then
``sum().backward()``; the per-op cost is (forward + backward time) / N. LSTMCell loop: B=32, D=64, H=256,
T=64, loss = sum_t mean(h_t^2), forward + backward (``cell_ms``), and the forward alone under no_grad
(``cell_fwd_ms``). Every contender runs in its own fresh process
(``_proc.run_fresh``, 1 thread by default); ``--rounds`` repeats the whole set of processes, alternating the
contenders, and the table reports each one's median over rounds of its in-process medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _proc import REPO_DIR, run_fresh  # noqa: E402

SHAPES = ((4, 8), (32, 256))
N_OPS = 50
CELL = dict(B=32, D=64, H=256, T=64)


# ---------------------------------------------------------------------------------------------
# the child side


def _import(fw: str, src: str | None):
    if fw == "torch":
        import torch

        torch.set_num_threads(int(os.environ.get("TINYGRAD_BENCH_THREADS", "1")))
        return torch
    if src:
        sys.path.insert(0, src)
    import tinygrad_rnn as tr

    tr.set_num_threads(int(os.environ.get("TINYGRAD_BENCH_THREADS", "1")))
    return tr


def _chain(lib, shape, n_ops: int, dtype_name: str = "float32"):
    """A closure running the chain forward and backward once."""
    import numpy as np

    rng = np.random.default_rng(0)
    dt = getattr(lib, dtype_name)
    x = lib.tensor(rng.uniform(-1, 1, shape).astype(dtype_name), dtype=dt, requires_grad=True)
    w = lib.tensor(rng.uniform(0.5, 1, shape).astype(dtype_name), dtype=dt, requires_grad=True)
    ops = (lambda y: y * w, lambda y: y + w, lambda y: y.tanh(), lambda y: y - w, lambda y: y.sigmoid())

    def run():
        y = x
        for i in range(n_ops):
            y = ops[i % len(ops)](y)
        x.grad = w.grad = None
        y.sum().backward()

    return run


def _cell_loop(lib, fw: str, fused: bool, train: bool = True):
    import numpy as np

    b, d, h, t = CELL["B"], CELL["D"], CELL["H"], CELL["T"]
    rng = np.random.default_rng(0)
    cell = lib.nn.LSTMCell(d, h)
    if fw != "torch" and hasattr(cell, "fused"):
        cell.fused = fused
    xs = lib.tensor(rng.standard_normal((t, b, d)).astype("float32"))
    h0 = lib.zeros(b, h)

    def run():
        hx, cx = h0, h0
        loss = None
        for s in range(t):
            hx, cx = cell(xs[s], (hx, cx))
            term = (hx * hx).mean()
            loss = term if loss is None else loss + term
        for p in cell.parameters():
            p.grad = None
        loss.backward()

    def run_forward():
        with lib.no_grad():
            hx, cx = h0, h0
            for s in range(t):
                hx, cx = cell(xs[s], (hx, cx))

    return run if train else run_forward


def _median_us(fn, repeats: int, per: int) -> float:
    import time

    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6 / per


def worker(spec: dict) -> dict:
    lib = _import(spec["fw"], spec.get("src"))
    out = {}
    if spec["what"] == "ops":
        for shape in SHAPES:
            out["x".join(map(str, shape))] = _median_us(_chain(lib, shape, N_OPS), spec["repeats"], N_OPS)
    else:
        out["cell_ms"] = _median_us(_cell_loop(lib, spec["fw"], spec.get("fused", True)), spec["repeats"], 1000)
        out["cell_fwd_ms"] = _median_us(_cell_loop(lib, spec["fw"], spec.get("fused", True), train=False),
                                        spec["repeats"], 1000)
    return out


def profile_worker(spec: dict) -> dict:
    """Python-level calls per op of our chain (forward + backward), from cProfile: independent of load."""
    import cProfile
    import pstats

    lib = _import("ours", spec.get("src"))
    out = {}
    for shape in SHAPES:
        run = _chain(lib, shape, N_OPS)
        run()
        prof = cProfile.Profile()
        prof.enable()
        run()
        prof.disable()
        st = pstats.Stats(prof)
        out["x".join(map(str, shape))] = {"calls_per_op": st.total_calls / N_OPS, "primitive_per_op": st.prim_calls / N_OPS}
        if spec.get("top"):
            st.sort_stats("tottime").print_stats(spec["top"])
    return out


# ---------------------------------------------------------------------------------------------
# the parent side


def _export(rev: str) -> str:
    """The package as it was at ``rev``, in a temporary folder (``git archive``)."""
    dst = tempfile.mkdtemp(prefix="op_overhead_ref_")
    archive = subprocess.run(["git", "-C", REPO_DIR, "archive", rev, "tinygrad_rnn"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", dst], input=archive, check=True)
    return dst


def _run(spec: dict, threads: int) -> dict:
    return run_fresh(f"import json, op_overhead; emit(op_overhead.worker(json.loads({json.dumps(spec)!r})))", threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", help="git revision to compare against (its tinygrad_rnn, exported to a temp folder)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=200, help="chain runs per process (the cell loop runs a tenth)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=("ops", "cell"), default=None)
    ap.add_argument("--profile", action="store_true", help="cProfile call counts per op instead of timings")
    ap.add_argument("--top", type=int, default=0, help="with --profile: also print the top functions by own time")
    args = ap.parse_args()
    src = _export(args.ref) if args.ref else None
    sides = [("new", None)] + ([("ref", src)] if src else [])
    if args.profile:
        for name, s in sides:
            arg = json.dumps({"src": s, "top": args.top})
            code = f"import json, op_overhead; emit(op_overhead.profile_worker(json.loads({arg!r})))"
            res = run_fresh(code, args.threads)
            for shape, r in res.items():
                print(f"{name:4s} {shape:7s} Python calls per op (fwd+bwd): {r['calls_per_op']:.1f}")
        return
    contenders = []
    if args.only in (None, "ops"):
        contenders += [("ops", f"ours-{n}", {"fw": "ours", "src": s}) for n, s in sides] + [("ops", "torch", {"fw": "torch"})]
    if args.only in (None, "cell"):
        contenders += [("cell", f"ours-{n}-fused", {"fw": "ours", "src": s, "fused": True}) for n, s in sides if n == "new"]
        contenders += [("cell", f"ours-{n}-composite", {"fw": "ours", "src": s, "fused": False}) for n, s in sides]
        contenders += [("cell", "torch", {"fw": "torch"})]
    results: dict = {}
    print(f"threads {args.threads}, rounds {args.rounds}, load average {os.getloadavg()[0]:.2f}", flush=True)
    for r in range(args.rounds):
        order = contenders if r % 2 == 0 else contenders[::-1]
        for what, name, spec in order:
            reps = args.repeats if what == "ops" else max(5, args.repeats // 10)
            res = _run(dict(spec, what=what, repeats=reps), args.threads)
            for k, v in res.items():
                results.setdefault((what, name, k), []).append(v)
    torch_ref = {k: statistics.median(v) for (w, n, k), v in results.items() if n == "torch"}
    for (what, name, k), v in sorted(results.items()):
        med = statistics.median(v)
        unit = "ms per loop" if what == "cell" else "µs per op"
        ratio = f"  torch/ours = {torch_ref[k] / med:.2f}x" if name != "torch" and k in torch_ref else ""
        print(f"{what:4s} {k:8s} {name:22s} {med:9.2f} {unit}  (rounds: {', '.join(f'{x:.2f}' for x in v)}){ratio}")


if __name__ == "__main__":
    main()
