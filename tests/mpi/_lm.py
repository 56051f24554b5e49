"""The small 2-layer LSTM language model the MPI tests train (float64, seeded)."""
from __future__ import annotations

import numpy as np

import tinygrad_rnn as tr
from tinygrad_rnn import nn
from tinygrad_rnn.nn import functional as F

VOCAB, EMB, HIDDEN = 11, 6, 8


class TinyLM(nn.Module):
    """Embedding -> 2-layer LSTM -> Linear, every parameter float64."""

    def __init__(self, seed: int):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMB, seed=seed, dtype=tr.float64)
        self.rnn = nn.LSTM(EMB, HIDDEN, num_layers=2, batch_first=True, seed=seed + 1, dtype=tr.float64)
        self.head = nn.Linear(HIDDEN, VOCAB, seed=seed + 2, dtype=tr.float64)

    def forward(self, ids: np.ndarray, state=None):
        out, state = self.rnn(self.embed(ids), state)
        return self.head(out), state


def lm_loss(model, x: np.ndarray, y: np.ndarray, state):
    """Mean cross-entropy over the window, and the detached state to carry into the next one."""
    logits, state = model(x, state)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
    return loss, tuple(s.detach() for s in state)


def token_stream(n: int = 400) -> np.ndarray:
    return np.random.default_rng(1234).integers(0, VOCAB, size=n)


def flat_params(model) -> np.ndarray:
    return np.concatenate([p.numpy().ravel() for p in model.parameters()])
