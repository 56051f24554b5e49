"""hello: the lecture's character-level RNN learning to continue "hello".

Vocabulary [h, e, l, o]; one-hot inputs h, e, l, l and targets e, l, l, o. The model is the
lecture's, written out with its own names:

    h⁽ᵗ⁾ = tanh(W_h h⁽ᵗ⁻¹⁾ + W_e e⁽ᵗ⁾ + b₁)        (e⁽ᵗ⁾ the one-hot input)
    ŷ⁽ᵗ⁾ = softmax(U h⁽ᵗ⁾ + b₂)
    J    = mean over t of −log ŷ⁽ᵗ⁾[target⁽ᵗ⁾]

and trained by backpropagation through time with our engine. It prints every step's input,
hidden state, output distribution and loss before and after training, and checks the
predictions. Runs in seconds:

    python examples/hello.py                  # hidden size 3, 300 passes of Adam
    python examples/hello.py --hidden 2 --epochs 600 --print-every 100

Note the second "l": the input l must be followed by l once and by o once, which only the
hidden state (remembering whether an l was already seen) can tell apart.
"""
from __future__ import annotations

import time

import numpy as np
from _common import make_parser, positive_float, positive_int, print_table, start

import tinygrad_rnn as tr
from tinygrad_rnn import nn, optim
from tinygrad_rnn.data import Vocab
from tinygrad_rnn.nn import functional as F

WORD = "hello"
VOCAB = Vocab.from_itos(["h", "e", "l", "o"])  # the lecture's order, not alphabetical


class HelloRNN(nn.Module):
    """The lecture's RNN LM: W_e (H×V), W_h (H×H), b₁ (H), U (V×H), b₂ (V)."""

    def __init__(self, vocab_size: int, hidden: int, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        s = 1.0 / np.sqrt(hidden)
        self.W_e = nn.Parameter(rng.uniform(-s, s, (hidden, vocab_size)).astype(np.float32))
        self.W_h = nn.Parameter(rng.uniform(-s, s, (hidden, hidden)).astype(np.float32))
        self.b1 = nn.Parameter(np.zeros(hidden, dtype=np.float32))
        self.U = nn.Parameter(rng.uniform(-s, s, (vocab_size, hidden)).astype(np.float32))
        self.b2 = nn.Parameter(np.zeros(vocab_size, dtype=np.float32))
        self.hidden = hidden

    def forward(self, onehots: tr.Tensor) -> tuple[tr.Tensor, list[tr.Tensor]]:
        """onehots (T, V) -> logits (T, V) and the hidden states h⁽¹⁾ … h⁽ᵀ⁾, each (H,)."""
        h = tr.zeros(self.hidden)  # h⁽⁰⁾ = 0
        hs, logits = [], []
        for t in range(onehots.shape[0]):
            h = (self.W_h @ h + self.W_e @ onehots[t] + self.b1).tanh()
            hs.append(h)
            logits.append(self.U @ h + self.b2)
        return tr.stack(logits), hs


def fmt(v: np.ndarray, digits: int = 2) -> str:
    return "[" + " ".join(f"{x:+.{digits}f}" if digits > 0 else f"{x:.0f}" for x in v) + "]"


def show_steps(model: HelloRNN, x: tr.Tensor, targets: np.ndarray, title: str) -> list[str]:
    """Print every time step: input, one-hot, hidden state, ŷ, target, −log ŷ[target]; returns predictions."""
    with tr.no_grad():
        logits, hs = model(x)
        probs = logits.softmax(-1).numpy()
    rows, preds = [], []
    for t in range(len(targets)):
        p = probs[t]
        pred = VOCAB.itos[int(p.argmax())]
        preds.append(pred)
        rows.append([t + 1, WORD[t], fmt(x.numpy()[t], 0), fmt(hs[t].numpy()), fmt(p), WORD[t + 1], pred,
                     float(-np.log(p[targets[t]]))])
    print_table(rows, ["t", "in", "one-hot e(t)", "hidden h(t)", "y_hat(t) over [h e l o]", "target", "pred", "loss"],
                title=f"\n{title}   (mean loss {np.mean([r[-1] for r in rows]):.4f})")
    return preds


def main(argv: list[str] | None = None) -> dict:
    p = make_parser("hello", "hello: the lecture's char-level RNN learning 'hello' over the vocabulary [h, e, l, o]",
                    epochs=300, epochs_help="training passes over the one word")
    p.add_argument("--hidden", type=positive_int, default=3, help="hidden size H")
    p.add_argument("--lr", type=positive_float, default=0.02, help="Adam learning rate")
    p.add_argument("--print-every", type=positive_int, default=25, help="print the loss and predictions every N training passes")
    run = start(p, argv)
    args = run.args
    t0 = time.perf_counter()

    ids = VOCAB.encode(WORD)
    x = tr.tensor(np.eye(len(VOCAB), dtype=np.float32)[ids[:-1]], device=args.device)  # h e l l, one-hot
    targets = ids[1:]  # e l l o
    model = HelloRNN(len(VOCAB), args.hidden, seed=args.seed).to(args.device)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    run.log(f"vocabulary {VOCAB.itos}; inputs {list(WORD[:-1])} -> targets {list(WORD[1:])}; "
            f"hidden size {args.hidden}; {model.num_parameters()} parameters")
    run.announce_compile("adam", "xent")
    show_steps(model, x, targets, "before training")

    losses = []
    run.log()
    bar = run.progress(args.epochs, "train", unit="passes")
    for it in range(1, args.epochs + 1):
        logits, _ = model(x)
        loss = F.cross_entropy(logits, targets)  # mean over the 4 steps
        opt.zero_grad()
        loss.backward()  # BPTT through the 4 unrolled steps
        opt.step()
        losses.append(loss.item())
        bar.update(loss=losses[-1])
        if it == 1 or it % args.print_every == 0 or it == args.epochs:
            guess = " ".join(VOCAB.itos[i] for i in logits.numpy().argmax(-1))
            run.log(f"pass {it:4d}  loss {losses[-1]:.4f}  predicts {guess}")
    bar.close()

    preds = show_steps(model, x, targets, f"after {args.epochs} passes")
    ok = preds == list(WORD[1:])
    run.log(f"\npredictions: {' '.join(preds)} {'✓' if ok else '✗ (expected ' + ' '.join(WORD[1:]) + ')'}")
    with tr.no_grad():
        final = F.cross_entropy(model(x)[0], targets).item()
    print_table([["hello", args.hidden, args.epochs, losses[0], final, " ".join(preds), "yes" if ok else "no"]],
                ["model", "hidden", "passes", "initial loss", "final loss", "predictions", "correct"],
                title="\nresults")

    run.save_checkpoint(model, "model.npz", vocab=VOCAB.itos, hidden=args.hidden)
    run.save_plot("loss.png", [("training loss", range(1, len(losses) + 1), losses)],
                  "training pass", "mean cross-entropy (nats)", "hello: training loss", logy=True)
    results = {"initial_loss": losses[0], "final_loss": final, "predictions": preds, "correct": ok,
               "hidden": args.hidden, "epochs": args.epochs, "lr": args.lr, "seed": args.seed,
               "losses": losses, "seconds": time.perf_counter() - t0}
    run.write_results(results)
    return results


if __name__ == "__main__":
    main()
