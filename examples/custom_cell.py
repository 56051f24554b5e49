"""custom_cell: the char LM of char_lm.py with a recurrent cell of your own, compiled.

Each cell below is an ordinary module written with tensor ops -- ``forward(x_t, state) ->
(out_t, new_state)`` -- and ``nn.Recurrent`` runs it over the sequence. The first call traces one
step, generates one Numba kernel for the whole sequence (forward and backpropagation through
time; cached on disk, so the next run starts in about a second) and trains at fused speed.

    python examples/custom_cell.py --cell peephole          # Gers & Schmidhuber's peephole LSTM
    python examples/custom_cell.py --cell layernorm --steps 500
    python examples/custom_cell.py --cell indrnn --compile off   # the same model, op by op

Cells: peephole, coupled (CIFG: f = 1 - i), layernorm (Ba et al.), indrnn (Li et al.), lstm (the
built-in LSTM's cell as a user cell). Prints validation bits/char and training steps/s.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import tinygrad_rnn as tr  # noqa: E402
from tinygrad_rnn import data, nn, optim  # noqa: E402
from tinygrad_rnn.nn import functional as F  # noqa: E402
from tinygrad_rnn.nn.rnn import lstm_cell  # noqa: E402

# ------------------------------------------------------------------------------------------------
# the cells: each is all a user writes


class PeepholeLSTM(nn.Module):
    """Gers & Schmidhuber: the input and forget gates peek at c_{t-1}, the output gate at c_t."""

    def __init__(self, input_size: int, hidden_size: int, dtype: Any = None, seed: int = 0):
        super().__init__()
        self.ih = nn.Linear(input_size, 4 * hidden_size, dtype=dtype, seed=seed)
        self.hh = nn.Linear(hidden_size, 4 * hidden_size, bias=False, dtype=dtype, seed=seed + 1)
        k = 1 / math.sqrt(hidden_size)
        self.peep = nn.Parameter(tr.rand(3, hidden_size, dtype=dtype, seed=seed + 2) * (2 * k) - k)
        self.state_size = (hidden_size, hidden_size)

    def forward(self, x: tr.Tensor, state: tuple) -> tuple:
        h, c = state
        i, f, g, o = (self.ih(x) + self.hh(h)).chunk(4, -1)
        i = (i + self.peep[0] * c).sigmoid()
        f = (f + self.peep[1] * c).sigmoid()
        c = f * c + i * g.tanh()
        o = (o + self.peep[2] * c).sigmoid()
        h = o * c.tanh()
        return h, (h, c)


class CoupledLSTM(nn.Module):
    """Coupled input and forget gates, f = 1 - i (Greff et al.'s CIFG): three gate blocks, not four."""

    def __init__(self, input_size: int, hidden_size: int, dtype: Any = None, seed: int = 0):
        super().__init__()
        self.ih = nn.Linear(input_size, 3 * hidden_size, dtype=dtype, seed=seed)
        self.hh = nn.Linear(hidden_size, 3 * hidden_size, bias=False, dtype=dtype, seed=seed + 1)
        self.state_size = (hidden_size, hidden_size)

    def forward(self, x: tr.Tensor, state: tuple) -> tuple:
        h, c = state
        i, g, o = (self.ih(x) + self.hh(h)).chunk(3, -1)
        i = i.sigmoid()
        c = (1 - i) * c + i * g.tanh()
        h = o.sigmoid() * c.tanh()
        return h, (h, c)


class LayerNormLSTM(nn.Module):
    """Layer normalisation of the gate pre-activations and of c (Ba, Kiros & Hinton 2016): a mean and a
    variance over each row per step, compiled into the step like any other op."""

    def __init__(self, input_size: int, hidden_size: int, dtype: Any = None, seed: int = 0, eps: float = 1e-5):
        super().__init__()
        self.ih = nn.Linear(input_size, 4 * hidden_size, dtype=dtype, seed=seed)
        self.hh = nn.Linear(hidden_size, 4 * hidden_size, bias=False, dtype=dtype, seed=seed + 1)
        self.g_gates = nn.Parameter(tr.ones(4 * hidden_size, dtype=dtype))
        self.b_gates = nn.Parameter(tr.zeros(4 * hidden_size, dtype=dtype))
        self.g_c, self.b_c = nn.Parameter(tr.ones(hidden_size, dtype=dtype)), nn.Parameter(tr.zeros(hidden_size, dtype=dtype))
        self.eps = eps
        self.state_size = (hidden_size, hidden_size)

    def norm(self, v: tr.Tensor, g: tr.Tensor, b: tr.Tensor) -> tr.Tensor:
        d = v - v.mean(-1, keepdim=True)
        return d / ((d * d).mean(-1, keepdim=True) + self.eps).sqrt() * g + b

    def forward(self, x: tr.Tensor, state: tuple) -> tuple:
        h, c = state
        i, f, g, o = self.norm(self.ih(x) + self.hh(h), self.g_gates, self.b_gates).chunk(4, -1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * self.norm(c, self.g_c, self.b_c).tanh()
        return h, (h, c)


class IndRNN(nn.Module):
    """Independently recurrent network (Li et al. 2018): h = relu(W x + u * h + b), a diagonal recurrence
    (no recurrent GEMM at all: the whole step is elementwise)."""

    def __init__(self, input_size: int, hidden_size: int, dtype: Any = None, seed: int = 0):
        super().__init__()
        self.ih = nn.Linear(input_size, hidden_size, dtype=dtype, seed=seed)
        self.u = nn.Parameter(tr.rand(hidden_size, dtype=dtype, seed=seed + 1))
        self.state_size = hidden_size

    def forward(self, x: tr.Tensor, h: tr.Tensor) -> tuple:
        h = (self.ih(x) + self.u * h).relu()
        return h, h


class LSTM(nn.Module):
    """The built-in LSTM's cell (PyTorch's gate order i, f, g, o) as a user cell."""

    def __init__(self, input_size: int, hidden_size: int, dtype: Any = None, seed: int = 0):
        super().__init__()
        self.cell = nn.LSTMCell(input_size, hidden_size, dtype=dtype, seed=seed)
        self.state_size = (hidden_size, hidden_size)

    def forward(self, x: tr.Tensor, state: tuple) -> tuple:
        c = self.cell
        h, c2 = lstm_cell(x, state[0], state[1], c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh)
        return h, (h, c2)


CELLS = {"peephole": PeepholeLSTM, "coupled": CoupledLSTM, "layernorm": LayerNormLSTM, "indrnn": IndRNN, "lstm": LSTM}


# ------------------------------------------------------------------------------------------------
# the language model around a cell


class CellLM(nn.Module):
    """Embedding -> nn.Recurrent(cell) -> Linear to next-character logits."""

    def __init__(self, vocab: int, cell: str, hidden: int, emb: int, compile: Any, seed: int = 0):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb, seed=seed)
        self.rnn = nn.Recurrent(CELLS[cell](emb, hidden, seed=seed + 1), batch_first=True, compile=compile)
        self.head = nn.Linear(hidden, vocab, seed=seed + 2)

    def forward(self, ids: np.ndarray, state: Any = None) -> tuple:
        out, state = self.rnn(self.embed(ids), state)
        return self.head(out), state


def detach(state: Any) -> Any:
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def evaluate(model: CellLM, split: np.ndarray, seq: int, max_windows: int) -> float:
    """Mean bits/char over the first ``max_windows`` windows of a batchified split."""
    total, count, state = 0.0, 0, None
    with tr.no_grad():
        for k, (x, y) in enumerate(data.bptt_batches(split, seq)):
            if k >= max_windows:
                break
            logits, state = model(x, state)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            count += y.size
    return total / max(count, 1) / math.log(2)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cell", choices=sorted(CELLS), default="peephole", help="the recurrent cell")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--emb", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64, help="truncated-BPTT window")
    p.add_argument("--steps", type=int, default=300, help="training steps")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-windows", type=int, default=20, help="validation windows per evaluation")
    p.add_argument("--max-chars", type=int, default=0, help="use only the first N characters (0 = all)")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="on",
                   help="on: compile the cell (an error if it cannot be); auto: fall back op by op; off: op by op")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = the library's default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("hidden", "emb", "batch", "seq", "eval_every", "eval_windows"):
        if getattr(args, name) < 1:
            p.error(f"argument --{name.replace('_', '-')}: must be a positive integer")
    if args.threads:
        tr.set_num_threads(args.threads)
    text = data.load_tinyshakespeare()
    if args.max_chars:
        text = text[: args.max_chars]
    vocab = data.Vocab.chars(text)
    train_txt, val_txt, _ = data.split_text(text, 0.05, 0.05)
    train = data.batchify(vocab.encode(train_txt), args.batch)
    val = data.batchify(vocab.encode(val_txt), max(1, min(args.batch, len(val_txt) // (2 * args.seq))))
    if train.shape[1] <= args.seq:
        p.error(f"argument --max-chars: too few characters for --batch {args.batch} x --seq {args.seq}")
    mode = {"on": True, "off": False, "auto": "auto"}[args.compile]
    model = CellLM(len(vocab), args.cell, args.hidden, args.emb, mode, seed=args.seed)
    params = list(model.parameters())
    opt = optim.Adam(params, lr=args.lr)
    print(f"custom_cell: {args.cell} cell, hidden {args.hidden}, {model.num_parameters():,} parameters, batch "
          f"{args.batch} x seq {args.seq}, compile={args.compile}")
    print(f"before training: val {evaluate(model, val, args.seq, args.eval_windows):.3f} bits/char")
    step, state, t_train, steps_timed = 0, None, 0.0, 0
    history = []
    while step < args.steps:
        for x, y in data.bptt_batches(train, args.seq, drop_last=True):
            t0 = time.perf_counter()
            logits, state = model(x, state)
            state = detach(state)
            loss = F.cross_entropy(logits.reshape(-1, len(vocab)), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, args.clip)
            opt.step()
            if step > 0:  # the first step compiles (or loads the compiled cell from the disk cache)
                t_train += time.perf_counter() - t0
                steps_timed += 1
            else:
                print(f"first step (trace + compile or cache load): {time.perf_counter() - t0:.1f} s; path "
                      f"{model.rnn.last_path}")
            step += 1
            if step % args.eval_every == 0 or step == args.steps:
                v = evaluate(model, val, args.seq, args.eval_windows)
                rate = steps_timed / t_train if t_train else float("nan")
                history.append({"step": step, "train_bpc": loss.item() / math.log(2), "val_bpc": v})
                print(f"step {step:5d}  train {loss.item() / math.log(2):.3f}  val {v:.3f} bits/char  {rate:.2f} steps/s")
            if step >= args.steps:
                break
    rate = steps_timed / t_train if t_train else float("nan")
    stats = tr.compiler.compile_stats()
    for s in stats:
        how = "from the disk cache" if s["forward_cache_hits"] else "compiled"
        print(f"compiled cell {os.path.basename(s['source'])}: first forward {s['compile_s'].get('forward', 0):.2f} s, "
              f"first backward {s['compile_s'].get('backward', 0):.2f} s ({how})")
    print(f"result: {args.cell}  val {history[-1]['val_bpc']:.3f} bits/char  {rate:.2f} steps/s  path {model.rnn.last_path}")
    return {"cell": args.cell, "history": history, "steps_per_s": rate, "path": model.rnn.last_path}


if __name__ == "__main__":
    main()
