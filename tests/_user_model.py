"""A user's own model, in a module of its own so that a fresh process can import it (tests/test_save_module.py)."""
from __future__ import annotations

import tinygrad_rnn as tr
from tinygrad_rnn import nn


class WordModel(nn.Module):
    """Embedding + LSTM + Linear, as pytorch/examples' word_language_model, with plain attributes beside."""

    def __init__(self, ntoken: int = 13, ninp: int = 6, nhid: int = 10, nlayers: int = 2, seed: int = 0):
        super().__init__()
        self.encoder = nn.Embedding(ntoken, ninp, seed=seed)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, seed=seed + 1)
        self.decoder = nn.Linear(nhid, ntoken, seed=seed + 2)
        self.drop = nn.Dropout(0.2)
        self.nhid, self.nlayers, self.config = nhid, nlayers, {"tie": False, "sizes": (ntoken, ninp), "name": "lm"}

    def forward(self, ids: tr.Tensor) -> tr.Tensor:
        out, _ = self.rnn(self.drop(self.encoder(ids)))
        return self.decoder(out)
