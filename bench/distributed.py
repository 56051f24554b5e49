"""Data-parallel scaling on this machine, and what the alpha-beta model predicts for a cluster.

    python bench/distributed.py                 # ~2 min: launches mpiexec -n 1 / -n 2 itself

1. MPI all-reduce time vs message size (float32, 2 ranks, the Iallreduce + Wait that DDP issues),
   and a fit t(n) = a + b * n; for a ring all-reduce over p ranks t = 2(p-1) alpha + 2(p-1)/p n beta,
   so with p = 2: alpha = a / 2, beta = b.
2. The char-LM training step (Embedding(65,64) -> LSTM(64,256) -> Linear(256,65), batch 32 per
   rank, 64 steps of BPTT, Adam, float32) on 1 rank (the plain model) and on 2 ranks (DDP), one
   BLAS/Numba thread per rank: tokens/s over all ranks and the share of the step spent waiting
   for the gradient all-reduce (``DistributedDataParallel.comm_wait_seconds``).
3. A plot (bench/results/distributed_scaling.png) of the predicted step time and efficiency for
   1..256 ranks at 10 and 100 Gb/s: step(p) = compute(1 rank) + ring all-reduce of the gradients
   (one bucket, as with the default bucket_cap_mb; nothing overlapped: a bound from above).

Writes bench/results/distributed_cpu.txt (the tables) and the PNG. Timings on a shared machine are
noisy: medians are quoted, and the machine's load average is printed with them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# assumed per-message latency of a real network (the fitted one is shared memory): TCP over
# 10 Gb/s Ethernet, RDMA over 100 Gb/s InfiniBand/RoCE
NETWORKS = {"10 Gb/s Ethernet": (10e9, 25e-6), "100 Gb/s RDMA": (100e9, 3e-6)}


# -- workers (run under mpiexec) ---------------------------------------------------------------------


def worker_allreduce(out: str) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rows = []
    for n_bytes in [8 * 4**k for k in range(12)]:  # 8 B .. 32 MiB
        buf = np.ones(n_bytes // 4, dtype=np.float32)
        reps = max(5, min(200, int(2e7 // max(n_bytes, 1))))
        times = []
        for _ in range(reps + 2):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM).Wait()
            times.append(time.perf_counter() - t0)
        mx = np.empty(1)
        comm.Allreduce(np.array([np.median(times[2:])]), mx, op=MPI.MAX)  # the slower rank's median
        rows.append((n_bytes, float(mx[0])))
    if comm.Get_rank() == 0:
        Path(out).write_text(json.dumps(rows))


def worker_step(out: str, steps: int, warmup: int) -> None:
    import tinygrad_rnn.distributed as dist
    from tinygrad_rnn import nn, optim
    from tinygrad_rnn.data import Vocab, bptt_batches, distributed_batchify, load_tinyshakespeare
    from tinygrad_rnn.nn import functional as F
    from tinygrad_rnn.nn.parallel import DistributedDataParallel

    dist.init_process_group()
    world = dist.get_world_size()

    class CharLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(65, 64, seed=0)
            self.rnn = nn.LSTM(64, 256, batch_first=True, seed=1)
            self.head = nn.Linear(256, 65, seed=2)

        def forward(self, ids, state=None):
            out, state = self.rnn(self.embed(ids), state)
            return self.head(out), state

    text = load_tinyshakespeare()
    vocab = Vocab.chars(text)
    data = distributed_batchify(vocab.encode(text), 32)
    windows = bptt_batches(data, 64, drop_last=True)
    model = CharLM()
    fwd = DistributedDataParallel(model) if world > 1 else model
    opt = optim.Adam(model.parameters(), lr=2e-3)
    state, times, waits = None, [], []
    for i in range(warmup + steps):
        x, y = next(windows)
        w0 = fwd.comm_wait_seconds if world > 1 else 0.0
        t0 = time.perf_counter()
        logits, state = fwd(x, state)
        state = tuple(s.detach() for s in state)
        F.cross_entropy(logits.reshape(-1, 65), y.reshape(-1)).backward()
        opt.step()
        opt.zero_grad()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            waits.append((fwd.comm_wait_seconds if world > 1 else 0.0) - w0)
    n_params = sum(p.numel() for p in model.parameters())
    per_rank = np.array([np.median(times), float(np.sum(waits) / np.sum(times))])
    worst = np.empty(2)
    from mpi4py import MPI

    dist.core._comm().Allreduce(per_rank, worst, op=MPI.MAX)
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps({"world": world, "step_s": worst[0], "comm_share": worst[1],
                                         "tokens_per_s": world * 32 * 64 / worst[0], "params": n_params,
                                         "grad_bytes": 4 * n_params}))
    dist.destroy_process_group()


# -- the driver ----------------------------------------------------------------------------------------


def mpirun(n: int, *args: str, timeout: float = 150) -> None:
    exe = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(exe) if exe.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit("mpiexec not found: pip install -e '.[distributed]'")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMI_")}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    subprocess.run([mpiexec, "-n", str(n), sys.executable, __file__, *args], check=True, env=env, timeout=timeout)


def fit_alpha_beta(rows: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares of t = a + b n, each point weighted by 1/t (relative error: small sizes count too)."""
    n = np.array([r[0] for r in rows], dtype=float)
    t = np.array([r[1] for r in rows])
    A = np.stack([np.ones_like(n), n], axis=1) / t[:, None]
    a, b = np.linalg.lstsq(A, np.ones_like(t), rcond=None)[0]
    return float(a), float(b)


def ring_allreduce(p: np.ndarray, n_bytes: float, alpha: float, beta: float) -> np.ndarray:
    return np.where(p > 1, 2 * (p - 1) * alpha + 2 * (p - 1) / p * n_bytes * beta, 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", choices=["allreduce", "step"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=25, help="timed training steps per run")
    ap.add_argument("--warmup", type=int, default=4, help="untimed first steps (JIT, allocator)")
    args = ap.parse_args()
    if args.worker == "allreduce":
        return worker_allreduce(args.out)
    if args.worker == "step":
        return worker_step(args.out, args.steps, args.warmup)

    t_start = time.perf_counter()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        mpirun(2, "--worker", "allreduce", "--out", f"{tmp}/ar.json")
        rows = json.loads(Path(f"{tmp}/ar.json").read_text())
        steps = {}
        for n in (1, 2):
            mpirun(n, "--worker", "step", "--out", f"{tmp}/s{n}.json", "--steps", str(args.steps),
                   "--warmup", str(args.warmup))
            steps[n] = json.loads(Path(f"{tmp}/s{n}.json").read_text())
    a, b = fit_alpha_beta(rows)
    alpha, beta = a / 2, b
    load = os.getloadavg()
    lines = [f"# bench/distributed.py  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
             f"{os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
             "", "## MPI all-reduce, 2 ranks, float32, Iallreduce+Wait (median, slower rank)", "",
             "| bytes | time (us) | fit (us) | GB/s |", "|---:|---:|---:|---:|"]
    for n, t in rows:
        lines.append(f"| {n} | {t * 1e6:.1f} | {(a + b * n) * 1e6:.1f} | {n / t / 1e9:.2f} |")
    lines += ["", f"fit t = a + b n: a = {a * 1e6:.2f} us, b = {b * 1e9:.3f} ns/byte; ring model with p = 2: "
              f"alpha = {alpha * 1e6:.2f} us per message, beta = {beta * 1e9:.3f} ns/byte ({1 / beta / 1e9:.2f} GB/s)",
              "", "## char-LM training step (LSTM 256, B = 32 per rank, T = 64, Adam, float32, 1 thread per rank)", "",
              "| ranks | step (ms, median) | tokens/s | speed-up | comm wait share |", "|---:|---:|---:|---:|---:|"]
    for n in (1, 2):
        s = steps[n]
        lines.append(f"| {n} | {s['step_s'] * 1e3:.1f} | {s['tokens_per_s']:.0f} | "
                     f"{s['tokens_per_s'] / steps[1]['tokens_per_s']:.2f}x | {100 * s['comm_share']:.1f} % |")
    grad_bytes = steps[1]["grad_bytes"]
    compute = steps[1]["step_s"]
    p = np.unique(np.round(np.logspace(0, np.log2(256), 40, base=2)).astype(int)).astype(float)
    lines += ["", f"## predicted for 1..256 ranks: compute {compute * 1e3:.1f} ms/step (1 rank measured) + ring "
              f"all-reduce of {grad_bytes / 1e6:.2f} MB of gradients, no overlap", "",
              "| network | alpha (us) | ranks | step (ms) | efficiency |", "|---|---:|---:|---:|---:|"]
    curves = {}
    for name, (bits, lat) in NETWORKS.items():
        a_net, b_net = max(alpha, lat), 8 / bits
        step = compute + ring_allreduce(p, grad_bytes, a_net, b_net)
        curves[name] = step
        for q in (2, 8, 64, 256):
            sq = compute + float(ring_allreduce(np.array([q]), grad_bytes, a_net, b_net)[0])
            lines.append(f"| {name} | {a_net * 1e6:.0f} | {q} | {sq * 1e3:.1f} | {compute / sq:.2f} |")
    shm = compute + ring_allreduce(p, grad_bytes, alpha, beta)
    curves["this machine's shared memory (fitted)"] = shm
    lines += ["", f"total bench time {time.perf_counter() - t_start:.0f} s"]
    text = "\n".join(lines)
    print(text)
    (RESULTS / "distributed_cpu.txt").write_text(text + "\n")
    plot(p, curves, compute, RESULTS / "distributed_scaling.png")


def plot(p: np.ndarray, curves: dict[str, np.ndarray], compute: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, step in curves.items():
        ax1.plot(p, step * 1e3, label=name)
        ax2.plot(p, compute / step, label=name)
    ax1.set(xscale="log", xlabel="ranks", ylabel="predicted step time (ms)", title="char-LM step, B = 32 per rank")
    ax2.set(xscale="log", xlabel="ranks", ylabel="efficiency (1-rank step / step)", ylim=(0, 1.05),
            title="weak-scaling efficiency (ring all-reduce)")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
