"""Word-level language models on Penn Treebank, from counting to the LSTM.

The lecture's story, one model per step, all scored on exactly the same tokens:

  ngram   Kneser-Ney 5-gram: counts; unseen contexts back off (sparsity).
  window  Bengio et al. (2003): embeddings of the previous n-1 words, concatenated -> tanh
          hidden layer -> softmax. No sparsity, but the window is fixed.
  rnn     An Elman (tanh) RNN LM of the LSTM's size: reads any length of history through its
          state. Same training, but SGD lr 0.2: at 0.5 and above it diverges.
  lstm    Zaremba et al. (2014) "small": 2 layers of 200 LSTM units, unrolled 20 steps,
          batch 20, SGD lr 1 halved every epoch after a few, clip 5, init U(-0.1, 0.1), no dropout.

The paper trains 13 epochs; that takes hours on two CPU cores, so the defaults train the LSTM
3 epochs, halving the lr from the second one on (enough to beat the 5-gram on test), and the window
NNLM and the RNN one epoch each (``--baseline-epochs``). ``--epochs 13`` is the paper's schedule
(lr 1 for 4 epochs, then halved every epoch). Every model is scored on all tokens of a split as one
stream (batch 1), the first token predicted after an ``<eos>``, so the perplexities are comparable.

    python examples/word_lm.py                      # all four models: 22 min of CPU time (one thread)
    python examples/word_lm.py --model lstm --epochs 13     # Zaremba's full schedule (hours)
    python examples/word_lm.py --resume runs/word_lm/train_state.npz   # continue a saved or interrupted run
    mpiexec -n 2 python examples/word_lm.py --model lstm --batch-size 10  # data-parallel: 2 x 10 = the paper's 20 streams

The whole training state (finished models' results, the current model, optimizer, schedule, data
position and carried state) is saved to ``OUT/train_state.npz`` every ``--save-every`` steps, at the
end and on Ctrl-C. Under MPI each rank reads its ``--batch-size`` of the ranks x batch streams
(``distributed_batchify``; the window NNLM: its share of every batch) and gradients are averaged.
"""
from __future__ import annotations

import itertools
import math
import os
import time

import numpy as np
from _common import Run, make_parser, nonneg_float, nonneg_int, positive_float, positive_int, print_table, probability, start

import tinygrad_rnn as tr
import tinygrad_rnn.distributed as dist
import tinygrad_rnn.nn.functional as F
from tinygrad_rnn import nn, optim
from tinygrad_rnn.classic import KneserNeyLM
from tinygrad_rnn.data import Vocab, bptt_batches, distributed_batchify, load_ptb
from tinygrad_rnn.nn.utils import clip_grad_norm_

MODELS = ("ngram", "window", "rnn", "lstm")

# Published test (and validation, where given) perplexities on this PTB version (Mikolov's 10k-word
# preprocessing). None where the paper gives no number for this setting.
PUBLISHED = {
    "ngram": {"valid": None, "test": 141.2, "source": "KN5, Mikolov et al. 2011"},
    "window": {"valid": None, "test": None,
               "source": "Bengio et al. 2003 used Brown and AP News, not this PTB version"},
    "rnn": {"valid": None, "test": 124.7, "source": "RNN LM, Mikolov et al. 2011"},
    "lstm": {"valid": 120.7, "test": 114.5, "source": "Zaremba et al. 2014, small, 13 epochs"},
}


# ----------------------------------------------------------------------------------------------
# models


class WindowLM(nn.Module):
    """Bengio et al. 2003: P(w_t | w_{t-n+1..t-1}) from the concatenated embeddings of the window."""

    def __init__(self, vocab_size: int, context: int, emb_size: int, hidden_size: int, dropout: float = 0.0):
        super().__init__()
        self.context = context
        self.embedding = nn.Embedding(vocab_size, emb_size)
        self.hidden = nn.Linear(context * emb_size, hidden_size)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, ctx: np.ndarray) -> tr.Tensor:
        """ctx (N, context) word ids -> logits (N, vocab)."""
        e = self.embedding(ctx).reshape(ctx.shape[0], -1)
        return self.decoder(self.drop(self.hidden(self.drop(e)).tanh()))


class RecurrentLM(nn.Module):
    """Embedding -> RNN/LSTM (time-major) -> Linear to the vocabulary."""

    def __init__(self, cell: str, vocab_size: int, emb_size: int, hidden_size: int, num_layers: int,
                 dropout: float = 0.0, init_range: float = 0.1):
        super().__init__()
        self.cell, self.hidden_size = cell, hidden_size
        self.embedding = nn.Embedding(vocab_size, emb_size)
        layer = nn.LSTM if cell == "lstm" else nn.RNN
        self.rnn = layer(emb_size, hidden_size, num_layers, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        if init_range > 0:  # Zaremba et al.: every parameter U(-0.1, 0.1)
            rng = np.random.default_rng(int(tr.randint(0, 2**31 - 1, (1,)).item()))
            for p in self.parameters():
                p.copy_(rng.uniform(-init_range, init_range, size=p.shape).astype(p.dtype))

    def forward(self, x: tr.Tensor, state=None):
        """x (T, B) ids -> logits (T*B, vocab), new state."""
        out, state = self.rnn(self.drop(self.embedding(x)), state)
        return self.decoder(self.drop(out).reshape(-1, self.hidden_size)), state


def detach(state):
    """Cut the carried state from the graph: truncated BPTT backprops through one window only."""
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


# ----------------------------------------------------------------------------------------------
# evaluation: every model scores all N tokens of a split, the first one after "<eos>"


def eval_recurrent(model: RecurrentLM, ids: np.ndarray, eos_id: int, device: str, window: int = 200) -> float:
    """Perplexity of one unbroken stream (batch 1), the state carried across windows."""
    model.eval()
    stream = np.concatenate([[eos_id], ids])
    nll, count, state = 0.0, 0, None
    with tr.no_grad():
        for i in range(0, len(ids), window):
            n = min(window, len(ids) - i)
            x, y = stream[i:i + n], stream[i + 1:i + 1 + n]
            logits, state = model(tr.tensor(x[:, None], device=device), state)
            nll += F.cross_entropy(logits, tr.tensor(y, device=device), reduction="sum").item()
            count += len(y)
    model.train()
    return math.exp(nll / count)


def window_contexts(ids: np.ndarray, context: int, eos_id: int) -> np.ndarray:
    """(N, context) array: row t holds the `context` words before ids[t] (``<eos>`` before the start)."""
    padded = np.concatenate([np.full(context, eos_id, dtype=np.int64), ids])
    return np.lib.stride_tricks.sliding_window_view(padded[:-1], context)


def eval_window(model: WindowLM, ids: np.ndarray, eos_id: int, device: str, batch: int = 2000) -> float:
    model.eval()
    ctx = window_contexts(ids, model.context, eos_id)
    nll = 0.0
    with tr.no_grad():
        for i in range(0, len(ids), batch):
            logits = model(tr.tensor(np.ascontiguousarray(ctx[i:i + batch]), device=device))
            nll += F.cross_entropy(logits, tr.tensor(ids[i:i + batch], device=device), reduction="sum").item()
    model.train()
    return math.exp(nll / len(ids))


# ----------------------------------------------------------------------------------------------
# training


class Budget:
    """Wall-clock budget of one model's training (``--max-minutes``; 0 = none)."""

    def __init__(self, minutes: float):
        self.t0, self.limit = time.perf_counter(), minutes * 60.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def exceeded(self) -> bool:
        return self.limit > 0 and self.elapsed() > self.limit


def decay_after(args, epochs: int) -> int:
    """Epochs at the full lr before halving every epoch: the paper's 4 of 13, or 1 for short runs."""
    if args.decay_after >= 0:
        return args.decay_after
    return 4 if epochs >= 13 else 1


class Tracker:
    """Validation perplexity during training (``--evals-per-epoch`` times an epoch) and the best checkpoint."""

    def __init__(self, run: Run, name: str, model: nn.Module, evaluate, config: dict, steps: int, evals: int):
        self.run, self.name, self.model, self.evaluate, self.config = run, name, model, evaluate, config
        self.ckpt = run.path(f"{name}.npz")
        self.steps, self.history, self.best, self.best_epoch = steps, [], float("inf"), 0.0
        self.best_weights: dict | None = None
        self.marks = {math.ceil(k * steps / evals) for k in range(1, evals + 1)}  # steps (1-based) that end a slice

    def due(self, done: int) -> bool:
        return done in self.marks

    def state(self) -> dict:
        return {"history": self.history, "best": self.best, "best_epoch": self.best_epoch, "best_model": self.best_weights}

    def restore(self, state: dict, best_model: nn.Module) -> None:
        """Continue a saved run: its curve, and its best model written (again) into this run's --out."""
        self.history, self.best, self.best_epoch = state["history"], state["best"], state["best_epoch"]
        self.best_weights = state["best_model"]
        if self.best_weights is not None:
            best_model.load_state_dict(self.best_weights)
            self.run.save_checkpoint(best_model, f"{self.name}.npz", model=self.name, epoch=self.best_epoch,
                                     valid_ppl=self.best, config=self.config)

    def check(self, epoch: int, done: int, lr: float, train_ppl: float) -> None:
        if not self.run.is_main:  # one rank evaluates: the replicas hold the same weights
            return
        valid = self.evaluate()
        pos = epoch - 1 + done / self.steps
        self.history.append({"epoch": pos, "lr": lr, "train_ppl": train_ppl, "valid_ppl": valid})
        if valid < self.best:
            self.best, self.best_epoch = valid, pos
            self.best_weights = self.model.state_dict()
            self.run.save_checkpoint(self.model, f"{self.name}.npz", model=self.name, epoch=pos, valid_ppl=valid,
                                     config=self.config)
        self.run.log(f"{self.name} epoch {pos:.2f}: lr {lr:g}  train ppl {train_ppl:.1f} (mean over the epoch so far)  "
                     f"valid ppl {valid:.1f}")

    def result(self, test_ppl, budget: Budget, stopped: bool, losses: list) -> dict:
        return {"history": self.history, "losses": losses, "best_epoch": self.best_epoch, "train_seconds": budget.elapsed(),
                "checkpoint": self.ckpt, "valid_ppl": self.best, "test_ppl": test_ppl,
                "parameters": self.model.num_parameters(), "stopped_by_budget": stopped}


def train_recurrent(name: str, model: RecurrentLM, data: dict, eos_id: int, run: Run, epochs: int, saved: dict | None,
                    outer) -> dict:
    """Train with truncated BPTT; ``saved`` is a training state to continue, ``outer()`` the rest of the state."""
    args = run.args
    device = args.device
    opt = optim.SGD(model.parameters(), lr=args.lr if name == "lstm" else args.rnn_lr)
    sched = optim.lr_scheduler.LambdaLR(opt, optim.lr_scheduler.decay_after(decay_after(args, epochs), args.lr_decay))
    train = distributed_batchify(data["train"], args.batch_size, run.world, run.rank)  # this rank's streams
    steps = math.ceil((train.shape[1] - 1) / args.bptt)
    if args.max_steps:
        steps = min(steps, args.max_steps)
    budget, stopped = Budget(args.max_minutes), False
    track = Tracker(run, name, model, lambda: eval_recurrent(model, data["valid"], eos_id, device),
                    model_config(name, args), steps, args.evals_per_epoch)
    cur, first_epoch, losses = (saved or {}).get("current"), 1, []
    if cur is not None:
        model.load_state_dict(cur["model"])
        opt.load_state_dict(cur["optim"])
        sched.load_state_dict(cur["sched"])
        track.restore(cur["track"], build(name, model.decoder.weight.shape[0], args))
        budget.t0 -= cur["elapsed"]
        first_epoch, losses = cur["epoch"], list(cur["losses"])
    net = run.wrap(model)  # DistributedDataParallel under MPI
    epoch, done, batches, state, totals = first_epoch, 0, None, None, [0.0, 0]

    def training_state() -> dict:
        return {**outer(), "current": {
            "model": model.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch,
            "data": batches.state_dict(), "hidden": dist.gather_along(state, dim=1), "totals": list(totals),
            "track": track.state(), "elapsed": budget.elapsed(), "losses": losses}}

    for epoch in range(first_epoch, epochs + 1):
        lr = sched.get_last_lr()[0]
        batches = bptt_batches(train, args.bptt)
        state, totals = None, [0.0, 0]
        if cur is not None:
            batches.load_state_dict(cur["data"])
            state = dist.shard_along(cur["hidden"], dim=1, device=device)
            totals = list(cur["totals"])
            run.restore_rng(saved)
            cur = None
        done = batches.position
        bar = run.progress(steps - done, desc=f"{name} epoch {epoch}/{epochs}")
        for x, y in itertools.islice(batches, max(steps - done, 0)):
            state = detach(state)
            logits, state = net(tr.tensor(x.T, device=device), state)
            target = tr.tensor(np.ascontiguousarray(y.T).reshape(-1), device=device)
            # Zaremba et al.: the loss summed over the unrolled steps, averaged over the batch
            loss = F.cross_entropy(logits, target, reduction="sum") / x.shape[0]
            opt.zero_grad()
            loss.backward()
            clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            done += 1
            value, reason = run.step_done(loss.item(), stop=budget.exceeded())  # the mean over the ranks
            losses.append(value)
            totals[0] += value * x.shape[0] * run.world
            totals[1] += y.size * run.world
            bar.update(1, ppl=math.exp(totals[0] / totals[1]), lr=lr)
            stopped = reason == "limit"
            if track.due(done) or stopped or done == steps:
                with bar.paused():
                    track.check(epoch, done, lr, math.exp(totals[0] / totals[1]))
            if stopped:
                break
            run.after_step(reason, (epoch - 1) * steps + done, training_state, last=epoch == epochs and done == steps)
        bar.close()
        sched.step()
        if stopped:
            run.log(f"{name}: --max-minutes {args.max_minutes:g} reached after {budget.elapsed() / 60:.1f} min")
            break
    if not run.is_main:
        return {}
    model.load(track.ckpt)
    return track.result(eval_recurrent(model, data["test"], eos_id, device), budget, stopped, losses)


def train_window(model: WindowLM, data: dict, eos_id: int, run: Run, epochs: int, saved: dict | None, outer) -> dict:
    args = run.args
    device = args.device
    opt = optim.Adam(model.parameters(), lr=args.window_lr)
    ctx_all = window_contexts(data["train"], model.context, eos_id)
    targets = data["train"]
    n, bs = len(targets), args.window_batch
    steps = math.ceil(n / bs)
    if args.max_steps:
        steps = min(steps, args.max_steps)
    rng = np.random.default_rng(args.seed)
    budget, stopped = Budget(args.max_minutes), False
    track = Tracker(run, "window", model, lambda: eval_window(model, data["valid"], eos_id, device),
                    model_config("window", args), steps, args.evals_per_epoch)
    cur, first_epoch, losses = (saved or {}).get("current"), 1, []
    if cur is not None:
        model.load_state_dict(cur["model"])
        opt.load_state_dict(cur["optim"])
        track.restore(cur["track"], build("window", model.decoder.weight.shape[0], args))
        budget.t0 -= cur["elapsed"]
        first_epoch, losses = cur["epoch"], list(cur["losses"])
    net = run.wrap(model)  # DistributedDataParallel under MPI: each rank takes its share of every batch
    epoch, done, totals, epoch_rng = first_epoch, 0, [0.0, 0], None

    def training_state() -> dict:
        return {**outer(), "current": {
            "model": model.state_dict(), "optim": opt.state_dict(), "epoch": epoch, "done": done,
            "epoch_rng": epoch_rng, "totals": list(totals), "track": track.state(), "elapsed": budget.elapsed(),
            "losses": losses}}

    for epoch in range(first_epoch, epochs + 1):
        first, totals = 1, [0.0, 0]
        if cur is not None:
            rng.bit_generator.state = cur["epoch_rng"]  # redraw the saved epoch's order
            first, totals = cur["done"] + 1, list(cur["totals"])
            run.restore_rng(saved)
            cur = None
        epoch_rng = rng.bit_generator.state
        order = rng.permutation(n)
        bar = run.progress(steps - first + 1, desc=f"window epoch {epoch}/{epochs}")
        for done in range(first, steps + 1):
            idx = order[(done - 1) * bs:done * bs][run.rank::run.world]
            logits = net(tr.tensor(ctx_all[idx], device=device))
            loss = F.cross_entropy(logits, tr.tensor(targets[idx], device=device))
            opt.zero_grad()
            loss.backward()
            clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            value, reason = run.step_done(loss.item(), stop=budget.exceeded())
            losses.append(value)
            totals[0] += value * len(order[(done - 1) * bs:done * bs])
            totals[1] += len(order[(done - 1) * bs:done * bs])
            bar.update(1, ppl=math.exp(totals[0] / totals[1]))
            stopped = reason == "limit"
            if track.due(done) or stopped or done == steps:
                with bar.paused():
                    track.check(epoch, done, args.window_lr, math.exp(totals[0] / totals[1]))
            if stopped:
                break
            run.after_step(reason, (epoch - 1) * steps + done, training_state, last=epoch == epochs and done == steps)
        bar.close()
        if stopped:
            run.log(f"window: --max-minutes {args.max_minutes:g} reached after {budget.elapsed() / 60:.1f} min")
            break
    if not run.is_main:
        return {}
    model.load(track.ckpt)
    return track.result(eval_window(model, data["test"], eos_id, device), budget, stopped, losses)


def model_config(name: str, args) -> dict:
    if name == "window":
        return {"context": args.context, "emb_size": args.window_emb, "hidden_size": args.window_hidden}
    return {"cell": name, "emb_size": args.hidden, "hidden_size": args.hidden, "num_layers": layers(name, args)}


def layers(name: str, args) -> int:
    return args.layers if name == "lstm" else args.rnn_layers


def build(name: str, vocab_size: int, args) -> nn.Module:
    if name == "window":
        model = WindowLM(vocab_size, args.context, args.window_emb, args.window_hidden, args.window_dropout)
    else:
        model = RecurrentLM(name, vocab_size, args.hidden, args.hidden, layers(name, args), args.dropout, args.init_range)
    return model.to(args.device)


# ----------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    p = make_parser("word_lm", "word_lm: PTB word-level LMs (Kneser-Ney, Bengio window NNLM, RNN, LSTM)", epochs=3,
                    epochs_help="epochs of the LSTM (--baseline-epochs is the window NNLM's and the RNN's)",
                    save_every=500, distributed=True)
    p.add_argument("--model", default="all", choices=MODELS + ("all",), help="which model(s) to train and evaluate")
    p.add_argument("--baseline-epochs", type=positive_int, default=1, help="epochs of the window NNLM and the vanilla RNN")
    p.add_argument("--max-minutes", type=nonneg_float, default=0.0,
                   help="wall-clock training budget per neural model (0 = none); evaluation comes on top")
    p.add_argument("--evals-per-epoch", type=positive_int, default=4,
                   help="validation passes per epoch (the curve, and the best checkpoint kept)")
    p.add_argument("--max-steps", type=nonneg_int, default=0, help="stop each epoch after this many steps (0 = all; for tests)")
    p.add_argument("--limit-tokens", type=nonneg_int, default=0,
                   help="use only the first N tokens of each split (0 = all; for tests)")
    p.add_argument("--order", type=positive_int, default=5, help="n-gram order of the Kneser-Ney baseline")
    g = p.add_argument_group("RNN / LSTM (Zaremba et al. 2014, small)")
    g.add_argument("--hidden", type=positive_int, default=200, help="embedding and hidden size")
    g.add_argument("--layers", type=positive_int, default=2, help="LSTM layers")
    g.add_argument("--rnn-layers", type=positive_int, default=2, help="vanilla RNN layers")
    g.add_argument("--bptt", type=positive_int, default=20, help="unrolled steps (truncated BPTT window)")
    g.add_argument("--batch-size", type=positive_int, default=20, help="parallel streams")
    g.add_argument("--lr", type=positive_float, default=1.0, help="SGD learning rate of the LSTM")
    g.add_argument("--rnn-lr", type=positive_float, default=0.2, help="SGD learning rate of the vanilla RNN (diverges at 0.5)")
    g.add_argument("--lr-decay", type=positive_float, default=0.5, help="lr factor per epoch once decay starts")
    g.add_argument("--decay-after", type=int, default=-1,
                   help="epochs at the full lr before decaying (-1: the paper's 4 when --epochs >= 13, else 1)")
    g.add_argument("--clip", type=positive_float, default=5.0, help="max global gradient norm")
    g.add_argument("--init-range", type=nonneg_float, default=0.1, help="init every parameter U(-r, r) (0 = layer defaults)")
    g.add_argument("--dropout", type=probability, default=0.0, help="dropout (the small model uses none)")
    g = p.add_argument_group("window NNLM (Bengio et al. 2003)")
    g.add_argument("--context", type=positive_int, default=4, help="previous words seen (n-1 of an n-gram)")
    g.add_argument("--window-emb", type=positive_int, default=100, help="embedding size per word")
    g.add_argument("--window-hidden", type=positive_int, default=200, help="tanh hidden units")
    g.add_argument("--window-dropout", type=probability, default=0.0, help="dropout on the embeddings and hidden layer")
    g.add_argument("--window-lr", type=positive_float, default=1e-3, help="Adam learning rate")
    g.add_argument("--window-batch", type=positive_int, default=256, help="examples per step")

    def check(args, parser) -> None:
        if args.decay_after < -1:
            parser.error(f"argument --decay-after: must be -1 (automatic) or 0 or more, got {args.decay_after}")
        ranks = tr.distributed.get_world_size() if tr.distributed.is_initialized() else 1
        need = ranks * args.batch_size * (args.bptt + 1)
        if args.limit_tokens and args.limit_tokens < need:
            on = f" on each of {ranks} ranks" if ranks > 1 else ""
            parser.error(f"argument --limit-tokens: {args.limit_tokens} tokens are too few for --batch-size "
                         f"{args.batch_size}{on} x --bptt {args.bptt}; use at least {need}")

    run = start(p, argv, check=check, same=(
        "model", "epochs", "baseline_epochs", "max_steps", "limit_tokens", "order", "hidden", "layers", "rnn_layers", "bptt",
        "batch_size", "lr", "rnn_lr", "lr_decay", "decay_after", "clip", "init_range", "dropout", "context", "window_emb",
        "window_hidden", "window_dropout", "window_lr", "window_batch", "evals_per_epoch", "seed"))
    args = run.args
    wall0 = time.perf_counter()

    splits = {s: load_ptb(s) for s in ("train", "valid", "test")}
    if args.limit_tokens:
        splits = {s: t[:args.limit_tokens] for s, t in splits.items()}
    vocab = Vocab.words(load_ptb("train"), pad=None, eos="<eos>")
    eos_id = vocab.eos_id
    data = {s: vocab.encode(t) for s, t in splits.items()}
    run.log(f"PTB: {len(vocab)} words; {len(data['train']):,} / {len(data['valid']):,} / {len(data['test']):,} tokens "
            f"(train / valid / test)")

    names = MODELS if args.model == "all" else (args.model,)
    results: dict = {}
    saved, first = run.resume_state, 0
    if saved is not None:
        results, first = saved["results"], saved["model_index"]
        run.log(f"resuming from {args.resume}: " + (f"{names[first]}" if first < len(names) else "all models trained"))
    with run.training():
        for i in range(first, len(names)):
            train_model(names[i], i, results, saved if i == first else None, run, data, splits, vocab, eos_id)
    if not run.is_main:
        return {"ranks": run.world}
    summary = report(names, results, run, vocab, wall0)
    return summary


def train_model(name: str, i: int, results: dict, saved: dict | None, run: Run, data: dict, splits: dict, vocab: Vocab,
                eos_id: int) -> None:
    """Train (or count) one model into ``results[name]``; ``saved`` continues it from a training state."""
    args = run.args

    def outer() -> dict:  # the rest of the training state: which model, and the finished ones' results
        return {"model_index": i, "results": results}

    t0 = time.perf_counter()
    if name == "ngram":
        if run.is_main:  # counting needs no data parallelism: rank 0 alone does it
            lm = KneserNeyLM(order=args.order).fit(splits["train"])
            results[name] = {"valid_ppl": lm.perplexity(splits["valid"], context=["<eos>"]),
                             "test_ppl": lm.perplexity(splits["test"], context=["<eos>"]),
                             "train_seconds": time.perf_counter() - t0, "order": args.order}
            run.log(f"ngram: KN{args.order} valid ppl {results[name]['valid_ppl']:.1f}  "
                    f"test ppl {results[name]['test_ppl']:.1f}")
        else:
            results[name] = {}  # rank 0 has the numbers
    else:
        tr.manual_seed(args.seed)
        model = build(name, len(vocab), args)
        run.log(f"{name}: {model.num_parameters():,} parameters")
        run.announce_compile(*{"window": ("adam",), "rnn": ("rnn_", "sgd"), "lstm": ("lstm", "sgd")}[name], "scatter", "xent")
        epochs = args.epochs if name == "lstm" else args.baseline_epochs
        if name == "window":
            results[name] = train_window(model, data, eos_id, run, epochs, saved, outer)
        else:
            results[name] = train_recurrent(name, model, data, eos_id, run, epochs, saved, outer)
        results[name]["wall_seconds"] = time.perf_counter() - t0
    run.save_state({"model_index": i + 1, "results": results, "current": None})  # this model is done


def report(names: tuple, results: dict, run: Run, vocab: Vocab, wall0: float) -> dict:
    """The table, the plot and results.json (rank 0)."""
    args, out = run.args, run.out

    label = {"ngram": f"Kneser-Ney {args.order}-gram", "window": f"window NNLM (n={args.context + 1})",
             "rnn": f"RNN {args.rnn_layers}x{args.hidden}", "lstm": f"LSTM {args.layers}x{args.hidden}"}
    rows = []
    for name in names:
        r, pub = results[name], PUBLISHED[name]
        epochs = "-" if name == "ngram" else f"{r['history'][-1]['epoch']:.2g}"
        minutes = r.get("wall_seconds", r["train_seconds"]) / 60
        rows.append([label[name], epochs, f"{r['valid_ppl']:.1f}", f"{r['test_ppl']:.1f}",
                     "—" if pub["valid"] is None else pub["valid"], "—" if pub["test"] is None else pub["test"],
                     f"{minutes:.1f}" if minutes >= 0.1 else "<0.1"])
    run.log()
    table = print_table(rows, ["model", "epochs", "valid ppl", "test ppl", "paper valid", "paper test", "minutes"],
                        title="PTB word-level perplexity (lower is better); paper figures:")
    for name in names:
        run.log(f"  {label[name]}: {PUBLISHED[name]['source']}")

    series = [(label[n], [h["epoch"] for h in results[n]["history"]], [h["valid_ppl"] for h in results[n]["history"]])
              for n in names if n != "ngram"]
    if "ngram" in results and series:  # the count model as a horizontal line to beat
        last = max(h["epoch"] for n in names if n != "ngram" for h in results[n]["history"])
        series.append((label["ngram"], [0, last], [results["ngram"]["valid_ppl"]] * 2))
    plot = run.save_plot("valid_ppl.png", series, "epoch", "validation perplexity",
                         "PTB validation perplexity") if series else None
    summary = {"example": "word_lm", "args": run.flags(), "ranks": run.world, "state": run.state_path(),
               "vocab_size": len(vocab), "models": results,
               "published": {n: PUBLISHED[n] for n in names}, "table": table, "plot": plot,
               "wall_seconds": time.perf_counter() - wall0}
    run.write_results(summary)
    run.note(f"\nresults: {os.path.join(out, 'results.json')}" + (f"  plot: {plot}" if plot else ""))
    return summary


if __name__ == "__main__":
    main()
