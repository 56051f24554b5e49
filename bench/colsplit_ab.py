"""Issue 17 experiment: the LSTM forward split by output columns (backend/colsplit.py, one barrier per step)
against today's batch-row split (cpu.py), from the same input projection, interleaved, best and median.

    python bench/colsplit_ab.py --threads 2 --repeats 24
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import tinygrad_rnn as tr
from tinygrad_rnn.backend import blas, colsplit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=24)
    args = ap.parse_args()
    tr.set_num_threads(args.threads)
    be = tr.get_backend("cpu")
    be.STEP_PROVIDER = "mkl" if "mkl" in blas.PROVIDERS else None  # row blocks need MKL's one-thread GEMMs
    rng = np.random.default_rng(0)
    print(f"threads {args.threads}, load {os.getloadavg()[0]:.2f}")
    for b_, t_, d_, h_ in ((32, 64, 64, 256), (32, 100, 256, 512)):
        xw = rng.standard_normal((t_, b_, 4 * h_)).astype(np.float32)
        w = (rng.standard_normal((4 * h_, h_)) / np.sqrt(h_)).astype(np.float32)
        h0 = c0 = np.zeros((b_, h_), np.float32)
        mask = np.ones((t_, b_), np.float32)
        fns = {f"rows x{args.threads}": lambda a=(xw, w, h0, c0, mask): be.rnn_forward_projected("lstm", a[0], a[1], None,
                                                                                                 *a[2:], False),
               f"cols x{args.threads}": lambda a=(xw, w, h0, c0): colsplit.lstm_forward_cols(*a, args.threads)}
        res: dict[str, list[float]] = {k: [] for k in fns}
        for i in range(args.repeats):
            for k in (list(fns) if i % 2 else list(fns)[::-1]):
                t0 = time.perf_counter()
                fns[k]()
                res[k].append(time.perf_counter() - t0)
        flops = 2 * t_ * b_ * 4 * h_ * h_
        print((b_, t_, d_, h_), "  ".join(f"{k}: min {min(v) * 1e3:.2f} med {np.median(v) * 1e3:.2f} ms "
                                          f"({flops / min(v) / 1e9:.0f} GFLOP/s recurrent)" for k, v in res.items()))


if __name__ == "__main__":
    main()
