"""Many-to-many with different lengths: an LSTM encoder-decoder (Sutskever et al. 2014) on a toy translation.

The default task translates English number words into digits, a small "translation" whose output
length and word order differ from the input's and which needs structure (zeros appear from nowhere):

    seven hundred five thousand twelve   ->   7 0 5 0 1 2

The encoder LSTM reads the source (reversed, as Sutskever et al. did, so that the first words
sit next to the decoder's start); its final ``(h, c)`` initialises the decoder LSTM. Training uses
teacher forcing (the decoder reads the true previous target token); testing decodes greedily from
``<bos>`` until ``<eos>``. The numbers in the test set never occur in training.

    python examples/seq2seq.py                      # number words -> digits
    python examples/seq2seq.py --task reverse       # reverse a digit string
    python examples/seq2seq.py --task sort          # sort a digit string
"""
from __future__ import annotations

import os
import time

import numpy as np
from _common import make_parser, positive_float, positive_int, print_table, start

import tinygrad_rnn as tr
import tinygrad_rnn.nn.functional as F
from tinygrad_rnn import nn, optim
from tinygrad_rnn.data import Vocab, pad_batch
from tinygrad_rnn.nn.utils import clip_grad_norm_

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen").split()
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
DIGITS = list("0123456789")


def number_words(n: int) -> list[str]:
    """``number_words(705012)`` -> seven hundred five thousand twelve (0 <= n < 1,000,000)."""
    if n < 20:
        return [ONES[n]]
    if n < 100:
        return [TENS[n // 10 - 2]] + ([ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [ONES[n // 100], "hundred"] + (number_words(n % 100) if n % 100 else [])
    return number_words(n // 1000) + ["thousand"] + (number_words(n % 1000) if n % 1000 else [])


def make_task(task: str, n_examples: int, max_len: int, rng: np.random.Generator) -> tuple[list, list, list, list]:
    """Distinct (source, target) token-list pairs, and the source / target alphabets."""
    seen: set = set()
    pairs = []
    while len(pairs) < n_examples:
        if task == "numbers":
            digits = int(rng.integers(1, max_len + 1))  # as many 2-digit numbers as 6-digit ones
            n = int(rng.integers(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits))
            key, src, tgt = n, number_words(n), list(str(n))
        else:
            length = int(rng.integers(1, max_len + 1))
            src = [str(d) for d in rng.integers(0, 10, size=length)]
            key, tgt = " ".join(src), (src[::-1] if task == "reverse" else sorted(src))
        if key in seen:
            continue
        seen.add(key)
        pairs.append((src, tgt))
    src_alphabet = ONES + TENS + ["hundred", "thousand"] if task == "numbers" else DIGITS
    return [s for s, _ in pairs], [t for _, t in pairs], src_alphabet, DIGITS


class Seq2Seq(nn.Module):
    """Encoder LSTM -> final (h, c) -> decoder LSTM -> Linear over the target vocabulary."""

    def __init__(self, src_size: int, tgt_size: int, emb: int, hidden: int, layers: int):
        super().__init__()
        self.hidden = hidden
        self.src_embedding = nn.Embedding(src_size, emb, padding_idx=0)
        self.tgt_embedding = nn.Embedding(tgt_size, emb, padding_idx=0)
        self.encoder = nn.LSTM(emb, hidden, layers, batch_first=True)
        self.decoder = nn.LSTM(emb, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, tgt_size)

    def encode(self, src: tr.Tensor, lengths: np.ndarray):
        # lengths=: h_n, c_n are each source's state after its own last word, not after the padding
        _, state = self.encoder(self.src_embedding(src), lengths=lengths)
        return state

    def forward(self, src: tr.Tensor, src_len: np.ndarray, tgt_in: tr.Tensor) -> tr.Tensor:
        """Teacher forcing: logits (B*T, V) for every target position given the true previous tokens."""
        out, _ = self.decoder(self.tgt_embedding(tgt_in), self.encode(src, src_len))
        return self.out(out.reshape(-1, self.hidden))

    def greedy(self, src: tr.Tensor, src_len: np.ndarray, bos: int, eos: int, max_len: int) -> list[list[int]]:
        """Decode one token at a time, feeding back the argmax, until every row has produced <eos>."""
        with tr.no_grad():
            state = self.encode(src, src_len)
            b = src.shape[0]
            token = np.full((b, 1), bos, dtype=np.int64)
            outputs = np.zeros((b, max_len), dtype=np.int64)
            done = np.zeros(b, dtype=bool)
            for t in range(max_len):
                out, state = self.decoder(self.tgt_embedding(tr.tensor(token, device=src.device)), state)
                token = self.out(out.reshape(b, self.hidden)).numpy().argmax(-1)[:, None]
                outputs[:, t] = token[:, 0]
                done |= token[:, 0] == eos
                if done.all():
                    break
        result = []
        for row in outputs:
            ids = row.tolist()
            result.append(ids[:ids.index(eos)] if eos in ids else ids)
        return result


def batch_arrays(src_ids: list, tgt_ids: list, bos: int, eos: int):
    src, src_len = pad_batch(src_ids)
    tgt_in, _ = pad_batch([np.concatenate([[bos], t]) for t in tgt_ids])
    tgt_out, _ = pad_batch([np.concatenate([t, [eos]]) for t in tgt_ids])  # pad (0) positions are ignored
    return src, src_len, tgt_in, tgt_out


def evaluate(model: Seq2Seq, src_ids: list, tgt_ids: list, vocab: Vocab, device: str, batch: int = 500):
    """Exact-sequence accuracy, token accuracy (position by position, <eos> included) and the outputs."""
    bos, eos = vocab.stoi["<bos>"], vocab.stoi["<eos>"]
    model.eval()
    preds: list[list[int]] = []
    max_len = max(len(t) for t in tgt_ids) + 2
    for i in range(0, len(src_ids), batch):
        src, src_len = pad_batch(src_ids[i:i + batch])
        preds += model.greedy(tr.tensor(src, device=device), src_len, bos, eos, max_len)
    model.train()
    exact = np.mean([p == t.tolist() for p, t in zip(preds, tgt_ids)])
    hits = total = 0
    for p, t in zip(preds, tgt_ids):
        ref, hyp = t.tolist() + [eos], p + [eos]
        hits += sum(a == b for a, b in zip(ref, hyp))
        total += len(ref)
    return float(exact), hits / total, preds


def main(argv=None) -> dict:
    p = make_parser("seq2seq", "seq2seq: LSTM encoder-decoder on a toy translation task", epochs=6)
    p.add_argument("--task", default="numbers", choices=("numbers", "reverse", "sort"),
                   help="numbers: English number words -> digits; reverse/sort: a digit string")
    p.add_argument("--max-len", type=positive_int, default=6, help="longest number (digits) or digit string")
    p.add_argument("--train-size", type=positive_int, default=20000, help="training pairs")
    p.add_argument("--test-size", type=positive_int, default=2000, help="held-out pairs (and as many for validation)")
    p.add_argument("--emb", type=positive_int, default=32, help="embedding size")
    p.add_argument("--hidden", type=positive_int, default=128, help="LSTM hidden size")
    p.add_argument("--layers", type=positive_int, default=1, help="LSTM layers (encoder and decoder)")
    p.add_argument("--lr", type=positive_float, default=3e-3, help="Adam learning rate")
    p.add_argument("--batch-size", type=positive_int, default=64, help="pairs per batch")
    p.add_argument("--clip", type=positive_float, default=1.0, help="max global gradient norm")
    p.add_argument("--no-reverse-source", action="store_true", help="feed the source in its natural order")

    def check(args, parser) -> None:
        # distinct pairs: the task cannot hold more than its number of different inputs
        if args.task == "numbers":
            distinct = 10 ** min(args.max_len, 6)
        else:
            distinct = sum(10 ** k for k in range(1, args.max_len + 1))
        if args.task == "numbers" and args.max_len > 6:
            parser.error(f"argument --max-len: the numbers task goes up to 6 digits (999,999), got {args.max_len}")
        need = args.train_size + 2 * args.test_size
        if need > distinct:
            parser.error(f"argument --train-size: {args.train_size} training + 2 x {args.test_size} held-out pairs need "
                         f"{need} distinct inputs, but --max-len {args.max_len} allows only {distinct}")

    run = start(p, argv, check=check)
    args = run.args
    out = run.out
    wall0 = time.perf_counter()
    device = args.device
    rng = np.random.default_rng(args.seed)

    n_held = 2 * args.test_size
    srcs, tgts, src_alphabet, tgt_alphabet = make_task(args.task, args.train_size + n_held, args.max_len, rng)
    src_vocab = Vocab.from_itos(["<pad>"] + src_alphabet, pad="<pad>")
    tgt_vocab = Vocab.from_itos(["<pad>", "<bos>", "<eos>"] + tgt_alphabet, pad="<pad>")
    bos, eos = tgt_vocab.stoi["<bos>"], tgt_vocab.stoi["<eos>"]
    flip = (lambda s: s[::-1]) if not args.no_reverse_source else (lambda s: s)
    src_ids = [flip(src_vocab.encode(s)) for s in srcs]
    tgt_ids = [tgt_vocab.encode(t) for t in tgts]
    tr_idx = np.arange(args.train_size)
    va_idx = np.arange(args.train_size, args.train_size + args.test_size)
    te_idx = np.arange(args.train_size + args.test_size, args.train_size + n_held)
    run.log(f"task {args.task}: {len(tr_idx)} training / {len(va_idx)} validation / {len(te_idx)} test pairs "
            f"(disjoint), e.g. {' '.join(srcs[0])} -> {' '.join(tgts[0])}")

    tr.manual_seed(args.seed)
    model = Seq2Seq(len(src_vocab), len(tgt_vocab), args.emb, args.hidden, args.layers).to(device)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    run.log(f"seq2seq: {model.num_parameters():,} parameters")
    run.announce_compile("lstm", "adam", "scatter", "xent")
    ckpt = run.path("seq2seq.npz")
    history, best, t0 = [], -1.0, time.perf_counter()
    steps = int(np.ceil(len(tr_idx) / args.batch_size))
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(tr_idx)
        bar = run.progress(steps, desc=f"epoch {epoch}/{args.epochs}")
        tot, n = 0.0, 0
        for i in range(steps):
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            src, src_len, tgt_in, tgt_out = batch_arrays([src_ids[j] for j in idx], [tgt_ids[j] for j in idx], bos, eos)
            logits = model(tr.tensor(src, device=device), src_len, tr.tensor(tgt_in, device=device))
            loss = F.cross_entropy(logits, tr.tensor(tgt_out.reshape(-1), device=device), ignore_index=0)
            opt.zero_grad()
            loss.backward()
            clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            tot += loss.item()
            n += 1
            bar.update(1, loss=tot / n)
        bar.close()
        val_exact, val_tok, _ = evaluate(model, [src_ids[j] for j in va_idx], [tgt_ids[j] for j in va_idx], tgt_vocab, device)
        history.append({"epoch": epoch, "train_loss": tot / n, "valid_exact": val_exact, "valid_token": val_tok})
        run.log(f"epoch {epoch}: train loss {tot / n:.4f} (mean over the epoch)  valid exact {val_exact:.4f}  "
                f"token {val_tok:.4f}")
        if val_exact > best:
            best = val_exact
            run.save_checkpoint(model, "seq2seq.npz", epoch=epoch, valid_exact=val_exact, task=args.task, emb=args.emb,
                                hidden=args.hidden, layers=args.layers, src_itos=src_vocab.itos, tgt_itos=tgt_vocab.itos)
    train_seconds = time.perf_counter() - t0
    meta = model.load(ckpt)
    test_src, test_tgt = [src_ids[j] for j in te_idx], [tgt_ids[j] for j in te_idx]
    exact, tok, preds = evaluate(model, test_src, test_tgt, tgt_vocab, device)

    sep = "" if args.task == "numbers" else " "
    examples = []
    wrong = [j for j, pr in zip(te_idx, preds) if pr != tgt_ids[j].tolist()]
    show = list(te_idx[:4]) + [j for j in wrong if j not in te_idx[:4]][:2]  # a few, and a few mistakes
    for j in show:
        k = int(np.where(te_idx == j)[0][0])
        hyp = sep.join(tgt_vocab.decode(preds[k])) if preds[k] else ""
        examples.append([" ".join(srcs[j]), sep.join(tgts[j]), hyp, "ok" if preds[k] == tgt_ids[j].tolist() else "WRONG"])
    run.log()
    print_table(examples, ["source", "target", "greedy output", "verdict"], title="held-out translations:")
    run.log()
    table = print_table([[f"LSTM {args.layers}x{args.hidden} enc-dec (epoch {meta['epoch']})", f"{100 * best:.2f}",
                          f"{100 * exact:.2f}", f"{100 * tok:.2f}"]],
                        ["model", "valid exact %", "test exact %", "test token %"],
                        title=f"task '{args.task}': held-out accuracy, greedy decoding")
    plot = run.save_plot("valid_accuracy.png",
                         [("exact sequence", [h["epoch"] for h in history], [h["valid_exact"] for h in history]),
                          ("token", [h["epoch"] for h in history], [h["valid_token"] for h in history])],
                         "epoch", "validation accuracy", f"seq2seq '{args.task}'")
    results = {"example": "seq2seq", "args": run.flags(), "task": args.task, "test_exact": exact, "test_token": tok,
               "valid_exact": best, "best_epoch": meta["epoch"], "parameters": model.num_parameters(),
               "train_seconds": train_seconds, "checkpoint": ckpt, "history": history,
               "examples": [dict(zip(("source", "target", "output", "verdict"), e)) for e in examples],
               "table": table, "plot": plot, "wall_seconds": time.perf_counter() - wall0}
    run.write_results(results)
    run.note(f"\nresults: {os.path.join(out, 'results.json')}" + (f"  plot: {plot}" if plot else ""))
    return results


if __name__ == "__main__":
    main()
