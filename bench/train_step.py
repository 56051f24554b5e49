"""Whole training step of the examples' language models, ours vs PyTorch CPU, same init and data.

One step = embedding -> LSTM -> Linear on the 3-D LSTM output -> cross-entropy -> backward ->
clip_grad_norm_ -> optimizer step, with the recurrent state carried (detached) between steps:

- char LM: Embedding(65, 64) -> LSTM(64, 256, batch_first) -> Linear(256, 65), B=32, T=64,
  mean cross-entropy, clip 5, Adam(lr=2e-3);
- PTB LM:  Embedding(10000, 200) -> 2-layer LSTM(200, 200) -> Linear(200, 10000), B=20, T=20,
  time-major, cross-entropy summed over time and averaged over the batch (Zaremba et al.), clip 5, SGD(lr=1).

Both frameworks start from the same weights (ours copied into torch) and see the same batches;
the first few steps' losses must agree to float32 tolerance or the run stops (an honest
comparison trains the same model). Repeats interleave ours and torch; medians are quoted.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/train_step.py               # 2 threads
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/train_step.py --threads 1
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/train_step.py --profile     # cProfile, ours
"""
from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinygrad_rnn as tr  # noqa: E402
import tinygrad_rnn.nn.functional as F  # noqa: E402
from tinygrad_rnn import nn, optim  # noqa: E402
from tinygrad_rnn.nn.utils import clip_grad_norm_  # noqa: E402

WORKLOADS = {
    # name: vocab, emb, hidden, layers, batch, seq, batch_first, optimizer, lr, loss
    "char LM": dict(vocab=65, emb=64, hidden=256, layers=1, batch=32, seq=64, batch_first=True, opt="adam", lr=2e-3,
                    loss="mean"),
    "PTB LM": dict(vocab=10000, emb=200, hidden=200, layers=2, batch=20, seq=20, batch_first=False, opt="sgd", lr=1.0,
                   loss="sum/batch"),
}
CLIP = 5.0


class LM(nn.Module):
    def __init__(self, w: dict):
        super().__init__()
        self.embed = nn.Embedding(w["vocab"], w["emb"], seed=0)
        self.rnn = nn.LSTM(w["emb"], w["hidden"], num_layers=w["layers"], batch_first=w["batch_first"], seed=1)
        self.head = nn.Linear(w["hidden"], w["vocab"], seed=2)

    def forward(self, x, state):
        out, state = self.rnn(self.embed(x), state)
        return self.head(out), state


def batches(w: dict, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """n (input, target) id arrays in the workload's layout, from one random token stream."""
    rng = np.random.default_rng(123)
    shape = (w["batch"], w["seq"]) if w["batch_first"] else (w["seq"], w["batch"])
    stream = rng.integers(0, w["vocab"], size=(n + 1,) + shape, dtype=np.int64)
    return [(stream[i], stream[i + 1]) for i in range(n)]


def _loss_scale(w: dict) -> tuple[str, float]:
    return ("mean", 1.0) if w["loss"] == "mean" else ("sum", 1.0 / w["batch"])


def ours_stepper(w: dict, model: LM, data):
    params = list(model.parameters())
    opt = optim.Adam(params, lr=w["lr"]) if w["opt"] == "adam" else optim.SGD(params, lr=w["lr"])
    reduction, scale = _loss_scale(w)
    box = {"state": None, "i": 0}

    def step() -> float:
        x, y = data[box["i"] % len(data)]
        box["i"] += 1
        st = box["state"]
        st = None if st is None else tuple(s.detach() for s in st)
        logits, box["state"] = model(tr.tensor(x), st)
        loss = F.cross_entropy(logits.reshape(-1, w["vocab"]), tr.tensor(y.reshape(-1)), reduction=reduction)
        if scale != 1.0:
            loss = loss * scale
        opt.zero_grad()
        loss.backward()
        clip_grad_norm_(params, CLIP)
        opt.step()
        return loss.item()

    return step


def torch_stepper(w: dict, model: LM, data):
    import torch

    class TLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(w["vocab"], w["emb"])
            self.rnn = torch.nn.LSTM(w["emb"], w["hidden"], num_layers=w["layers"], batch_first=w["batch_first"])
            self.head = torch.nn.Linear(w["hidden"], w["vocab"])

        def forward(self, x, state):
            out, state = self.rnn(self.embed(x), state)
            return self.head(out), state

    tm = TLM()
    ours = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in tm.named_parameters():
            p.copy_(torch.from_numpy(np.array(ours[name].numpy())))
    params = list(tm.parameters())
    opt = torch.optim.Adam(params, lr=w["lr"]) if w["opt"] == "adam" else torch.optim.SGD(params, lr=w["lr"])
    reduction, scale = _loss_scale(w)
    tdata = [(torch.from_numpy(x), torch.from_numpy(y.reshape(-1))) for x, y in data]
    box = {"state": None, "i": 0}

    def step() -> float:
        x, y = tdata[box["i"] % len(tdata)]
        box["i"] += 1
        st = box["state"]
        st = None if st is None else tuple(s.detach() for s in st)
        logits, box["state"] = tm(x, st)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, w["vocab"]), y, reduction=reduction)
        if scale != 1.0:
            loss = loss * scale
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        return loss.item()

    return step


def check_agreement(name: str, ours, theirs, steps: int = 3) -> None:
    """The first steps' losses agree to float32 tolerance (same model, same data, same updates)."""
    for k in range(steps):
        a, b = ours(), theirs()
        if not abs(a - b) <= 1e-4 * max(1.0, abs(b)):
            raise SystemExit(f"{name}: step {k + 1} losses differ, ours {a!r} vs torch {b!r}: not the same computation")
        print(f"  {name}: step {k + 1} loss ours {a:.6f}  torch {b:.6f}")


def timed(step, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    return out


def header(threads: int) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        cpu = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags"))
        isa = "+".join(f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags)
    except (OSError, StopIteration):
        isa = "unknown"
    try:
        from threadpoolctl import threadpool_info

        blas = "; ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
                         for i in threadpool_info() if i.get("user_api") == "blas") or "unknown"
    except ImportError:
        blas = "threadpoolctl not installed"
    from tinygrad_rnn.backend import blas as kblas

    blas += f"; our GEMMs (TINYGRAD_RNN_BLAS={os.environ.get('TINYGRAD_RNN_BLAS', 'auto')}): {kblas.PROVIDER or 'NumPy matmul'}"
    try:
        import torch

        tv = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        tv = "torch not installed"
    return (f"CPU: {cpu} [{isa}], {os.cpu_count()} logical cores; threads {threads}\n"
            f"numpy {np.__version__}, BLAS: {blas}; {tv}; python {platform.python_version()}\n"
            f"load average {os.getloadavg()[0]:.2f} at start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="BLAS and torch threads (default 2)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per round per framework (default 4)")
    ap.add_argument("--workload", choices=list(WORKLOADS), action="append", help="only these (repeatable)")
    ap.add_argument("--profile", action="store_true", help="cProfile our steps and print the top entries")
    ap.add_argument("--no-torch", action="store_true", help="ours only (no comparison, no agreement check)")
    args = ap.parse_args()
    use_torch = not args.no_torch
    if use_torch:  # before our CPU backend loads MKL (mkl extra): torch's own MKL could otherwise bind to it (README)
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            print("torch not installed: ours only")
            use_torch = False
    tr.get_backend("cpu")  # loads the kernels' BLAS, so the limits below reach it
    tr.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.threads, user_api="blas")
    except ImportError:
        print("WARNING: threadpoolctl is not installed: NumPy's BLAS threads are not limited")
    print(header(args.threads))
    rows = []
    for name in args.workload or list(WORKLOADS):
        w = WORKLOADS[name]
        data = batches(w, 8)
        model = LM(w)
        ours = ours_stepper(w, model, data)
        theirs = torch_stepper(w, model, data) if use_torch else None
        if theirs is not None:
            check_agreement(name, ours, theirs)
        else:
            ours()
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(8):
                ours()
            prof.disable()
            print(f"\n--- cProfile, ours, {name}, 8 steps (tottime) ---")
            pstats.Stats(prof).sort_stats("tottime").print_stats(18)
        t_ours, t_torch = [], []
        for _ in range(args.repeats):
            t_ours += timed(ours, args.steps)
            if theirs is not None:
                t_torch += timed(theirs, args.steps)
        mo = statistics.median(t_ours) * 1e3
        mt = statistics.median(t_torch) * 1e3 if t_torch else float("nan")
        rows.append((name, args.threads, mo, mt, mt / mo))
    print("\n| workload | threads | ours ms/step | PyTorch ms/step | torch / ours |\n|---|---|---|---|---|")
    for name, th, mo, mt, r in rows:
        if t_torch:
            print(f"| {name} | {th} | {mo:.1f} | {mt:.1f} | {r:.2f} |")
        else:  # --no-torch: no peer was measured, so there is no ratio to print
            print(f"| {name} | {th} | {mo:.1f} | — | — |")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
