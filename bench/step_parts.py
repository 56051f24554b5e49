"""Where the examples' training step spends its time: each part timed on its own, against its bytes at
memory bandwidth and its FLOPs at the GEMM peak (ours only, one process, one thread count).

Parts: embedding forward/backward, LSTM forward/backward, output projection forward/backward,
cross-entropy forward/backward, zero_grad, clip_grad_norm_ and the optimizer step -- each on leaf
inputs of the real step's shapes, so a part's backward is timed alone; the parts are interleaved
round by round and each is quoted as its median (min) over the rounds. Bandwidth is NumPy's copy of
a 64 MiB array (read + write), peak NumPy's float32 1024^3 matmul, both measured here.

    python bench/step_parts.py --threads 2            # char LM and PTB LM
    python bench/step_parts.py --threads 1 --rounds 30
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
from train_step import WORKLOADS, _loss_scale, batches  # noqa: E402


def _bandwidth() -> float:
    a = np.ones(1 << 24, np.float32)
    b = np.empty_like(a)
    best = min(_t(lambda: np.copyto(b, a)) for _ in range(7))
    return 2 * a.nbytes / best


def _peak() -> float:
    a = np.ones((1024, 1024), np.float32)
    a @ a
    return 2 * 1024 ** 3 / min(_t(lambda: a @ a) for _ in range(7))


def _t(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def parts(w: dict):
    """(name, fn, bytes, flops) of each part of one step of workload ``w``."""
    import tinygrad_rnn as tr
    import tinygrad_rnn.nn.functional as F
    from tinygrad_rnn import nn, optim
    from tinygrad_rnn.nn.utils import clip_grad_norm_

    embed = nn.Embedding(w["vocab"], w["emb"], seed=0)
    rnn = nn.LSTM(w["emb"], w["hidden"], num_layers=w["layers"], batch_first=w["batch_first"], seed=1)
    head = nn.Linear(w["hidden"], w["vocab"], seed=2)
    params = list(embed.parameters()) + list(rnn.parameters()) + list(head.parameters())
    opt = optim.Adam(params, lr=w["lr"]) if w["opt"] == "adam" else optim.SGD(params, lr=w["lr"])
    reduction, _ = _loss_scale(w)
    x, y = batches(w, 1)[0]
    xt, yt = tr.tensor(x), tr.tensor(y.reshape(-1))
    rows, e_, h_, v_ = x.size, w["emb"], w["hidden"], w["vocab"]
    rng = np.random.default_rng(0)
    e_leaf = tr.tensor(rng.standard_normal(x.shape + (e_,)).astype(np.float32), requires_grad=True)
    h_leaf = tr.tensor(rng.standard_normal(x.shape + (h_,)).astype(np.float32) * 0.5, requires_grad=True)
    l_leaf = tr.tensor(rng.standard_normal((rows, v_)).astype(np.float32), requires_grad=True)
    g_e = tr.tensor(rng.standard_normal(x.shape + (e_,)).astype(np.float32))
    g_h = tr.tensor(rng.standard_normal(x.shape + (h_,)).astype(np.float32))
    g_l = tr.tensor(rng.standard_normal(x.shape + (v_,)).astype(np.float32))
    n_params = sum(p.numpy().size for p in params)
    for p in params:  # every parameter has a gradient, as after a real backward
        p.grad = tr.tensor(rng.standard_normal(p.shape).astype(np.float32) * 1e-3)
    lstm_flops = sum(2 * rows * 4 * h_ * ((e_ if i == 0 else h_) + h_) for i in range(w["layers"]))
    opt_bytes = 4 * n_params * (5 if w["opt"] == "adam" else 3)  # adam: p, g, m, v read, p, m, v written

    def fresh(*ts) -> None:  # as after zero_grad(): a first gradient is taken, not added to an old one
        for t in ts:
            t.grad = None

    def lstm_bwd():
        fresh(e_leaf, *rnn.parameters())
        out, _ = rnn(e_leaf)
        t0 = time.perf_counter()
        out.backward(g_h)
        return time.perf_counter() - t0

    def head_bwd():
        fresh(h_leaf, *head.parameters())
        out = head(h_leaf)
        t0 = time.perf_counter()
        out.backward(g_l)
        return time.perf_counter() - t0

    def xent_bwd():
        fresh(l_leaf)
        loss = F.cross_entropy(l_leaf, yt, reduction=reduction)
        t0 = time.perf_counter()
        loss.backward()
        return time.perf_counter() - t0

    def emb_bwd_only():
        fresh(embed.weight)
        out = embed(xt)
        t0 = time.perf_counter()
        out.backward(g_e)
        return time.perf_counter() - t0

    box = [1e9]
    start = [tr.tensor(np.array(p.numpy(), copy=True)) for p in params]

    def opt_step():  # timed alone; then the weights go back, so rounds of updates never drift them (PTB's
        t0 = time.perf_counter()  # SGD at lr 1 saturated the LSTM within rounds: subnormals made it 8x slower)
        opt.step()
        dt = time.perf_counter() - t0
        with tr.no_grad():
            for p, s0 in zip(params, start):
                p.copy_(s0)
        return dt

    def clip():  # max_norm just under the norm: both the norm pass and the scaling run, the grads barely shrink
        box[0] = float(clip_grad_norm_(params, box[0] * 0.999).item())

    return n_params, [
        ("embedding fwd", lambda: embed(xt), 2 * rows * e_ * 4, 0),
        ("embedding bwd", emb_bwd_only, (2 * rows * e_ + v_ * e_) * 4, 0),
        ("LSTM fwd", lambda: rnn(e_leaf), 0, lstm_flops),
        ("LSTM bwd", lstm_bwd, 0, 2 * lstm_flops),
        ("projection fwd", lambda: head(h_leaf), 0, 2 * rows * h_ * v_),
        ("projection bwd", head_bwd, 0, 4 * rows * h_ * v_),
        ("xent fwd", lambda: F.cross_entropy(l_leaf, yt, reduction=reduction), rows * v_ * 4, 0),
        ("xent bwd", xent_bwd, 2 * rows * v_ * 4, 0),
        ("clip", clip, 3 * 4 * n_params, 0),  # norm: read; scale: read + write
        ("optimizer", opt_step, opt_bytes, 0),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--only", default="", help="char or ptb")
    ap.add_argument("--bf16", action="store_true", help="every part under tr.autocast('cpu', dtype=tr.bfloat16)")
    args = ap.parse_args()
    import tinygrad_rnn as tr
    from tinygrad_rnn.backend import blas
    tr.set_num_threads(args.threads)
    bw, peak = _bandwidth(), _peak()
    print(f"{'bfloat16 autocast; ' if args.bf16 else ''}"
          f"threads {args.threads}; copy bandwidth {bw / 1e9:.1f} GB/s; float32 peak {peak / 1e9:.1f} GFLOP/s; "
          f"BLAS {blas.PROVIDER} step={blas.provider_for('step')} skinny={blas.provider_for('skinny')} "
          f"large={blas.provider_for('large')}; load {os.getloadavg()[0]:.2f}")
    for name, w in WORKLOADS.items():
        if args.only and not name.lower().startswith(args.only):
            continue
        n_params, ps = parts(w)
        if args.bf16:
            def under_autocast(fn):
                def run():
                    with tr.autocast("cpu", dtype=tr.bfloat16):
                        return fn()
                return run
            ps = [(pname, under_autocast(fn), nb, fl) for pname, fn, nb, fl in ps]
        for _, fn, _, _ in ps:  # warm-up, compile
            fn()
            fn()
        times: dict[str, list[float]] = {p[0]: [] for p in ps}
        for _ in range(args.rounds):
            for pname, fn, _, _ in ps:
                t0 = time.perf_counter()
                r = fn()
                dt = time.perf_counter() - t0
                times[pname].append(r if isinstance(r, float) else dt)
        total = sum(float(np.median(v)) for v in times.values())
        print(f"\n{name}: {n_params / 1e6:.2f} M parameters; sum of medians {total * 1e3:.2f} ms")
        print(f"{'part':16s} {'median ms':>9s} {'min ms':>7s} {'share':>6s} {'at bw/peak ms':>13s} {'x bound':>7s}")
        for pname, _, nbytes, flops in ps:
            med, mn = float(np.median(times[pname])), float(np.min(times[pname]))
            bound = nbytes / bw + flops / peak
            print(f"{pname:16s} {med * 1e3:9.3f} {mn * 1e3:7.3f} {med / total:6.1%} {bound * 1e3:13.3f} "
                  f"{med / bound if bound else float('nan'):7.1f}")


if __name__ == "__main__":
    main()
