"""vanishing_gradients: how ‖∂J⁽ᵀ⁾/∂h⁽ᵗ⁾‖ shrinks or grows with the distance T − t, and what clipping does.

BPTT multiplies one Jacobian diag(σ'(a⁽ᵗ⁾))·W_h per step, so the gradient reaching a state T − t
steps back behaves like (ρ(W_h)·E[σ'])^(T−t): it vanishes when that factor is below 1 and explodes
above (Bengio et al. 1994; Pascanu, Mikolov & Bengio 2013). Three measurements:

1. **Per-step rates.** For tanh and ReLU RNNs whose W_h is ρ times a random orthogonal matrix
   (ρ below, at and above 1), the IRNN (ReLU, W_h = I) and np-RNN (ReLU, W_h = normalised positive
   definite) initialisations, and LSTMs (default init; forget-gate bias 1 and 3): run ``--burn-in``
   steps, then over the next T steps unroll the cell, backprop J = sum(h⁽ᵀ⁾) and read
   ‖∂J/∂h⁽ᵗ⁾‖ (and the LSTM's ‖∂J/∂c⁽ᵗ⁾‖) for every t (``tinygrad_rnn.nn.diagnostics``).
   The fitted per-step factor r in ‖g‖ ∝ r^(T−t) is printed in a table; ``gradient_norms_rnn.png``
   and ``gradient_norms_lstm.png`` plot the curves (log scale).
2. **Clipping bounds the step.** For the exploding ReLU RNN, the total parameter-gradient norm
   grows geometrically with the sequence length; ``clip_grad_norm_`` rescales it to at most
   ``--clip`` without changing its direction (``clipping.png``).
3. **Clipping keeps training alive.** The same exploding RNN trained by SGD on a toy regression
   with and without clipping (``--epochs`` SGD steps; ``clipping_training.png``): without it the
   first steps throw the weights to inf/NaN. The clipped model is saved as ``clipped_rnn.npz``.

    python examples/vanishing_gradients.py
    python examples/vanishing_gradients.py --rhos 0.5 1.0 1.5 --steps 200
"""
from __future__ import annotations

import math
import time

import numpy as np
from _common import int_at_least, make_parser, nonneg_int, positive_float, positive_int, print_table, start

import tinygrad_rnn as tr
from tinygrad_rnn import nn, optim
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.nn import init
from tinygrad_rnn.nn.diagnostics import bptt_gradient_norms, fit_rate, recurrent_spectral_radii
from tinygrad_rnn.nn.utils import clip_grad_norm_


class Regressor(nn.Module):
    """The clipping demo's model: an RNN and a linear read-out of its last state."""

    def __init__(self, rnn: nn.RNN, head: nn.Linear):
        super().__init__()
        self.rnn, self.head = rnn, head

    def forward(self, x: tr.Tensor) -> tr.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[-1])


def make_rnn(nonlinearity: str, rho: float, inputs: int, hidden: int, seed: int, device: str) -> nn.RNN:
    """An Elman RNN with W_h = rho · (random orthogonal) — spectral radius exactly rho — and zero biases."""
    rnn = nn.RNN(inputs, hidden, nonlinearity=nonlinearity, seed=seed, dtype="float64")
    init.orthogonal_(rnn.weight_hh_l0, gain=rho, seed=seed)
    init.zeros_(rnn.bias_ih_l0)
    init.zeros_(rnn.bias_hh_l0)
    return rnn.to(device)


def make_lstm(forget_bias: float | None, inputs: int, hidden: int, seed: int, device: str) -> nn.LSTM:
    """PyTorch's default LSTM init, optionally with the forget-gate bias set (Jozefowicz et al. 2015)."""
    lstm = nn.LSTM(inputs, hidden, seed=seed, dtype="float64")
    if forget_bias is not None:
        for b in (lstm.bias_ih_l0, lstm.bias_hh_l0):
            b.data[hidden:2 * hidden] = forget_bias / 2  # the two biases add up
    return lstm.to(device)


def classify(rate: float) -> str:
    if not math.isfinite(rate):
        return "-"
    return "vanishing" if rate < 0.99 else "exploding" if rate > 1.01 else "≈ preserved"


def param_grad_norm(model: nn.Module, head: nn.Linear, x: tr.Tensor, target: tr.Tensor, clip: float) -> tuple[float, float]:
    """(‖∇θ J‖ before clipping, after clipping) for J = MSE(head(h⁽ᵀ⁾), target)."""
    params = list(model.parameters()) + list(head.parameters())
    for q in params:
        q.grad = None
    out, _ = model(x)
    F.mse_loss(head(out[-1]), target).backward()
    before = clip_grad_norm_(params, clip).item()
    after = clip_grad_norm_(params, math.inf).item()  # just measures: nothing is above inf
    return before, after


def main(argv: list[str] | None = None) -> dict:
    p = make_parser("vanishing_gradients", "vanishing_gradients: gradient norms across time steps, spectral radius, "
                    "clipping, LSTM", epochs=150,
                    epochs_help="SGD steps of the clipping training demo (each on a fresh random batch)")
    p.add_argument("--hidden", type=positive_int, default=64, help="hidden size")
    p.add_argument("--inputs", type=positive_int, default=8, help="input features (standard-normal inputs)")
    p.add_argument("--steps", type=int_at_least(4), default=100, help="sequence length T (at least 4)")
    p.add_argument("--batch", type=positive_int, default=16, help="sequences per measurement")
    p.add_argument("--burn-in", type=nonneg_int, default=100, help="steps run (not measured) before the window, from h = 0")
    p.add_argument("--rhos", type=positive_float, nargs="+", default=[0.8, 1.0, 1.2], help="spectral radii of W_h")
    p.add_argument("--clip", type=positive_float, default=1.0, help="max gradient norm for the clipping demos")
    p.add_argument("--explode-rho", type=positive_float, default=1.2, help="ρ of the ReLU RNN in the clipping demos")
    p.add_argument("--lr", type=positive_float, default=0.01, help="SGD learning rate of the clipping training demo")
    run = start(p, argv)
    args = run.args
    t0 = time.perf_counter()
    dev, H, D, T, B = args.device, args.hidden, args.inputs, args.steps, args.batch
    x = tr.randn(T, B, D, seed=args.seed, dtype="float64", device=dev)
    # the state after a burn-in prefix, so the statistics are stationary over the measured window
    # (from h⁽⁰⁾ = 0 an LSTM's cell state is still growing and its Jacobians change along the window)
    prefix = tr.randn(max(args.burn_in, 1), B, D, seed=args.seed + 7, dtype="float64", device=dev)

    def burn_in(model: nn.Module):
        if args.burn_in <= 0:
            return None
        with tr.no_grad():
            return model(prefix)[1]

    # 1. per-step rates ------------------------------------------------------------------------------
    configs = [(f"{nl} RNN, rho={rho:g}", "rnn", nl, rho) for nl in ("tanh", "relu") for rho in args.rhos]
    configs += [("IRNN (relu, W_h = I)", "irnn", None, 1.0), ("np-RNN (relu)", "nprnn", None, 1.0)]
    configs += [("LSTM, default init", "lstm", None, None), ("LSTM, forget bias 1", "lstm", 1.0, None),
                ("LSTM, forget bias 3", "lstm", 3.0, None)]
    rows, measured = [], {}
    series: dict[str, list] = {"rnn": [], "lstm": []}
    bar = run.progress(len(configs) + 2 + 2 * (args.epochs // 2), "measure")
    for name, kind, arg, rho in configs:
        if kind in ("rnn", "irnn", "nprnn"):
            model = make_rnn(arg or "relu", rho, D, H, args.seed, dev)
            if kind == "irnn":
                init.identity_(model.weight_hh_l0)
            elif kind == "nprnn":
                init.np_rnn_(model.weight_hh_l0, seed=args.seed)
            radius = recurrent_spectral_radii(model)["weight_hh_l0"]
            radius_txt = f"{radius:.3f}"
        else:
            model = make_lstm(arg, D, H, args.seed, dev)
            radii = recurrent_spectral_radii(model)
            radius_txt = " ".join(f"{g}:{radii[f'weight_hh_l0[{g}]']:.2f}" for g in "ifgo")
        hx = burn_in(model)
        norms = bptt_gradient_norms(model, x, hx=hx)
        dist = np.arange(T, -1, -1)
        rel = norms / norms[-1]  # relative to ∂J/∂h⁽ᵀ⁾ itself
        rate = fit_rate(norms, skip=min(5, T // 4))
        entry = {"rate": rate, "norms": norms.tolist(), "ratio_T": float(rel[0]), "radius": radius_txt}
        if kind == "lstm":
            cell = bptt_gradient_norms(model, x, hx=hx, state="c")
            entry["cell_rate"] = fit_rate(cell, skip=min(5, T // 4))
            entry["cell_norms"] = cell.tolist()
        measured[name] = entry
        rows.append([name, radius_txt, rate, entry.get("cell_rate", "-"), float(rel[0]), classify(rate)])
        keep = np.isfinite(rel) & (rel > 0)
        series[kind if kind == "lstm" else "rnn"].append((name + (" (h)" if kind == "lstm" else ""), dist[keep], rel[keep]))
        if kind == "lstm":
            rel_c = np.asarray(entry["cell_norms"]) / entry["cell_norms"][-1]
            keep = np.isfinite(rel_c) & (rel_c > 0)
            series["lstm"].append((name + " (c)", dist[keep], rel_c[keep]))
        bar.update()

    # 2. gradient norm of the parameters vs sequence length, before/after clipping ------------------------
    lengths = sorted({max(2, int(v)) for v in np.linspace(T / 10, T, 10)})
    exploder = make_rnn("relu", args.explode_rho, D, H, args.seed, dev)
    head = nn.Linear(H, 1, seed=args.seed, dtype="float64").to(dev)
    target = tr.zeros(B, 1, dtype="float64", device=dev)
    clip_rows = []
    for n in lengths:
        before, after = param_grad_norm(exploder, head, x[:n], target, args.clip)
        clip_rows.append((n, before, after))
    bar.update(2)

    # 3. training the exploding RNN with and without clipping ------------------------------------------------
    n_train = min(T, 50)
    curves = {}
    for clip in (None, args.clip):
        rng = np.random.default_rng(args.seed + 1)  # the same batches for both runs
        model = make_rnn("relu", args.explode_rho, D, H, args.seed, dev)
        head = nn.Linear(H, 1, seed=args.seed, dtype="float64").to(dev)
        params = list(model.parameters()) + list(head.parameters())
        opt = optim.SGD(params, lr=args.lr)
        trained = Regressor(model, head)
        losses: list[float] = []
        with np.errstate(over="ignore", invalid="ignore"):  # the unclipped run overflows on purpose
            for _ in range(args.epochs):
                xb = rng.standard_normal((n_train, B, D))
                yb = xb[:, :, :1].mean(axis=0)  # target: the mean of the first input feature
                xt, yt = tr.tensor(xb, device=dev), tr.tensor(yb, device=dev)
                out_seq, _ = model(xt)
                loss = F.mse_loss(head(out_seq[-1]), yt)
                opt.zero_grad()
                loss.backward()
                if clip is not None:
                    clip_grad_norm_(params, clip)
                opt.step()
                losses.append(loss.item())
                if not math.isfinite(losses[-1]):  # diverged: nothing more to learn from this run
                    losses += [float("nan")] * (args.epochs - len(losses))
                    break
        curves["clipped" if clip else "unclipped"] = losses
        bar.update(args.epochs // 2)
    bar.close()
    ckpt = run.save_checkpoint(trained, "clipped_rnn.npz", hidden=H, inputs=D, rho=args.explode_rho, clip=args.clip,
                               steps=args.epochs, sequence_length=n_train, final_loss=curves["clipped"][-1])

    # report -------------------------------------------------------------------------------------------------
    print_table(rows, ["model", "spectral radius of W_h", "rate/step (h)", "rate/step (c)", f"‖g(0)‖/‖g({T})‖", "regime"],
                title=f"per-step factor r of ‖∂J/∂h(t)‖ ∝ r^(T−t)  (T={T}, hidden {H}, batch {B}, J = sum h(T))")
    run.log()
    print_table([[n, b, a] for n, b, a in clip_rows], ["T", "‖∇θJ‖ before clipping", f"after clip_grad_norm_({args.clip:g})"],
                title=f"ReLU RNN, rho={args.explode_rho:g}: total parameter-gradient norm vs sequence length")
    run.log()

    def summary(losses: list[float]) -> list:
        finite = [v for v in losses if math.isfinite(v)]
        first_bad = next((i + 1 for i, v in enumerate(losses) if not math.isfinite(v) or v > 1e6), None)
        return [losses[0], min(finite) if finite else float("nan"), losses[-1], first_bad or "never"]

    print_table([["no clipping"] + summary(curves["unclipped"]), [f"clip {args.clip:g}"] + summary(curves["clipped"])],
                ["SGD training", "first loss", "best loss", "last loss", "step loss > 1e6 or nan"],
                title=f"training the rho={args.explode_rho:g} ReLU RNN for {args.epochs} steps (T={n_train}, lr {args.lr:g})")

    titles = {"rnn": "Elman RNNs: W_h = rho x orthogonal, IRNN, np-RNN", "lstm": "LSTMs: hidden (h) and cell (c) state"}
    for key, title in titles.items():
        run.save_plot(f"gradient_norms_{key}.png", series[key], "distance T − t (steps back from the loss)",
                      "‖∂J/∂state(t)‖ / ‖∂J/∂state(T)‖", f"gradient norm through time\n{title}", logy=True)
    run.save_plot("clipping.png",
                  [("before clipping", [r[0] for r in clip_rows], [r[1] for r in clip_rows]),
                   (f"after clip_grad_norm_({args.clip:g})", [r[0] for r in clip_rows], [r[2] for r in clip_rows])],
                  "sequence length T", "‖∇θ J‖", f"ReLU RNN rho={args.explode_rho:g}: gradient norm", logy=True)
    plot_curves = []
    for label, losses in curves.items():
        ok = [(i + 1, v) for i, v in enumerate(losses) if math.isfinite(v) and v > 0]
        if ok:
            plot_curves.append((label, [s for s, _ in ok], [v for _, v in ok]))
    run.save_plot("clipping_training.png", plot_curves, "SGD step", "MSE", "training with/without clipping", logy=True)
    results = {"rates": {k: v["rate"] for k, v in measured.items()},
               "cell_rates": {k: v["cell_rate"] for k, v in measured.items() if "cell_rate" in v},
               "measurements": measured, "clipping": [{"T": n, "before": b, "after": a} for n, b, a in clip_rows],
               "training": curves, "checkpoint": ckpt, "args": run.flags(),
               "seconds": time.perf_counter() - t0}
    run.write_results(results)
    return results


if __name__ == "__main__":
    main()
