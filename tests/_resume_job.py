"""A tiny word-LM training job for the exact-resume test (tests/test_serialization.py).

Run as a script it is the "fresh process": ``python _resume_job.py CKPT DTYPE K SEED`` builds the model
from another seed, loads everything from CKPT and prints the next K losses as float.hex, one per line.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tinygrad_rnn as tr  # noqa: E402
from tinygrad_rnn import nn, optim  # noqa: E402
from tinygrad_rnn.data import batchify, bptt_batches  # noqa: E402

VOCAB, BATCH, SEQ = 11, 3, 4


class TinyLM(nn.Module):
    """Embedding -> dropout -> 2-layer LSTM (inter-layer dropout) -> dropout -> Linear."""

    def __init__(self, seed: int, dtype):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 5, dtype=dtype, seed=seed)
        self.drop = nn.Dropout(0.3)
        self.rnn = nn.LSTM(5, 6, num_layers=2, dropout=0.25, batch_first=True, dtype=dtype, seed=seed + 1)
        self.out = nn.Linear(6, VOCAB, dtype=dtype, seed=seed + 2)

    def forward(self, x, hidden):
        y, hidden = self.rnn(self.drop(self.emb(tr.tensor(x))), hidden)
        return self.out(self.drop(y)).reshape(-1, VOCAB), hidden


def stream() -> np.ndarray:
    return np.random.default_rng(123).integers(0, VOCAB, size=600)


def build(seed: int, dtype):
    """A model, Adam, a StepLR schedule and a BPTT batcher over a fixed token stream."""
    model = TinyLM(seed, dtype)
    opt = optim.Adam(model.parameters(), lr=0.01)
    sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    batches = bptt_batches(batchify(stream(), BATCH), SEQ)
    return model, opt, sched, batches


def train(model, opt, sched, batches, hidden, k: int):
    """k steps of truncated BPTT (hidden state carried, detached); the scheduler steps every step."""
    losses = []
    for _ in range(k):
        x, y = next(batches)
        logits, hidden = model(x, hidden)
        hidden = tuple(h.detach() for h in hidden)
        loss = nn.functional.cross_entropy(logits, y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.item()))
    return losses, hidden


def checkpoint(model, opt, sched, batches, hidden, step: int) -> dict:
    return {"model": model.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict(),
            "data": batches.state_dict(), "hidden": hidden, "rng": tr.get_rng_state(), "step": step}


def resume(path: str, dtype, seed: int):
    state = tr.load(path)
    model, opt, sched, batches = build(seed, dtype)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optim"])
    sched.load_state_dict(state["sched"])
    batches.load_state_dict(state["data"])
    tr.set_rng_state(state["rng"])
    return model, opt, sched, batches, state["hidden"]


if __name__ == "__main__":
    ckpt, dtype_name, k, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    tr.manual_seed(seed)  # a different global state too: only the checkpoint's may matter
    model, opt, sched, batches, hidden = resume(ckpt, np.dtype(dtype_name), seed)
    losses, _ = train(model, opt, sched, batches, hidden, k)
    print("\n".join(x.hex() for x in losses))
