"""char_lm: a character-level language model on Tiny Shakespeare (RNN, LSTM or GRU).

Training is truncated backpropagation through time: the 1M training characters are cut into
``--batch`` parallel streams, read in windows of ``--seq`` characters; the hidden state is
carried from one window to the next but ``detach()``-ed, so gradients flow back at most one
window. Gradients are clipped to a global norm of ``--clip``; Adam with a cosine-decayed
learning rate. Validation is reported in bits per character (mean cross-entropy / ln 2).

    python examples/char_lm.py                        # LSTM 256, ~4 min on two cores (see README)
    python examples/char_lm.py --model gru --hidden 384 --steps 3000
    python examples/char_lm.py --sample --checkpoint runs/char_lm/model.npz --prime "ROMEO:" --temperature 0.8

Writes ``model.npz`` (best validation; the vocabulary and model configuration travel in its
metadata), ``samples.txt``, ``results.json`` and ``loss.png`` under ``--out``. Data: the 90/5/5
contiguous split of ``tinygrad_rnn.data.split_text``.
"""
from __future__ import annotations

import math
import os
import sys
import time

import numpy as np
from _common import Progress, make_parser, print_table, save_plot, setup, write_results

import tinygrad_rnn as tr
from tinygrad_rnn import nn, optim
from tinygrad_rnn.data import Vocab, batchify, bptt_batches, load_tinyshakespeare, split_text
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.nn.utils import clip_grad_norm_

LN2 = math.log(2.0)
LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class CharLM(nn.Module):
    """Embedding -> recurrent layer(s) -> Linear to next-character logits."""

    def __init__(self, vocab_size: int, model: str = "lstm", hidden: int = 256, layers: int = 1, emb: int = 64,
                 dropout: float = 0.0, seed: int = 0):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, model=model, hidden=hidden, layers=layers, emb=emb, dropout=dropout)
        self.embed = nn.Embedding(vocab_size, emb, seed=seed)
        self.rnn = LAYERS[model](emb, hidden, num_layers=layers, batch_first=True, dropout=dropout, seed=seed + 1)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size, seed=seed + 2)

    def forward(self, ids: np.ndarray, state=None):
        """ids (B, T) -> logits (B, T, V) and the final state."""
        out, state = self.rnn(self.embed(ids), state)
        return self.head(self.drop(out)), state


def detach_state(state):
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def evaluate(model: CharLM, data: np.ndarray, seq: int) -> float:
    """Mean cross-entropy (nats/char) over a batchified split, state carried across windows."""
    model.eval()
    total, count, state = 0.0, 0, None
    with tr.no_grad():
        for x, y in bptt_batches(data, seq):
            logits, state = model(x, state)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            count += y.size
    model.train()
    return total / count


def sample(model: CharLM, vocab: Vocab, prime: str, length: int, temperature: float, rng: np.random.Generator) -> str:
    """Feed ``prime`` through the model, then draw ``length`` characters from softmax(logits / temperature)."""
    unknown = sorted({c for c in prime if c not in vocab})
    if unknown:
        raise SystemExit(f"--prime contains characters outside the vocabulary: {unknown}")
    model.eval()
    out = list(prime)
    with tr.no_grad():
        ids = vocab.encode(prime or "\n")[None, :]
        logits, state = model(ids)
        for _ in range(length):
            z = logits.numpy()[0, -1].astype(np.float64) / max(temperature, 1e-6)
            p = np.exp(z - z.max())
            nxt = int(rng.choice(len(p), p=p / p.sum()))
            out.append(vocab.itos[nxt])
            logits, state = model(np.array([[nxt]]), state)
    model.train()
    return "".join(out)


def load_model(path: str, device: str = "cpu") -> tuple[CharLM, Vocab, dict]:
    """Rebuild a CharLM and its vocabulary from a checkpoint written by this script."""
    state, meta = nn.load(path)
    if "config" not in meta or "vocab" not in meta:
        raise SystemExit(f"{path} was not written by char_lm.py (its metadata has no config/vocab)")
    model = CharLM(**meta["config"])
    model.load_state_dict(state)
    return model.to(device), Vocab.from_dict(meta["vocab"]), meta


def main(argv: list[str] | None = None) -> dict:
    p = make_parser("char_lm: character-level RNN/LSTM/GRU language model on Tiny Shakespeare (truncated BPTT)",
                    epochs=10)
    p.add_argument("--model", choices=sorted(LAYERS), default="lstm", help="recurrent layer")
    p.add_argument("--hidden", type=int, default=256, help="hidden size")
    p.add_argument("--layers", type=int, default=1, help="stacked recurrent layers")
    p.add_argument("--emb", type=int, default=64, help="character embedding size")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout on the recurrent outputs")
    p.add_argument("--batch", type=int, default=32, help="parallel streams per step")
    p.add_argument("--seq", type=int, default=64, help="truncated-BPTT window (characters)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (cosine-decayed to lr/10)")
    p.add_argument("--clip", type=float, default=5.0, help="global gradient-norm clip")
    p.add_argument("--steps", type=int, default=2000, help="training steps (windows); 0 = run all --epochs")
    p.add_argument("--minutes", type=float, default=0.0, help="stop training after this many minutes (0 = no limit)")
    p.add_argument("--eval-every", type=int, default=250, help="validate every N steps")
    p.add_argument("--max-chars", type=int, default=0, help="use only the first N characters of the text (0 = all)")
    p.add_argument("--sample", action="store_true", help="only sample from --checkpoint, no training")
    p.add_argument("--checkpoint", default=None, help="checkpoint to sample from (default: OUT/model.npz)")
    p.add_argument("--prime", default="ROMEO:", help="text to start the samples with")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (lower = safer)")
    p.add_argument("--length", type=int, default=500, help="characters to sample")
    args = p.parse_args(argv)
    out = setup(args)
    rng = np.random.default_rng(args.seed)

    if args.sample:
        path = args.checkpoint or os.path.join(out, "model.npz")
        model, vocab, meta = load_model(path, args.device)
        print(f"# {path}: {meta['config']}, val {meta.get('val_bpc', float('nan')):.3f} bits/char, "
              f"temperature {args.temperature}")
        print(sample(model, vocab, args.prime, args.length, args.temperature, rng))
        return {"checkpoint": path}

    t0 = time.perf_counter()
    text = load_tinyshakespeare()
    if args.max_chars:
        text = text[: args.max_chars]
    vocab = Vocab.chars(text)
    train_txt, val_txt, test_txt = split_text(text, 0.05, 0.05)
    train_ids, val_ids, test_ids = (vocab.encode(s) for s in (train_txt, val_txt, test_txt))
    eval_batch = max(1, min(args.batch, len(val_ids) // (2 * args.seq)))
    val_data, test_data = batchify(val_ids, eval_batch), batchify(test_ids, eval_batch)
    model = CharLM(len(vocab), args.model, args.hidden, args.layers, args.emb, args.dropout, seed=args.seed).to(args.device)
    params = list(model.parameters())
    opt = optim.Adam(params, lr=args.lr)
    per_epoch = (len(train_ids) // args.batch - 1 + args.seq - 1) // args.seq
    total_steps = per_epoch * args.epochs if args.steps <= 0 else min(args.steps, per_epoch * args.epochs)
    print(f"Tiny Shakespeare: {len(vocab)} characters; train/val/test {len(train_ids):,}/{len(val_ids):,}/"
          f"{len(test_ids):,}; {args.model.upper()} hidden {args.hidden} x{args.layers}, {model.num_parameters():,} "
          f"parameters; batch {args.batch} x seq {args.seq}; {total_steps} steps ({total_steps / per_epoch:.2f} epochs)")
    print(f"before training: val {evaluate(model, val_data, args.seq) / LN2:.3f} bits/char "
          f"(uniform over {len(vocab)} = {math.log2(len(vocab)):.3f})", flush=True)

    history: list[dict] = []
    best = float("inf")
    ckpt = os.path.join(out, "model.npz")
    step, window_losses, train_curve = 0, [], []
    bar = Progress(total_steps, "train", disable=args.quiet)
    deadline = t0 + 60 * args.minutes if args.minutes > 0 else math.inf
    stop = False

    def validate() -> None:
        nonlocal best
        v = evaluate(model, val_data, args.seq) / LN2
        tr_bpc = float(np.mean(window_losses)) / LN2 if window_losses else float("nan")
        window_losses.clear()
        history.append({"step": step, "train_bpc": tr_bpc, "val_bpc": v, "seconds": time.perf_counter() - t0})
        print(f"step {step:5d}  train {tr_bpc:.3f}  val {v:.3f} bits/char  ({history[-1]['seconds']:.0f} s)", flush=True)
        if v < best:
            best = v
            model.save(ckpt, vocab=vocab.to_dict(), config=model.config, val_bpc=v, step=step)

    for epoch in range(args.epochs):
        offset = 0 if epoch == 0 else int(rng.integers(args.seq))  # shift the window boundaries each epoch
        state = None
        for x, y in bptt_batches(batchify(train_ids[offset:], args.batch), args.seq):
            lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(total_steps, 1))))
            for g in opt.param_groups:
                g["lr"] = lr
            logits, state = model(x, state)
            state = detach_state(state)  # truncated BPTT: keep the values, cut the graph
            loss = F.cross_entropy(logits.reshape(-1, len(vocab)), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            norm = clip_grad_norm_(params, args.clip).item()
            opt.step()
            step += 1
            window_losses.append(loss.item())
            train_curve.append(loss.item() / LN2)
            bar.update(bpc=train_curve[-1], gnorm=norm, lr=lr)
            if step % args.eval_every == 0 or step == total_steps:
                validate()
            if step >= total_steps or time.perf_counter() > deadline:
                stop = True
                break
        if stop:
            break
    bar.close()
    if not history or history[-1]["step"] != step:
        validate()
    train_seconds = time.perf_counter() - t0

    model, _, meta = load_model(ckpt, args.device)  # the best validation checkpoint
    val_bpc = meta["val_bpc"]
    test_bpc = evaluate(model, test_data, args.seq) / LN2
    samples = [f"--- temperature {temp}, prime {args.prime!r} ---\n"
               + sample(model, vocab, args.prime, args.length, temp, rng) for temp in (0.5, 0.8, 1.0)]
    with open(os.path.join(out, "samples.txt"), "w") as f:
        f.write("\n\n".join(samples) + "\n")
    print("\n" + samples[1])
    save_plot(os.path.join(out, "loss.png"),
              [("train (per step)", range(1, len(train_curve) + 1), train_curve),
               ("validation", [h["step"] for h in history], [h["val_bpc"] for h in history])],
              "step", "bits per character", f"char_lm: {args.model.upper()} {args.hidden} on Tiny Shakespeare")
    print()
    print_table([[args.model, args.hidden, args.layers, model.num_parameters(), step, f"{step / per_epoch:.2f}",
                  history[-1]["train_bpc"], val_bpc, test_bpc, train_seconds / 60]],
                ["model", "hidden", "layers", "params", "steps", "epochs", "train bpc", "val bpc", "test bpc", "minutes"],
                title="results (bits per character; best-validation checkpoint)")
    results = {"model": args.model, "config": model.config, "steps": step, "epochs": step / per_epoch,
               "val_bpc": val_bpc, "test_bpc": test_bpc, "best_step": meta["step"],
               "val_nats": val_bpc * LN2, "history": history, "seconds": train_seconds,
               "args": {k: v for k, v in vars(args).items()}, "checkpoint": ckpt}
    write_results(out, results)
    print(f"wrote {ckpt}, samples.txt, loss.png, results.json to {out}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
