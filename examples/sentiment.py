"""Sentiment of SST-2 sentences: bag-of-words naive Bayes vs an LSTM that reads in order (many-to-one).

    "The concert was boring for the first 15 minutes while the band warmed up
     but then was terribly exciting."

Naive Bayes adds up per-word evidence, so "boring" and "terribly" pull it towards negative
whatever their order; an LSTM reads the sentence left to right and classifies its final state.

Model: Embedding -> LSTM (``lengths=`` so padding is skipped; ``h_n`` is each sentence's state
at its own last word; both directions concatenated with ``--bidirectional``) -> Linear -> softmax.
Trained on the 77,189 labelled phrases of the SST training trees (``--sentences-only``: the
6,920 training sentences), in length buckets, with Adam; the checkpoint with the best dev
accuracy is kept and evaluated once on test.

    python examples/sentiment.py                      # phrases, LSTM
    python examples/sentiment.py --bidirectional      # BiLSTM
    python examples/sentiment.py --sentences-only --epochs 10   # the sentence-level training set
    python examples/sentiment.py --nb-only            # the naive Bayes baselines alone, in seconds
"""
from __future__ import annotations

import math
import os
import re
import time

import numpy as np
from _common import make_parser, nonneg_int, positive_float, positive_int, print_table, probability, start

import tinygrad_rnn as tr
import tinygrad_rnn.nn.functional as F
from tinygrad_rnn import nn, optim
from tinygrad_rnn.classic import MultinomialNB
from tinygrad_rnn.data import DistributedSampler, Vocab, bucket_batches, load_sst2, pad_batch
from tinygrad_rnn.nn.utils import clip_grad_norm_

LABELS = ("negative", "positive")

# Test accuracy (%) on binary SST-2 sentences as published. Socher et al. 2013, Table 1; Tai et al.
# 2015, Table 2 (mean of 5 runs, 300-d GloVe vectors fine-tuned; we start from random vectors).
PUBLISHED = {
    "NB": (81.8, "Socher et al. 2013"),
    "BiNB": (83.1, "Socher et al. 2013"),
    "LSTM": (84.9, "Tai et al. 2015"),
    "BiLSTM": (87.5, "Tai et al. 2015"),
}

LECTURE = "The concert was boring for the first 15 minutes while the band warmed up but then was terribly exciting."
PROBES = [
    LECTURE,
    "good", "not good", "bad", "not bad",
    "The film was terribly exciting.",
    "The film was terribly boring.",
    "Boring at first, but then exciting.",
    "Exciting at first, but then boring.",
    "It is not a good movie.",
    "It isn't a bad movie at all.",
]


def sst_tokenize(text: str) -> list[str]:
    """Lower-case, PTB-style tokens as in SST: ``"It isn't (very) good."`` -> it is n't -lrb- very -rrb- good ."""
    t = text.lower()
    t = re.sub(r"n't\b", " n't", t)
    t = re.sub(r"'(s|re|ve|ll|d|m)\b", r" '\1", t)
    t = t.replace("(", " -lrb- ").replace(")", " -rrb- ")
    t = re.sub(r"([.,!?;:\"])", r" \1 ", t)
    return t.split()


class SentimentLSTM(nn.Module):
    """Embedding -> (Bi)LSTM -> final state(s) -> Linear(2)."""

    def __init__(self, vocab_size: int, emb_size: int, hidden_size: int, bidirectional: bool, dropout: float,
                 emb_dropout: float):
        super().__init__()
        self.dirs = 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=0)
        self.emb_drop = nn.Dropout(emb_dropout)
        self.lstm = nn.LSTM(emb_size, hidden_size, batch_first=True, bidirectional=bidirectional)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size * self.dirs, len(LABELS))

    def forward(self, ids: tr.Tensor, lengths: np.ndarray) -> tr.Tensor:
        """ids (B, T) padded, lengths (B,) -> logits (B, 2)."""
        _, (h_n, _) = self.lstm(self.emb_drop(self.embedding(ids)), lengths=lengths)
        final = h_n[0] if self.dirs == 1 else tr.cat([h_n[0], h_n[1]], dim=1)  # forward, backward
        return self.classifier(self.drop(final))


def predict_proba(model: SentimentLSTM, docs: list[np.ndarray], device: str, batch_size: int = 256) -> np.ndarray:
    """P(positive) per document, in the given order."""
    model.eval()
    probs = np.empty(len(docs))
    order = np.argsort([len(d) for d in docs], kind="stable")  # similar lengths together: less padding
    with tr.no_grad():
        for i in range(0, len(docs), batch_size):
            idx = order[i:i + batch_size]
            ids, lengths = pad_batch([docs[j] for j in idx])
            probs[idx] = model(tr.tensor(ids, device=device), lengths).softmax(-1).numpy()[:, 1]
    model.train()
    return probs


def encode(vocab: Vocab, docs: list[list[str]]) -> list[np.ndarray]:
    # an empty document (none in SST) would have no last step: give it one <unk>
    return [vocab.encode(d) if len(d) else np.array([vocab.unk_id]) for d in docs]


def main(argv=None) -> dict:
    p = make_parser("sentiment", "sentiment: SST-2, naive Bayes vs LSTM/BiLSTM (many-to-one)", epochs=3, save_every=500,
                    distributed=True)
    p.add_argument("--sentences-only", action="store_true",
                   help="train on the 6,920 sentences instead of the phrases (11x fewer: give --epochs 10)")
    p.add_argument("--bidirectional", action="store_true", help="BiLSTM: concatenate both directions' final states")
    p.add_argument("--emb", type=positive_int, default=200, help="embedding size")
    p.add_argument("--hidden", type=positive_int, default=168, help="LSTM hidden size (Tai et al. use 168)")
    p.add_argument("--dropout", type=probability, default=0.5, help="dropout before the classifier")
    p.add_argument("--emb-dropout", type=probability, default=0.3, help="dropout on the embeddings")
    p.add_argument("--lr", type=positive_float, default=2e-3, help="Adam learning rate")
    p.add_argument("--batch-size", type=positive_int, default=64, help="sentences per bucketed batch")
    p.add_argument("--clip", type=positive_float, default=5.0, help="max global gradient norm")
    p.add_argument("--evals-per-epoch", type=positive_int, default=4, help="dev evaluations (checkpoint selection) per epoch")
    p.add_argument("--patience", type=positive_int, default=4,
                   help="stop after this many dev evaluations in a row without improvement")
    p.add_argument("--nb-only", action="store_true", help="only the naive Bayes baselines (seconds), no LSTM")
    p.add_argument("--limit", type=nonneg_int, default=0, help="use only the first N training examples (0 = all; for tests)")
    run = start(p, argv, same=("sentences_only", "bidirectional", "emb", "hidden", "dropout", "emb_dropout", "lr",
                               "batch_size", "clip", "evals_per_epoch", "patience", "limit", "seed", "epochs"))
    args = run.args
    out = run.out
    wall0 = time.perf_counter()
    device = args.device

    train_docs, train_y = load_sst2("train", phrases=not args.sentences_only)
    sent_docs, sent_y = load_sst2("train")
    dev_docs, dev_y = load_sst2("dev")
    test_docs, test_y = load_sst2("test")
    if args.limit:
        train_docs, train_y = train_docs[:args.limit], train_y[:args.limit]
        sent_docs, sent_y = sent_docs[:args.limit], sent_y[:args.limit]
    what = "sentences" if args.sentences_only else "phrases"
    run.log(f"SST-2: {len(train_docs):,} training {what}, {len(dev_docs)} dev / {len(test_docs)} test sentences")

    # -- naive Bayes: on the sentences (the classic baseline) and on the LSTM's training data
    nb_rows = {}
    for name, (docs, y) in {"sentences": (sent_docs, sent_y), what: (train_docs, train_y)}.items():
        nb = MultinomialNB(alpha=1.0).fit(docs, y)
        nb_rows[name] = {"model": nb, "dev_acc": nb.score(dev_docs, dev_y), "test_acc": nb.score(test_docs, test_y)}
    nb = nb_rows[what]["model"]
    nb_results = {k: {"dev_acc": v["dev_acc"], "test_acc": v["test_acc"]} for k, v in nb_rows.items()}
    if args.nb_only:
        print_table([[f"naive Bayes ({k})", f"{100 * v['dev_acc']:.2f}", f"{100 * v['test_acc']:.2f}"]
                     for k, v in nb_results.items()], ["model", "dev acc %", "test acc %"],
                    title="SST-2 binary sentence classification, naive Bayes only")
        results = {"example": "sentiment", "args": run.flags(), "naive_bayes": nb_results,
                   "wall_seconds": time.perf_counter() - wall0}
        run.write_results(results)
        return results

    # -- LSTM
    vocab = Vocab.words(w for d in train_docs for w in d)  # <pad>=0, <unk>=1
    tr.manual_seed(args.seed)
    model = SentimentLSTM(len(vocab), args.emb, args.hidden, args.bidirectional, args.dropout, args.emb_dropout)
    model.embedding.weight.data[vocab.unk_id] = 0.0  # <unk> never occurs in training: a neutral zero vector
    model.to(device)
    name = "BiLSTM" if args.bidirectional else "LSTM"
    run.log(f"{name}: {model.num_parameters():,} parameters, vocabulary {len(vocab):,}")
    run.announce_compile("lstm", "adam", "scatter", "xent")
    opt = optim.Adam(model.parameters(), lr=args.lr)
    train_ids, dev_ids, test_ids = encode(vocab, train_docs), encode(vocab, dev_docs), encode(vocab, test_docs)
    # under MPI each rank trains on its shard (DistributedSampler) and gradients are averaged
    sampler = DistributedSampler(len(train_ids), seed=args.seed) if run.world > 1 else None
    shard = len(sampler) if sampler is not None else len(train_ids)
    steps_per_epoch = math.ceil(shard / args.batch_size)
    eval_every = math.ceil(steps_per_epoch / args.evals_per_epoch)
    rng = np.random.default_rng(args.seed)
    ckpt = run.path("lstm.npz")
    history, best, since_best, step, t0, stop = [], -1.0, 0, 0, time.perf_counter(), False
    best_weights, best_epoch, first_epoch, saved, losses = None, 0.0, 1, run.resume_state, []
    meta_of = dict(model=name, vocab=vocab.to_dict(), emb=args.emb, hidden=args.hidden, bidirectional=args.bidirectional)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optim"])
        history, best, since_best, step = saved["history"], saved["best"], saved["since_best"], saved["step"]
        best_weights, best_epoch, first_epoch = saved["best_model"], saved["best_epoch"], saved["epoch"]
        losses = list(saved["losses"])
        if best_weights is not None and run.is_main:  # the best-dev model, also where --out is another folder
            best_model = SentimentLSTM(len(vocab), args.emb, args.hidden, args.bidirectional, 0.0, 0.0)
            best_model.load_state_dict(best_weights)
            run.save_checkpoint(best_model, "lstm.npz", epoch=best_epoch, dev_acc=best, **meta_of)
        run.log(f"resuming at step {step} (epoch {first_epoch}) from {args.resume}")
    net = run.wrap(model)  # DistributedDataParallel under MPI
    epoch, batches, totals = first_epoch, None, [0.0, 0, 0]

    def training_state() -> dict:
        return {"model": model.state_dict(), "optim": opt.state_dict(), "np_rng": rng.bit_generator.state,
                "data": batches.state_dict(), "epoch": epoch, "step": step, "totals": list(totals), "history": history,
                "best": best, "since_best": since_best, "best_model": best_weights, "best_epoch": best_epoch,
                "losses": losses}

    with run.training():
        for epoch in range(first_epoch, args.epochs + 1):
            if sampler is not None:
                sampler.set_epoch(epoch)
                batches = sampler.bucket_batches(train_ids, train_y, args.batch_size)
            else:
                batches = bucket_batches(train_ids, train_y, args.batch_size, seed=rng)
            totals = [0.0, 0, 0]  # loss sum, correct, examples (this epoch, this rank)
            if saved is not None:
                if sampler is None:
                    batches.load_state_dict(saved["data"])  # the saved epoch's order, not the one just drawn
                    rng.bit_generator.state = saved["np_rng"]  # as it was after that order was drawn
                else:  # every rank rebuilds its own shard's order; the ranks share the position
                    batches.load_state_dict({**batches.state_dict(), "position": saved["data"]["position"]})
                run.restore_rng(saved)
                totals, saved = list(saved["totals"]), None
            bar = run.progress(steps_per_epoch - batches.position, desc=f"{name} epoch {epoch}/{args.epochs}")
            for ids, lengths, y in batches:
                logits = net(tr.tensor(ids, device=device), lengths)
                loss = F.cross_entropy(logits, tr.tensor(y, device=device))
                opt.zero_grad()
                loss.backward()
                clip_grad_norm_(model.parameters(), args.clip)
                opt.step()
                step += 1
                value, reason = run.step_done(loss.item())  # the loss averaged over the ranks
                losses.append(value)
                totals[0] += loss.item() * len(y)
                totals[1] += int((logits.numpy().argmax(1) == y).sum())
                totals[2] += len(y)
                bar.update(1, loss=totals[0] / totals[2], acc=totals[1] / totals[2])
                n = batches.position
                if n % eval_every == 0 or n == steps_per_epoch:
                    tot_loss, tot_correct, tot_n = run.sum_ranks(*totals)  # over all ranks' shards
                    with bar.paused():
                        if run.is_main:  # one rank evaluates: the replicas hold the same weights
                            dev_acc = float(((predict_proba(model, dev_ids, device) > 0.5) == dev_y).mean())
                            history.append({"epoch": step / steps_per_epoch, "train_loss": tot_loss / tot_n,
                                            "train_acc": tot_correct / tot_n, "dev_acc": dev_acc})
                            if dev_acc > best:
                                best, since_best, best_epoch = dev_acc, 0, step / steps_per_epoch
                                best_weights = model.state_dict()
                                run.save_checkpoint(model, "lstm.npz", epoch=best_epoch, dev_acc=dev_acc, **meta_of)
                            else:
                                since_best += 1
                    # early stopping only when it skips something: not at the very last step of the last epoch
                    last = epoch == args.epochs and n == steps_per_epoch
                    if run.any_rank(since_best >= args.patience and not last):
                        stop = True
                run.after_step(reason, step, training_state, last=stop or (epoch == args.epochs and n == steps_per_epoch))
                if stop:
                    break
            bar.close()
            run.log(f"{name} epoch {epoch}: train loss {totals[0] / max(totals[2], 1):.4f} acc "
                    f"{totals[1] / max(totals[2], 1):.4f} (means over the epoch so far{', rank 0' if run.world > 1 else ''})  "
                    f"dev acc {history[-1]['dev_acc'] if history else float('nan'):.4f} (best {best:.4f})")
            if stop:
                run.log(f"{name}: no dev improvement in {args.patience} evaluations in a row; early stop after "
                        f"{step / steps_per_epoch:.2f} of {args.epochs} epochs")
                break
    if batches is not None:
        run.save_state(training_state())
    train_seconds = time.perf_counter() - t0
    if not run.is_main:
        return {"ranks": run.world, "steps": step}
    meta = model.load(ckpt)
    test_p = predict_proba(model, test_ids, device)
    lstm_test = float(((test_p > 0.5) == test_y).mean())

    # -- the table
    rows = [["naive Bayes (sentences)", f"{100 * nb_rows['sentences']['dev_acc']:.2f}",
             f"{100 * nb_rows['sentences']['test_acc']:.2f}", f"{PUBLISHED['NB'][0]} ({PUBLISHED['NB'][1]})"]]
    if not args.sentences_only:
        rows.append([f"naive Bayes ({what})", f"{100 * nb_rows[what]['dev_acc']:.2f}",
                     f"{100 * nb_rows[what]['test_acc']:.2f}", "—"])
    rows.append([f"{name} ({what}, epoch {meta['epoch']:.2f})", f"{100 * best:.2f}", f"{100 * lstm_test:.2f}",
                 f"{PUBLISHED[name][0]} ({PUBLISHED[name][1]}, GloVe)"])
    run.log()
    table = print_table(rows, ["model", "dev acc %", "test acc %", "published test %"],
                        title="SST-2 binary sentence classification (test evaluated once, at the best dev checkpoint)")

    # -- verdicts on the lecture's sentences
    probe_tokens = [sst_tokenize(s) for s in PROBES]
    nb_p = nb.predict_proba(probe_tokens)[:, list(nb.classes_).index(1)]
    lstm_p = predict_proba(model, encode(vocab, probe_tokens), device)
    verdicts, vrows = [], []
    for s, toks, pn, pl in zip(PROBES, probe_tokens, nb_p, lstm_p):
        unknown = [w for w in toks if w not in vocab]
        verdicts.append({"sentence": s, "tokens": toks, "nb_p_positive": float(pn), "lstm_p_positive": float(pl),
                         "unknown_words": unknown})
        short = s if len(s) <= 60 else s[:57] + "..."
        vrows.append([short, f"{LABELS[int(pn > 0.5)]} {max(pn, 1 - pn):.2f}", f"{LABELS[int(pl > 0.5)]} {max(pl, 1 - pl):.2f}"])
    run.log()
    print_table(vrows, ["sentence", "naive Bayes", name], title="verdicts (label, probability of that label):")

    plot = run.save_plot("dev_accuracy.png",
                         [(f"{name} dev", [h["epoch"] for h in history], [h["dev_acc"] for h in history]),
                          (f"{name} train (mean so far this epoch)", [h["epoch"] for h in history],
                           [h["train_acc"] for h in history]),
                          (f"naive Bayes ({what}) dev", [0, history[-1]["epoch"]], [nb_rows[what]["dev_acc"]] * 2)],
                         "epoch", "accuracy", f"SST-2: {name} vs naive Bayes")
    results = {"example": "sentiment", "args": run.flags(), "ranks": run.world, "early_stop": stop,
               "state": run.state_path(), "train_examples": len(train_docs),
               "vocab_size": len(vocab),
               "naive_bayes": nb_results,
               "lstm": {"name": name, "dev_acc": best, "test_acc": lstm_test, "best_epoch": meta["epoch"],
                        "parameters": model.num_parameters(), "train_seconds": train_seconds, "checkpoint": ckpt,
                        "history": history, "losses": losses},
               "published": PUBLISHED, "verdicts": verdicts, "table": table, "plot": plot,
               "wall_seconds": time.perf_counter() - wall0}
    run.write_results(results)
    run.note(f"\nresults: {os.path.join(out, 'results.json')}" + (f"  plot: {plot}" if plot else ""))
    return results


if __name__ == "__main__":
    main()
