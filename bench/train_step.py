"""Whole training step of the examples' language models, ours vs PyTorch CPU, same init and data.

One step = embedding -> LSTM -> Linear on the 3-D LSTM output -> cross-entropy -> backward ->
clip_grad_norm_ -> optimizer step, with the recurrent state carried (detached) between steps:

- char LM: Embedding(65, 64) -> LSTM(64, 256, batch_first) -> Linear(256, 65), B=32, T=64,
  mean cross-entropy, clip 5, Adam(lr=2e-3);
- PTB LM:  Embedding(10000, 200) -> 2-layer LSTM(200, 200) -> Linear(200, 10000), B=20, T=20,
  time-major, cross-entropy summed over time and averaged over the batch (Zaremba et al.), clip 5, SGD(lr=1).

Each framework runs in its own fresh process, as a user runs it (bench/_proc.py), alternating ours,
torch, ours, torch, ... over ``--repeats`` rounds; each child runs 3 untimed steps from the shared
init, one more warm-up step, then ``--steps`` timed steps. Both frameworks start from the same weights
(ours saved by the first child, loaded by torch's) and see the same batches; their first three losses
must agree to float32 tolerance or the run stops (an honest comparison trains the same model). The
table quotes the best and the median step, the GEMM FLOPs of the step (3x the forward GEMMs of the
LSTM layers and the output projection), the float32 GEMM peak measured in its own process with the
same thread count, the time a step would take at that peak, and the share of peak each reaches.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/train_step.py               # 2 threads
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/train_step.py --threads 1
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/train_step.py --quick       # 2 rounds x 2 steps
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/train_step.py --profile     # cProfile, ours
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/train_step.py --bf16        # + bfloat16 autocast
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _proc  # noqa: E402

WORKLOADS = {
    # name: vocab, emb, hidden, layers, batch, seq, batch_first, optimizer, lr, loss
    "char LM": dict(vocab=65, emb=64, hidden=256, layers=1, batch=32, seq=64, batch_first=True, opt="adam", lr=2e-3,
                    loss="mean"),
    "PTB LM": dict(vocab=10000, emb=200, hidden=200, layers=2, batch=20, seq=20, batch_first=False, opt="sgd", lr=1.0,
                   loss="sum/batch"),
}
CLIP = 5.0
AGREE_STEPS = 3


def step_flops(w: dict) -> int:
    """GEMM FLOPs of one training step: forward of every LSTM layer and of the output projection, x3
    for backward (input and weight gradients). Embedding, loss, clipping and optimizer are not GEMMs."""
    rows = w["batch"] * w["seq"]
    fwd = sum(2 * rows * 4 * w["hidden"] * ((w["emb"] if layer == 0 else w["hidden"]) + w["hidden"])
              for layer in range(w["layers"]))
    fwd += 2 * rows * w["hidden"] * w["vocab"]
    return 3 * fwd


def gemm_shapes(w: dict) -> list[tuple[int, int, int]]:
    """(M, K, N) of the recurrent step's GEMM and of the output projection."""
    return [(w["batch"], w["hidden"], 4 * w["hidden"]), (w["batch"] * w["seq"], w["hidden"], w["vocab"])]


def batches(w: dict, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """n (input, target) id arrays in the workload's layout, from one random token stream."""
    rng = np.random.default_rng(123)
    shape = (w["batch"], w["seq"]) if w["batch_first"] else (w["seq"], w["batch"])
    stream = rng.integers(0, w["vocab"], size=(n + 1,) + shape, dtype=np.int64)
    return [(stream[i], stream[i + 1]) for i in range(n)]


def _loss_scale(w: dict) -> tuple[str, float]:
    return ("mean", 1.0) if w["loss"] == "mean" else ("sum", 1.0 / w["batch"])


def ours_stepper(w: dict, data, save_init: str | None = None, bf16: bool = False):
    import tinygrad_rnn as tr
    import tinygrad_rnn.nn.functional as F
    from tinygrad_rnn import nn, optim
    from tinygrad_rnn.nn.utils import clip_grad_norm_

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(w["vocab"], w["emb"], seed=0)
            self.rnn = nn.LSTM(w["emb"], w["hidden"], num_layers=w["layers"], batch_first=w["batch_first"], seed=1)
            self.head = nn.Linear(w["hidden"], w["vocab"], seed=2)

        def forward(self, x, state):
            out, state = self.rnn(self.embed(x), state)
            return self.head(out), state

    model = LM()
    if save_init:
        np.savez(save_init, **{k: np.array(p.numpy()) for k, p in model.named_parameters()})
    params = list(model.parameters())
    opt = optim.Adam(params, lr=w["lr"]) if w["opt"] == "adam" else optim.SGD(params, lr=w["lr"])
    reduction, scale = _loss_scale(w)
    box = {"state": None, "i": 0}

    def step() -> float:
        x, y = data[box["i"] % len(data)]
        box["i"] += 1
        st = box["state"]
        st = None if st is None else tuple(s.detach() for s in st)
        with tr.autocast("cpu", dtype=tr.bfloat16, enabled=bf16):
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


def torch_stepper(w: dict, data, init: str, bf16: bool = False):
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
    with np.load(init) as ours, torch.no_grad():
        for name, p in tm.named_parameters():
            p.copy_(torch.from_numpy(ours[name]))
    params = list(tm.parameters())
    opt = torch.optim.Adam(params, lr=w["lr"]) if w["opt"] == "adam" else torch.optim.SGD(params, lr=w["lr"])
    reduction, scale = _loss_scale(w)
    tdata = [(torch.from_numpy(x), torch.from_numpy(y.reshape(-1))) for x, y in data]
    box = {"state": None, "i": 0}

    def step() -> float:
        x, y = tdata[box["i"] % len(tdata)]
        box["i"] += 1
        st = box["state"]
        st = None if st is None else tuple(s.detach().float() for s in st)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
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


# ---------------------------------------------------------------------------------------------
# the child: one framework, one workload; imports only that framework


def worker(spec: dict) -> dict:
    """Build one framework's model (spec['fw']), run the agreement steps, a warm-up and the timed steps."""
    import time

    threads, w = _proc.child_threads(), WORKLOADS[spec["workload"]]
    data = batches(w, 8)
    if spec["fw"] == "ours":
        import tinygrad_rnn as tr
        from tinygrad_rnn.backend import blas as kblas

        tr.get_backend("cpu")  # loads the kernels' BLAS, so the limits below reach it
        tr.set_num_threads(threads)
        _proc.limit_blas(threads)
        step = ours_stepper(w, data, spec.get("save_init"), spec.get("bf16", False))
        info = (f"tinygrad_rnn {tr.get_num_threads()} thr; our GEMMs (TINYGRAD_RNN_BLAS="
                f"{os.environ.get('TINYGRAD_RNN_BLAS', 'auto')}): {kblas.PROVIDER or 'NumPy matmul'}")
    else:
        import torch

        torch.set_num_threads(threads)
        step = torch_stepper(w, data, spec["init"], spec.get("bf16", False))
        info = f"torch {torch.__version__} {torch.get_num_threads()} thr"
    out = {"losses": [step() for _ in range(AGREE_STEPS)], "info": info + "; " + _proc.blas_info()}
    if spec.get("profile"):
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(8):
            step()
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(18)
        out["profile"] = buf.getvalue().strip()
    step()  # warm-up past the agreement steps
    times = []
    for _ in range(spec["steps"]):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    out["times"] = times
    return out


def _child(spec: dict, threads: int) -> dict:
    return _proc.run_fresh(f"import json, train_step; emit(train_step.worker(json.loads({json.dumps(spec)!r})))", threads)


def check_agreement(name: str, ours: list[float], theirs: list[float], rel: float = 1e-4) -> None:
    """The first steps' losses agree to float32 tolerance (same model, same data, same updates); ``rel``
    looser for bfloat16 products against float32."""
    for k, (a, b) in enumerate(zip(ours, theirs)):
        if not abs(a - b) <= rel * max(1.0, abs(b)):
            raise SystemExit(f"{name}: step {k + 1} losses differ, {a!r} vs {b!r}: not the same computation")
        print(f"  {name}: step {k + 1} loss {a:.6f}  vs {b:.6f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="threads per framework, set in each child before import (default 2)")
    ap.add_argument("--repeats", type=int, default=None, help="alternating rounds of fresh processes (default 5, quick 2)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per child (default 6, quick 2)")
    ap.add_argument("--quick", action="store_true", help="2 rounds x 2 steps: a smoke run")
    ap.add_argument("--workload", choices=list(WORKLOADS), action="append", help="only these (repeatable)")
    ap.add_argument("--profile", action="store_true", help="cProfile 8 of our steps (own process); print the top entries")
    ap.add_argument("--no-torch", action="store_true", help="ours only (no comparison, no agreement check)")
    ap.add_argument("--bf16", action="store_true", help="also time both under bfloat16 autocast (tr.autocast / "
                    "torch.autocast on the CPU) and print their table beside float32's")
    args = ap.parse_args()
    rounds = args.repeats or (2 if args.quick else 5)
    steps = args.steps or (2 if args.quick else 6)
    use_torch = not args.no_torch
    if use_torch and importlib.util.find_spec("torch") is None:
        print("torch not installed: ours only")
        use_torch = False
    names = args.workload or list(WORKLOADS)
    gemm = _proc.gemm_peak(args.threads, shapes=sorted({s for n in names for s in gemm_shapes(WORKLOADS[n])}),
                           repeats=3 if args.quick else 7)
    _proc.print_machine(args.threads, gemm)
    print(f"{rounds} rounds x {steps} timed steps per child, frameworks alternating, each in its own process")
    rows, rows16, infos = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            w = WORKLOADS[name]
            init = os.path.join(tmp, f"init_{name.replace(' ', '_')}.npz")
            t_ours, t_torch, t_ours16, t_torch16 = [], [], [], []
            for rnd in range(rounds):
                o = _child({"fw": "ours", "workload": name, "steps": steps, "save_init": init if rnd == 0 else None,
                            "profile": args.profile and rnd == 0}, args.threads)
                infos.setdefault("ours", o["info"])
                t_ours += o["times"]
                if "profile" in o:
                    print(f"\n--- cProfile, ours, {name}, 8 steps (tottime) ---\n{o['profile']}")
                if use_torch:
                    t = _child({"fw": "torch", "workload": name, "steps": steps, "init": init}, args.threads)
                    infos.setdefault("torch", t["info"])
                    t_torch += t["times"]
                    if rnd == 0:
                        check_agreement(name, o["losses"], t["losses"])
                if args.bf16:
                    o16 = _child({"fw": "ours", "workload": name, "steps": steps, "bf16": True}, args.threads)
                    t_ours16 += o16["times"]
                    if rnd == 0:  # bfloat16 products: the same model to bf16's precision, not float32's
                        check_agreement(name + " bf16", o16["losses"], o["losses"], rel=2e-2)
                    if use_torch:
                        t_torch16 += _child({"fw": "torch", "workload": name, "steps": steps, "init": init,
                                             "bf16": True}, args.threads)["times"]
            rows.append((name, step_flops(w), _proc.best_and_median(t_ours),
                         _proc.best_and_median(t_torch) if t_torch else None))
            if args.bf16:
                rows16.append((name, _proc.best_and_median(t_ours), _proc.best_and_median(t_ours16),
                               _proc.best_and_median(t_torch16) if t_torch16 else None))
    print("\ncontenders (each in its own process):")
    for fw, info in infos.items():
        print(f"  {fw}: {info}")
    peak = _proc.remeasure_peak(args.threads, gemm, repeats=3 if args.quick else 7)["peak"]
    print(f"\n| workload | threads | GFLOP | at peak ms ({peak:.0f} GFLOP/s) | ours ms best (median) | PyTorch ms best (median)"
          " | torch / ours best (median) | ours % of peak | PyTorch % of peak |\n|---|---|---|---|---|---|---|---|---|")
    for name, flops, (ob, om), tt in rows:
        at_peak = flops / peak / 1e9
        torch_ms, ratio, torch_pct = "—", "—", "—"  # --no-torch: no peer, no ratio
        if tt:
            torch_ms, ratio = f"{tt[0] * 1e3:.1f} ({tt[1] * 1e3:.1f})", f"{tt[0] / ob:.2f} ({tt[1] / om:.2f})"
            torch_pct = f"{100 * at_peak / tt[0]:.0f}%"
        print(f"| {name} | {args.threads} | {flops / 1e9:.2f} | {at_peak * 1e3:.1f} | {ob * 1e3:.1f} ({om * 1e3:.1f}) | "
              f"{torch_ms} | {ratio} | {100 * at_peak / ob:.0f}% | {torch_pct} |")
    if rows16:
        print("\nbfloat16 autocast (bf16 products, float32 accumulation and master weights), same run:\n"
              "| workload | threads | ours bf16 ms best (median) | ours float32 / ours bf16 best (median) | "
              "PyTorch bf16 ms best (median) | torch bf16 / ours bf16 best (median) |\n|---|---|---|---|---|---|")
        for name, (fb, fm), (bb, bm), tt in rows16:
            torch_ms, ratio = "—", "—"
            if tt:
                torch_ms, ratio = f"{tt[0] * 1e3:.1f} ({tt[1] * 1e3:.1f})", f"{tt[0] / bb:.2f} ({tt[1] / bm:.2f})"
            print(f"| {name} | {args.threads} | {bb * 1e3:.1f} ({bm * 1e3:.1f}) | {fb / bb:.2f} ({fm / bm:.2f}) | "
                  f"{torch_ms} | {ratio} |")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
