"""Compatibility programs that still need API from the second step of issue 20 (not collected by
pytest: the leading underscore). Each is written once against a module ``torch``; run this file to
see which of them run with ``tinygrad_rnn`` in torch's place and which API each still misses:

    PYTHONPATH=$PWD python tests/_compat_pending.py

When a program runs and matches, move it into ``tests/test_torch_compat.py``.
"""
from __future__ import annotations

import io
import os
import sys
import traceback

import numpy as np

# ------------------------------------------------------------------------------------------------
# A. a word-level LSTM language model, as pytorch/examples' word_language_model: init_hidden with
#    new_zeros, manual SGD through .data, narrow/view batching, checkpointing the whole module

def word_lm_program(torch, init, corpus_ids, steps=6):
    nn = torch.nn
    device = torch.device("cpu")

    class RNNModel(nn.Module):
        def __init__(self, ntoken, ninp, nhid, nlayers):
            super().__init__()
            self.encoder = nn.Embedding(ntoken, ninp)
            self.rnn = nn.LSTM(ninp, nhid, nlayers)
            self.decoder = nn.Linear(nhid, ntoken)
            self.nhid, self.nlayers = nhid, nlayers

        def forward(self, input, hidden):
            emb = self.encoder(input)
            output, hidden = self.rnn(emb, hidden)
            decoded = self.decoder(output).view(-1, self.decoder.out_features)
            return nn.functional.log_softmax(decoded, dim=1), hidden

        def init_hidden(self, bsz):
            weight = next(self.parameters())
            return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))

    def batchify(data, bsz):
        nbatch = data.size(0) // bsz
        data = data.narrow(0, 0, nbatch * bsz)
        return data.view(bsz, -1).t().contiguous().to(device)

    def get_batch(source, i, bptt=5):
        seq_len = min(bptt, len(source) - 1 - i)
        return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].reshape(-1)

    def repackage_hidden(h):
        return h.detach() if isinstance(h, torch.Tensor) else tuple(repackage_hidden(v) for v in h)

    # torch.save pickles the class by name: make it a module-level name, one per torch-like module
    RNNModel.__qualname__ = RNNModel.__name__ = f"RNNModel_{torch.__name__}"
    globals()[RNNModel.__name__] = RNNModel
    model = RNNModel(20, 8, 12, 2).to(device)
    if init is None:
        init = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    else:
        model.load_state_dict({k: torch.tensor(v) for k, v in init.items()})
    train = batchify(torch.tensor(corpus_ids, dtype=torch.long), 4)
    criterion = nn.NLLLoss()
    lr, losses = 2.0, []
    hidden = model.init_hidden(4)
    model.rnn.flatten_parameters()
    for _, i in enumerate(range(0, min(train.size(0) - 1, steps * 5), 5)):
        data, targets = get_batch(train, i)
        model.zero_grad()
        hidden = repackage_hidden(hidden)
        output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        losses.append(loss.item())
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    with torch.serialization.safe_globals([RNNModel, torch.nn.modules.rnn.LSTM, torch.nn.modules.sparse.Embedding,
                                           torch.nn.modules.linear.Linear, torch.nn.modules.dropout.Dropout]):
        model = torch.load(buf)
    model.rnn.flatten_parameters()
    with torch.no_grad():
        output, _ = model(train[:5], model.init_hidden(4))
        losses.append(criterion(output, train[1:6].reshape(-1)).item())
    return losses, init


# (B, text generation with multinomial/topk, and C, time_sequence_prediction, run now: they are
#  tests 6 and 7 of tests/test_torch_compat.py)


PROGRAMS = {
    "word_lm": (word_lm_program, lambda: (np.random.default_rng(0).integers(0, 20, size=200),)),
}

# every API the programs above use that the first step did not build, probed one by one
PROBES = {
    "torch.device('cpu')": lambda t: t.device("cpu"),
    "torch.double / float / long / int / half": lambda t: (t.double, t.float, t.long, t.int, t.half),
    "torch.from_numpy (shares memory)": lambda t: t.from_numpy(np.zeros(2)),
    "Tensor.new_zeros / new_ones / new_full / new_empty": lambda t: (t.zeros(1).new_zeros(2, 3), t.zeros(1).new_ones(2),
                                                                      t.zeros(1).new_full((2,), 3.0), t.zeros(1).new_empty(2)),
    "Tensor.view": lambda t: t.zeros(4).view(2, 2),
    "Tensor.t": lambda t: t.zeros(2, 3).t(),
    "Tensor.contiguous": lambda t: t.zeros(2, 3).contiguous(),
    "Tensor.narrow": lambda t: t.zeros(5).narrow(0, 1, 2),
    "Tensor.type(dtype)": lambda t: t.zeros(2).type(t.float64),
    "Tensor.split (method)": lambda t: t.zeros(2, 4).split(1, dim=1),
    "Tensor.div (method)": lambda t: t.ones(2).div(2.0),
    "Tensor.fill_ from a 0-d tensor": lambda t: t.zeros(1, 1, dtype=t.int64).fill_(t.tensor(3)),
    "p.data as a Tensor; add_(other, alpha=)": lambda t: t.zeros(2).data.add_(t.ones(2), alpha=-0.5),
    "torch.exp / torch.log / torch.tanh (top level)": lambda t: (t.exp(t.zeros(1)), t.log(t.ones(1)), t.tanh(t.zeros(1))),
    "torch.multinomial": lambda t: t.multinomial(t.ones(3), 1),
    "torch.topk": lambda t: t.topk(t.tensor([1.0, 3.0, 2.0]), 2),
    "torch.randint(high, size, dtype=)": lambda t: t.randint(9, (1, 1), dtype=t.int64),
    "torch.save / torch.load with a file object": lambda t: _save_load_file(t),
    "torch.save of a whole module + torch.serialization.safe_globals": lambda t: _save_module(t),
    "torch.nn.modules.rnn.LSTM / sparse.Embedding / linear.Linear paths": lambda t: (
        t.nn.modules.rnn.LSTM, t.nn.modules.sparse.Embedding, t.nn.modules.linear.Linear),
    "Module.register_buffer": lambda t: t.nn.Module().register_buffer("b", t.zeros(1)),
    "Module.apply": lambda t: t.nn.Linear(2, 2).apply(lambda m: None),
}


def _save_load_file(t):
    buf = io.BytesIO()
    t.save({"w": t.zeros(2)}, buf)
    buf.seek(0)
    return t.load(buf)


def _save_module(t):
    buf = io.BytesIO()
    t.save(t.nn.Linear(2, 2), buf)
    buf.seek(0)
    with t.serialization.safe_globals([t.nn.Linear]):
        return t.load(buf)


def main() -> int:
    import torch

    import tinygrad_rnn

    print("API probes (tinygrad_rnn in torch's place):")
    missing = []
    for name, probe in PROBES.items():
        probe(torch)  # the probe itself is right: torch passes it
        try:
            probe(tinygrad_rnn)
            print(f"  ok       {name}")
        except Exception as e:  # noqa: BLE001 - a report of what fails, whatever it is
            missing.append(name)
            print(f"  MISSING  {name}: {type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}")
    print("\nprograms:")
    for name, (program, make) in PROGRAMS.items():
        args = make()
        torch.manual_seed(0)
        ref, init = program(torch, None, *args)
        try:
            ours, _ = program(tinygrad_rnn, init, *args)
            same = np.allclose(ours, ref, rtol=2e-4, atol=1e-5)
            print(f"  {'ok' if same else 'DIFFERS':8} {name}")
        except Exception as e:  # noqa: BLE001
            tb = traceback.extract_tb(e.__traceback__)
            line = next((f"line {fr.lineno}: {fr.line}" for fr in reversed(tb) if fr.filename == __file__), "")
            print(f"  FAILS    {name}: {type(e).__name__}: {str(e).splitlines()[0][:100]}  ({line})")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    raise SystemExit(main())
