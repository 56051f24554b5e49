"""A PyTorch RNN program run both ways: with ``import torch`` and with ``import tinygrad_rnn as torch``.

The programs are written once against a module ``torch`` (as a user's file would be, with only the
import line differing), each run in its own fresh process, alternating, and timed as a whole:

* ``word_lm``: pytorch/examples' word-level language model (Embedding 10k x 200 -> 2-layer LSTM 200
  -> Linear 10k, BPTT 35, batch 20, ``init_hidden`` with ``new_zeros``, manual SGD through
  ``p.data.add_(p.grad, alpha=-lr)``, gradient clipping), 40 steps of one epoch on random ids;
* ``lstmcell``: an ``nn.LSTMCell`` stepped in a Python loop (B=32, D=64, H=256, T=64: the loss
  sum of squared hidden states, backward, Adam), 10 iterations;
* ``time_seq``: pytorch/examples' time-sequence prediction (two float64 LSTMCells of 51 units over
  97 sine waves of 200 steps, L-BFGS), one optimizer step (up to 20 evaluations);
* ``generate``: sampling 400 characters one at a time from an Embedding -> LSTM(64, 256) -> Linear
  char model (batch 1, T = 1 per call, ``softmax`` and ``multinomial``), as a char-RNN's generator does.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/torch_program.py [--threads 1] [--rounds 3]

Prints seconds per program (best and median of the rounds) and torch / ours (>1: ours faster).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _proc import best_and_median, cpu_info, run_fresh  # noqa: E402


def word_lm(torch, steps: int = 40) -> float:
    import time

    import numpy as np
    nn = torch.nn
    ntoken, ninp, nhid, nlayers, bsz, bptt, lr = 10000, 200, 200, 2, 20, 35, 20.0

    class RNNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Embedding(ntoken, ninp)
            self.rnn = nn.LSTM(ninp, nhid, nlayers)
            self.decoder = nn.Linear(nhid, ntoken)

        def forward(self, input, hidden):
            output, hidden = self.rnn(self.encoder(input), hidden)
            return nn.functional.log_softmax(self.decoder(output).view(-1, ntoken), dim=1), hidden

        def init_hidden(self, b):
            w = next(self.parameters())
            return w.new_zeros(nlayers, b, nhid), w.new_zeros(nlayers, b, nhid)

    torch.manual_seed(0)
    ids = np.random.default_rng(0).integers(0, ntoken, size=bsz * bptt * (steps + 2))
    data = torch.tensor(ids, dtype=torch.long)
    data = data.narrow(0, 0, (data.size(0) // bsz) * bsz).view(bsz, -1).t().contiguous()
    model, criterion = RNNModel(), nn.NLLLoss()
    hidden = model.init_hidden(bsz)
    t0 = 0.0
    for k, i in enumerate(range(0, steps * bptt, bptt)):
        if k == 2:  # two warm-up steps (first-call costs: Numba's cache load, BLAS buffers)
            t0 = time.perf_counter()
        x, y = data[i:i + bptt], data[i + 1:i + 1 + bptt].reshape(-1)
        hidden = tuple(h.detach() for h in hidden)
        model.zero_grad()
        output, hidden = model(x, hidden)
        loss = criterion(output, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
    return time.perf_counter() - t0


def lstmcell(torch, iters: int = 10) -> float:
    import time
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(64, 256)
    opt = torch.optim.Adam(cell.parameters(), lr=1e-3)
    x = torch.randn(64, 32, 64)
    t0 = 0.0
    for k in range(iters + 2):
        if k == 2:
            t0 = time.perf_counter()
        h, c = torch.zeros(32, 256), torch.zeros(32, 256)
        loss = 0
        for t in range(64):
            h, c = cell(x[t], (h, c))
            loss = loss + (h * h).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def time_seq(torch, steps: int = 1) -> float:
    import time

    import numpy as np
    nn = torch.nn

    class Sequence(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm1, self.lstm2, self.linear = nn.LSTMCell(1, 51), nn.LSTMCell(51, 51), nn.Linear(51, 1)

        def forward(self, input):
            outputs = []
            h_t = torch.zeros(input.size(0), 51, dtype=torch.double)
            c_t = torch.zeros(input.size(0), 51, dtype=torch.double)
            h_t2 = torch.zeros(input.size(0), 51, dtype=torch.double)
            c_t2 = torch.zeros(input.size(0), 51, dtype=torch.double)
            for input_t in input.split(1, dim=1):
                h_t, c_t = self.lstm1(input_t, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                outputs += [self.linear(h_t2)]
            return torch.cat(outputs, dim=1)

    rng = np.random.default_rng(2)
    x = np.arange(201)[None, :] + rng.integers(-80, 80, size=(100, 1))
    wave = np.sin(x / 20.0)
    torch.manual_seed(0)
    inp, target = torch.from_numpy(wave[3:, :-1]), torch.from_numpy(wave[3:, 1:])
    seq = Sequence().double()
    criterion = nn.MSELoss()
    optimizer = torch.optim.LBFGS(seq.parameters(), lr=0.8)

    def closure():
        optimizer.zero_grad()
        loss = criterion(seq(inp), target)
        loss.backward()
        return loss

    t0 = time.perf_counter()
    for _ in range(steps):
        optimizer.step(closure)
    return time.perf_counter() - t0


def generate(torch, chars: int = 400) -> float:
    """Sampling text one character at a time, as a char-RNN's generator does: Embedding(65, 64) ->
    LSTM(64, 256) -> Linear(256, 65), batch 1, one step per call, ``multinomial`` on the softmax."""
    import time
    nn = torch.nn
    torch.manual_seed(0)
    emb, rnn, head = nn.Embedding(65, 64), nn.LSTM(64, 256), nn.Linear(256, 65)
    with torch.no_grad():
        idx, state = torch.zeros(1, 1, dtype=torch.long), None
        for k in range(chars + 20):
            if k == 20:  # warm-up steps first (first-call costs)
                t0 = time.perf_counter()
            out, state = rnn(emb(idx), state)
            probs = torch.softmax(head(out[-1]) / 0.8, dim=-1)
            idx = torch.multinomial(probs, 1).view(1, 1)
    return time.perf_counter() - t0


PROGRAMS = {"word_lm": word_lm, "lstmcell": lstmcell, "time_seq": time_seq, "generate": generate}


def worker(fw: str, program: str, threads: int) -> dict:
    if fw == "torch":
        import torch
        torch.set_num_threads(threads)
    else:
        import tinygrad_rnn as torch
        torch.set_num_threads(threads)
    return {"s": PROGRAMS[program](torch)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--programs", default=",".join(PROGRAMS))
    args = ap.parse_args()
    print(f"CPU: {cpu_info()}; threads per contender: {args.threads}; each run in its own process, alternating")
    print("| program | ours s best (median) | PyTorch s best (median) | torch / ours best (median) |")
    print("|---|---|---|---|")
    for program in args.programs.split(","):
        times: dict[str, list[float]] = {"ours": [], "torch": []}
        for _ in range(args.rounds):
            for fw in ("ours", "torch"):
                code = f"import torch_program as P; emit(P.worker({fw!r}, {program!r}, {args.threads}))"
                times[fw].append(run_fresh(code, threads=args.threads)["s"])
        (ob, om), (tb, tm) = best_and_median(times["ours"]), best_and_median(times["torch"])
        print(f"| {program} | {ob:.3f} ({om:.3f}) | {tb:.3f} ({tm:.3f}) | {tb / ob:.2f} ({tm / om:.2f}) |", flush=True)
    print(json.dumps({"threads": args.threads}))


if __name__ == "__main__":
    main()
