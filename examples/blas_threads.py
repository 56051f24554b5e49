"""blas_threads: the char LM's training step with 1 vs 2 BLAS threads, interleaved in one process.

The measurement behind the examples' ``--threads 1`` default. Blocks of ``--block`` steps
alternate between the thread counts so both see the same machine load; medians are printed.
Run it once on idle cores and once while something else runs:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python examples/blas_threads.py
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from _common import positive_int
from char_lm import CharLM, detach_state
from threadpoolctl import threadpool_limits

import tinygrad_rnn as tr
from tinygrad_rnn import optim
from tinygrad_rnn.data import Vocab, batchify, bptt_batches, load_tinyshakespeare
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.nn.utils import clip_grad_norm_


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="blas_threads.py", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=positive_int, default=6, help="blocks per thread count")
    p.add_argument("--block", type=positive_int, default=8, help="training steps per block")
    args = p.parse_args(argv)
    text = load_tinyshakespeare()
    vocab = Vocab.chars(text)
    model = CharLM(len(vocab), "lstm", 256, 1, 64)  # char_lm.py's default model, batch and window
    params = list(model.parameters())
    opt = optim.Adam(params, lr=3e-3)
    batches = bptt_batches(batchify(vocab.encode(text), 32), 64)
    state = None

    def step() -> None:
        nonlocal state
        x, y = next(batches)
        logits, state = model(x, state)
        state = detach_state(state)
        loss = F.cross_entropy(logits.reshape(-1, len(vocab)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        clip_grad_norm_(params, 5.0)
        opt.step()
        loss.item()

    for _ in range(3):  # warm-up: kernels compiled, buffers allocated
        step()
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for n in (1, 2):
            tr.set_num_threads(n)
            with threadpool_limits(limits=n, user_api="blas"):
                t0 = time.perf_counter()
                for _ in range(args.block):
                    step()
                times[n].append((time.perf_counter() - t0) / args.block)
    med = {n: float(np.median(v)) for n, v in times.items()}
    for n in (1, 2):
        print(f"{n} BLAS thread{'s' if n > 1 else ' '}: {1e3 * med[n]:6.1f} ms/step (median of {args.repeats} blocks of "
              f"{args.block}; all {[round(1e3 * t) for t in times[n]]})")
    print(f"2 threads are {med[1] / med[2]:.2f}x as fast as 1")
    return med


if __name__ == "__main__":
    main()
