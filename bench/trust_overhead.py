"""Cost of the safety features of issue 9 on the char LM training step (LSTM 256, emb 64,
batch 32 x seq 64, Adam, clipping): the step of examples/char_lm.py on synthetic ids.

    python bench/trust_overhead.py                    # in-process A/B: version recording, anomaly mode
    python bench/trust_overhead.py --steps-only 40    # print per-step times (used for cross-commit runs)

A/B runs are interleaved in one process (A, B, A, B, ...) and reported as medians and the median
of the per-round ratios, so machine load hits both sides alike.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import tinygrad_rnn as tr
from tinygrad_rnn import nn, optim
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.nn.utils import clip_grad_norm_

V, EMB, HID, B, T = 65, 64, 256, 32, 64


class CharLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, EMB, seed=0)
        self.rnn = nn.LSTM(EMB, HID, batch_first=True, seed=1)
        self.head = nn.Linear(HID, V, seed=2)

    def forward(self, ids, state=None):
        out, state = self.rnn(self.embed(ids), state)
        return self.head(out), state


def make():
    model = CharLM()
    params = list(model.parameters())
    opt = optim.Adam(params, lr=2e-3)
    rng = np.random.default_rng(0)
    data = rng.integers(0, V, size=(B, 20 * T + 1))
    state = {"s": None, "k": 0}

    def step():
        k = state["k"] % 20
        state["k"] += 1
        x, y = data[:, k * T:(k + 1) * T], data[:, k * T + 1:(k + 1) * T + 1]
        logits, s = model(x, state["s"])
        state["s"] = tuple(t.detach() for t in s)
        loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        clip_grad_norm_(params, 1.0)
        opt.step()

    return step


def _all_functions():
    out, todo = [], [tr.Function]
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(c.__subclasses__())
    return out


def version_recording(on: bool, saved={}):  # noqa: B006 - the saved flags live across calls on purpose
    """Switch off (and back on) what version counting records: saved input versions, saved output
    counters and view counter sharing. The check in backward then finds nothing to check."""
    for c in _all_functions():
        if not on:
            saved[c] = (c.__dict__.get("saves_inputs"), c.__dict__.get("saves_outputs"), c.__dict__.get("is_view"))
            c.saves_inputs = c.saves_outputs = c.is_view = False
        elif c in saved:
            for name, v in zip(("saves_inputs", "saves_outputs", "is_view"), saved[c]):
                if v is None:
                    if name in c.__dict__:
                        delattr(c, name)
                else:
                    setattr(c, name, v)


def timed(step, n):
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def ab(name, step, set_a, set_b, rounds, n):
    a, b = [], []
    for _ in range(rounds):
        set_a()
        a.append(timed(step, n))
        set_b()
        b.append(timed(step, n))
    set_a()
    ratio = statistics.median([y / x for x, y in zip(a, b)])
    print(f"{name}: A median {statistics.median(a) * 1e3:.2f} ms/step, B median {statistics.median(b) * 1e3:.2f} ms/step, "
          f"median B/A {ratio:.4f}  ({rounds} rounds x {n} steps)")


def tiny_chain(n_ops=200):
    """Per-op overhead: a chain of multiplies on 1-element tensors, forward and backward."""
    x = tr.tensor(np.array([1.0]), requires_grad=True)
    y = tr.tensor(np.array([1.0000001]), requires_grad=True)

    def step():
        z = x
        for _ in range(n_ops):
            z = z * y
        z.sum().backward()

    return step


def count_nodes(step):
    """How many nodes one step records (what version counting pays for)."""
    n = [0]
    orig = tr.Function.apply.__func__

    def counting(cls, *a, **k):
        n[0] += 1
        return orig(cls, *a, **k)

    tr.Function.apply = classmethod(counting)
    try:
        step()
    finally:
        tr.Function.apply = classmethod(orig)
    return n[0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--steps-only", type=int, default=0)
    args = p.parse_args()
    step = make()
    for _ in range(5):
        step()
    if args.steps_only:
        print(" ".join(f"{timed(step, 1) * 1e3:.3f}" for _ in range(args.steps_only)))
        return
    print(f"char LM step: {count_nodes(step)} op calls through Function.apply")
    tiny = tiny_chain()
    for _ in range(20):
        tiny()
    ab("tiny chain, 200 Mul + backward: version counting (A = on, B = off)", tiny,
       lambda: version_recording(True), lambda: version_recording(False), args.rounds * 4, 20)
    ab("tiny chain, 200 Mul + backward: anomaly mode (A = off, B = on)", tiny,
       lambda: tr.autograd.set_detect_anomaly(False), lambda: tr.autograd.set_detect_anomaly(True), args.rounds, 5)
    ab("version counting (A = on, B = recording switched off)", step,
       lambda: version_recording(True), lambda: version_recording(False), args.rounds, args.steps)
    ab("anomaly mode (A = off, B = on, check_nan)", step,
       lambda: tr.autograd.set_detect_anomaly(False), lambda: tr.autograd.set_detect_anomaly(True), args.rounds, args.steps)


if __name__ == "__main__":
    main()
