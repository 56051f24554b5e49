"""char_lm: a character-level language model on Tiny Shakespeare (RNN, LSTM or GRU).

Training is truncated backpropagation through time: the 1M training characters are cut into
``--batch`` parallel streams, read in windows of ``--seq`` characters; the hidden state is
carried from one window to the next but ``detach()``-ed, so gradients flow back at most one
window. Gradients are clipped to a global norm of ``--clip``; Adam with a cosine-decayed
learning rate. Validation is reported in bits per character (mean cross-entropy / ln 2).

    python examples/char_lm.py                        # LSTM 256, 1,000 steps: 1.3 min on idle cores (see README)
    python examples/char_lm.py --model gru --hidden 384 --steps 3000
    python examples/char_lm.py --sample --checkpoint runs/char_lm/model.npz --prime "ROMEO:" --temperature 0.8
    python examples/char_lm.py --resume runs/char_lm/train_state.npz   # continue a saved or interrupted run
    mpiexec -n 2 python examples/char_lm.py --batch 16  # data-parallel: 2 ranks x 16 streams = one process's 32

Writes ``model.npz`` (best validation; the vocabulary and model configuration travel in its
metadata), ``samples.txt``, ``results.json``, ``loss.png`` and ``train_state.npz`` (everything
``--resume`` needs: saved every ``--save-every`` steps, at the end and on Ctrl-C) under ``--out``.
Under MPI each rank trains on its ``--batch`` of the ranks x batch streams (``distributed_batchify``)
and gradients are averaged, so N ranks train what one process does with batch N x ``--batch``. Data: the 90/5/5
contiguous split of ``tinygrad_rnn.data.split_text``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
from _common import (
    STATE_FILE,
    default_out,
    make_parser,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    print_table,
    probability,
    start,
)

import tinygrad_rnn as tr
import tinygrad_rnn.distributed as dist
from tinygrad_rnn import nn, optim
from tinygrad_rnn.data import Vocab, batchify, bptt_batches, distributed_batchify, load_tinyshakespeare, split_text
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.nn.utils import clip_grad_norm_

LN2 = math.log(2.0)
LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
# The default run: sized to end well under 3 minutes on two idle cores with one BLAS thread (77 s measured)
# and still reach < 2.5 validation bits/char (2.35; lr 2e-3 gave 2.47).
DEFAULT_STEPS, DEFAULT_EVAL_EVERY, DEFAULT_LR = 1000, 250, 3e-3


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
    """Feed ``prime`` through the model, then draw ``length`` characters from softmax(logits / temperature).

    ``temperature == 0`` is greedy decoding: always the most likely next character.
    """
    model.eval()
    out = list(prime)
    with tr.no_grad():
        ids = vocab.encode(prime or "\n")[None, :]
        logits, state = model(ids)
        for _ in range(length):
            z = logits.numpy()[0, -1].astype(np.float64)
            if temperature == 0:
                nxt = int(z.argmax())
            else:
                z = z / temperature
                p = np.exp(z - z.max())
                nxt = int(rng.choice(len(p), p=p / p.sum()))
            out.append(vocab.itos[nxt])
            logits, state = model(np.array([[nxt]]), state)
    model.train()
    return "".join(out)


def load_model(path: str, device: str = "cpu") -> tuple[CharLM, Vocab, dict]:
    """Rebuild a CharLM and its vocabulary from a checkpoint written by this script (ValueError if it is not one)."""
    state, meta = nn.load(path)
    if "config" not in meta or "vocab" not in meta:
        raise ValueError(f"{path} was not written by char_lm.py (its metadata has no config/vocab)")
    model = CharLM(**meta["config"])
    model.load_state_dict(state)
    return model.to(device), Vocab.from_dict(meta["vocab"]), meta


def min_chars(batch: int, seq: int, ranks: int = 1) -> int:
    """The shortest --max-chars that leaves one (batch x seq) training window and one validation/test window."""
    need = ranks * batch * (seq + 1) + seq  # later epochs start up to seq - 1 characters in
    n = need * 10 // 9
    while True:  # split_text gives val and test int(5 %) each, train the rest
        val = int(n * 0.05)
        if n - 2 * val >= need and val >= seq + 1:
            return n
        n += max(1, n // 100)


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Cross-flag checks, before any data is loaded."""
    if args.bf16 and args.device != "cpu":
        parser.error(f"argument --bf16: bfloat16 autocast runs on the CPU only, not on --device {args.device}")
    if args.bf16 and not tr.amp.native_bf16():
        print("char_lm: --bf16 without oneMKL's bf16 GEMM (pip install -e '.[mkl]'): bfloat16 products are "
              "emulated, slower than float32", file=sys.stderr)
    if args.sample:
        args.checkpoint = args.checkpoint or os.path.join(args.out, "model.npz")
        if not os.path.isfile(args.checkpoint):
            where = "" if args.out == default_out("char_lm") else f" --out {args.out}"
            parser.error(f"argument --checkpoint: no checkpoint at {os.path.abspath(args.checkpoint)} "
                         f"(train one first: python examples/char_lm.py{where})")
        return
    ranks = tr.distributed.get_world_size() if tr.distributed.is_initialized() else 1
    need = min_chars(args.batch, args.seq, ranks)
    if args.max_chars and args.max_chars < need:
        on = f" on each of {ranks} ranks" if ranks > 1 else ""
        parser.error(f"argument --max-chars: {args.max_chars} characters are too few for --batch {args.batch}{on} x --seq "
                     f"{args.seq} (after the 90/5/5 split); use at least {need}, or 0 for all")


def main(argv: list[str] | None = None) -> dict:
    p = make_parser("char_lm", "char_lm: character-level RNN/LSTM/GRU language model on Tiny Shakespeare (truncated BPTT)",
                    epochs=None, save_every=250, distributed=True)
    p.add_argument("--model", choices=sorted(LAYERS), default="lstm", help="recurrent layer")
    p.add_argument("--hidden", type=positive_int, default=256, help="hidden size")
    p.add_argument("--layers", type=positive_int, default=1, help="stacked recurrent layers")
    p.add_argument("--emb", type=positive_int, default=64, help="character embedding size")
    p.add_argument("--dropout", type=probability, default=0.0, help="dropout on the recurrent outputs")
    p.add_argument("--batch", type=positive_int, default=32, help="parallel streams per step")
    p.add_argument("--seq", type=positive_int, default=64, help="truncated-BPTT window (characters)")
    p.add_argument("--lr", type=positive_float, default=DEFAULT_LR, help="Adam learning rate (cosine-decayed to lr/10)")
    p.add_argument("--clip", type=positive_float, default=5.0, help="global gradient-norm clip")
    p.add_argument("--steps", type=nonneg_int, default=DEFAULT_STEPS,
                   help="training steps (windows of batch x seq characters); 0 = as many as --epochs take (1 if not given)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="passes over the training text; given with --steps, whichever ends first "
                        "(default: no epoch limit, --steps decides)")
    p.add_argument("--minutes", type=nonneg_float, default=0.0, help="stop training after this many minutes (0 = no limit)")
    p.add_argument("--eval-every", type=positive_int, default=DEFAULT_EVAL_EVERY, help="validate every N steps")
    p.add_argument("--max-chars", type=nonneg_int, default=0, help="use only the first N characters of the text (0 = all)")
    p.add_argument("--bf16", action="store_true", help="train with bfloat16 products and float32 accumulation "
                   "(tr.autocast; CPU only, fastest with oneMKL on AMX / AVX512_BF16); validation and test run in float32")
    p.add_argument("--sample", action="store_true", help="only sample from --checkpoint, no training")
    p.add_argument("--checkpoint", default=None, help="checkpoint to sample from (default: OUT/model.npz)")
    p.add_argument("--prime", default="ROMEO:", help="text to start the samples with")
    p.add_argument("--temperature", type=nonneg_float, default=0.8,
                   help="sampling temperature: lower is safer, 0 = greedy (always the most likely character)")
    p.add_argument("--length", type=nonneg_int, default=500, help="characters to sample")
    run = start(p, argv, check=check_args, make_out=lambda a: not a.sample,
                same=("model", "hidden", "layers", "emb", "dropout", "batch", "seq", "max_chars", "seed", "lr", "clip"))
    args = run.args
    rng = np.random.default_rng(args.seed)

    if args.sample:
        try:
            model, vocab, meta = load_model(args.checkpoint, args.device)
        except ValueError as e:
            run.error(f"argument --checkpoint: {e}")
        unknown = sorted({c for c in args.prime if c not in vocab})
        if unknown:
            run.error(f"argument --prime: characters outside the model's vocabulary: {unknown}")
        run.log(f"# {args.checkpoint}: {meta['config']}, val {meta.get('val_bpc', float('nan')):.3f} bits/char, "
                f"temperature {args.temperature:g}{' (greedy)' if args.temperature == 0 else ''}")
        run.log(sample(model, vocab, args.prime, args.length, args.temperature, rng))
        return {"checkpoint": args.checkpoint}

    t0 = time.perf_counter()
    text = load_tinyshakespeare()
    if args.max_chars:
        text = text[: args.max_chars]
    vocab = Vocab.chars(text)
    unknown = sorted({c for c in args.prime if c not in vocab})
    if unknown:
        run.error(f"argument --prime: characters outside the training text's vocabulary: {unknown}")
    train_txt, val_txt, test_txt = split_text(text, 0.05, 0.05)
    train_ids, val_ids, test_ids = (vocab.encode(s) for s in (train_txt, val_txt, test_txt))
    eval_batch = max(1, min(args.batch, len(val_ids) // (2 * args.seq)))
    val_data, test_data = batchify(val_ids, eval_batch), batchify(test_ids, eval_batch)
    model = CharLM(len(vocab), args.model, args.hidden, args.layers, args.emb, args.dropout, seed=args.seed).to(args.device)
    params = list(model.parameters())
    opt = optim.Adam(params, lr=args.lr)
    # each rank reads its --batch rows of the ranks x --batch streams: all ranks have the same number of windows
    per_epoch = (len(train_ids) // (run.world * args.batch) - 1 + args.seq - 1) // args.seq
    epochs = args.epochs or (math.ceil(args.steps / per_epoch) if args.steps else 1)
    total_steps = per_epoch * epochs if args.steps == 0 else min(args.steps, per_epoch * epochs)
    limit = "--steps" if args.steps and total_steps == args.steps else "--epochs"
    ranks = f" on each of {run.world} ranks ({run.world * args.batch} streams in all)" if run.world > 1 else ""
    run.log(f"Tiny Shakespeare: {len(vocab)} characters; train/val/test {len(train_ids):,}/{len(val_ids):,}/"
            f"{len(test_ids):,}; {args.model.upper()} hidden {args.hidden} x{args.layers}, "
            f"{model.num_parameters():,} parameters; batch {args.batch}{ranks} x seq {args.seq}; "
            f"{total_steps} steps = {total_steps / per_epoch:.2f} epochs (set by {limit})")
    run.announce_compile(args.model if args.model != "rnn" else "rnn_", "adam", "xent")

    history: list[dict] = []
    best, best_step, best_weights = float("inf"), 0, None
    ckpt = run.path("model.npz")
    step, window_losses, train_curve, losses = 0, [], [], []
    start_epoch, saved = 0, run.resume_state
    if saved is not None:  # everything the interrupted run had; the data position and RNGs are restored below
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optim"])
        step, start_epoch, history, best = saved["step"], saved["epoch"], saved["history"], saved["best"]
        window_losses, train_curve, losses = list(saved["window_losses"]), list(saved["train_curve"]), list(saved["losses"])
        best_step, best_weights = saved["best_step"], saved["best_model"]
        if best_weights is not None:  # the best-validation model, also where --out is another folder
            best_model = CharLM(**model.config)
            best_model.load_state_dict(best_weights)
            run.save_checkpoint(best_model, "model.npz", vocab=vocab.to_dict(), config=model.config, val_bpc=best,
                                step=best_step)
        run.log(f"resuming at step {step} of {total_steps} from {args.resume}")
    elif run.is_main:
        run.log(f"before training: val {evaluate(model, val_data, args.seq) / LN2:.3f} bits/char "
                f"(uniform over {len(vocab)} = {math.log2(len(vocab)):.3f})")
    run.log("'train' = mean training bits/char over the steps since the previous line (dropout on, weights still "
            "moving); 'val' = the whole validation text with the weights of that step")
    net = run.wrap(model)  # DistributedDataParallel under MPI: backward averages the gradients over the ranks
    bar = run.progress(total_steps - step, "train")
    deadline = t0 + 60 * args.minutes if args.minutes > 0 else math.inf

    def validate() -> None:
        nonlocal best, best_step, best_weights
        if not run.is_main:  # one rank evaluates: the replicas hold the same weights
            return
        with bar.paused():  # evaluation time is no training time: the ETA must not count it
            v = evaluate(model, val_data, args.seq) / LN2
            tr_bpc = float(np.mean(window_losses)) / LN2 if window_losses else float("nan")
            window_losses.clear()
            history.append({"step": step, "train_bpc": tr_bpc, "val_bpc": v, "seconds": time.perf_counter() - t0})
            run.log(f"step {step:5d}  train {tr_bpc:.3f}  val {v:.3f} bits/char  ({history[-1]['seconds']:.0f} s)")
            if v < best:
                best, best_step = v, step
                best_weights = model.state_dict()  # copies
                run.save_checkpoint(model, "model.npz", vocab=vocab.to_dict(), config=model.config, val_bpc=v, step=step)

    def training_state() -> dict:
        """What --resume needs (a collective under MPI: every rank calls it, rank 0 writes)."""
        return {"model": model.state_dict(), "optim": opt.state_dict(),
                "np_rng": rng.bit_generator.state, "data": batches.state_dict(), "offset": offset, "epoch": epoch,
                "hidden": dist.gather_along(state, dim=1), "step": step, "history": history, "best": best,
                "best_step": best_step, "best_model": best_weights, "window_losses": window_losses,
                "train_curve": train_curve, "losses": losses}

    stop = False
    epoch, offset, state = start_epoch, 0, None
    batches = None
    with run.training():
        for epoch in range(start_epoch, epochs):
            if saved is not None:
                offset = saved["offset"]
            else:
                offset = 0 if epoch == 0 else int(rng.integers(args.seq))  # shift the window boundaries each epoch
            batches = bptt_batches(distributed_batchify(train_ids[offset:], args.batch, run.world, run.rank), args.seq)
            state = None
            if saved is not None:
                batches.load_state_dict(saved["data"])
                state = dist.shard_along(saved["hidden"], dim=1, device=args.device)
                rng.bit_generator.state = saved["np_rng"]
                run.restore_rng(saved)  # dropout draws what it would have drawn
                saved = None
            if step >= total_steps:
                break
            for x, y in batches:
                lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(total_steps, 1))))
                for g in opt.param_groups:
                    g["lr"] = lr
                with tr.autocast("cpu", dtype=tr.bfloat16, enabled=args.bf16):
                    logits, state = net(x, state)
                    loss = F.cross_entropy(logits.reshape(-1, len(vocab)), y.reshape(-1))
                state = detach_state(state)  # truncated BPTT: keep the values, cut the graph
                opt.zero_grad()
                loss.backward()
                norm = clip_grad_norm_(params, args.clip).item()
                opt.step()
                step += 1
                value, reason = run.step_done(loss.item(), stop=time.perf_counter() > deadline)  # mean over ranks
                window_losses.append(value)
                train_curve.append(value / LN2)
                losses.append(value)
                bar.update(bpc=train_curve[-1], gnorm=norm, lr=lr)
                if step % args.eval_every == 0 or step == total_steps:
                    validate()
                run.after_step(reason, step, training_state, last=step >= total_steps)
                if step >= total_steps or reason is not None:
                    stop = True
                    break
            if stop:
                break
    bar.close()
    if not history or history[-1]["step"] != step:
        validate()
    if batches is not None:
        run.save_state(training_state())
    train_seconds = time.perf_counter() - t0
    if not run.is_main:
        return {"ranks": run.world, "steps": step}

    model, _, meta = load_model(ckpt, args.device)  # the best validation checkpoint
    val_bpc = meta["val_bpc"]
    test_bpc = evaluate(model, test_data, args.seq) / LN2
    samples = [f"--- temperature {temp}, prime {args.prime!r} ---\n"
               + sample(model, vocab, args.prime, args.length, temp, rng) for temp in (0.5, 0.8, 1.0)]
    run.write_text("samples.txt", "\n\n".join(samples) + "\n")
    run.log("\n" + samples[1])
    run.save_plot("loss.png", [("train (per step)", range(1, len(train_curve) + 1), train_curve),
                               ("validation", [h["step"] for h in history], [h["val_bpc"] for h in history])],
                  "step", "bits per character", f"char_lm: {args.model.upper()} {args.hidden} on Tiny Shakespeare")
    run.log()
    print_table([[args.model, args.hidden, args.layers, model.num_parameters(), step, f"{step / per_epoch:.2f}", run.world,
                  history[-1]["train_bpc"], val_bpc, test_bpc, train_seconds / 60]],
                ["model", "hidden", "layers", "params", "steps", "epochs", "ranks", "train bpc", "val bpc", "test bpc",
                 "minutes"],
                title="results (bits per character; best-validation checkpoint; train = mean of the last interval)")
    results = {"model": args.model, "config": model.config, "steps": step, "epochs": step / per_epoch,
               "ranks": run.world, "val_bpc": val_bpc, "test_bpc": test_bpc, "best_step": meta["step"],
               "val_nats": val_bpc * LN2, "history": history, "losses": losses, "seconds": train_seconds,
               "args": run.flags(), "checkpoint": ckpt, "state": run.state_path()}
    run.write_results(results)
    run.note(f"wrote model.npz, samples.txt, loss.png, results.json, {STATE_FILE} to {run.out}")
    return results


if __name__ == "__main__":
    main()
