"""Gradient diagnostics for recurrent layers: how ‖∂J⁽ᵀ⁾/∂h⁽ᵗ⁾‖ decays or grows with T − t.

BPTT multiplies one Jacobian ∂h⁽ᵗ⁾/∂h⁽ᵗ⁻¹⁾ = diag(σ'(a⁽ᵗ⁾)) W_hh per step, so the gradient that
reaches step t from the loss at the final step T shrinks (or blows up) roughly like ρ(W_hh)^(T−t)
times the product of the σ' factors (Pascanu, Mikolov & Bengio 2013). These helpers measure it:

* :func:`bptt_gradients` / :func:`bptt_gradient_norms`: unroll the layer's cell with primitive ops
  (the composite path of ``nn/rnn.py``), ``retain_grad()`` every hidden state, backprop the loss of
  the last step only, and read ∂J⁽ᵀ⁾/∂h⁽ᵗ⁾ for t = 0 … T.
* :func:`spectral_radius` / :func:`recurrent_spectral_radii`: ρ(W_hh), per gate block for LSTM/GRU.
* :func:`fit_rate`: the per-step factor r of a fitted ‖g‖ ∝ r^(T−t).

    >>> import tinygrad_rnn as tr
    >>> rnn = tr.nn.RNN(2, 4, seed=0)
    >>> bptt_gradient_norms(rnn, tr.randn(6, 3, 2, seed=0)).shape   # h⁽⁰⁾ … h⁽⁶⁾
    (7,)

The model's own parameters and their ``.grad`` are left untouched: the unrolled graph uses
detached views of the weights, and the only leaves that ask for a gradient are the initial state.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..backend.recurrence import GATE_NAMES
from ..ops import where
from ..tensor import Tensor, enable_grad, zeros
from .rnn import GRUCell, LSTMCell, RNNBase, RNNCell, _CellBase, gru_cell, lstm_cell, rnn_cell

__all__ = ["bptt_gradients", "bptt_gradient_norms", "spectral_radius", "recurrent_spectral_radii", "fit_rate"]



def _mode_of(model: Any) -> str:
    if isinstance(model, RNNBase):
        return model.mode
    if isinstance(model, LSTMCell):
        return "lstm"
    if isinstance(model, GRUCell):
        return "gru"
    if isinstance(model, RNNCell):
        return f"rnn_{model.nonlinearity}"
    raise TypeError(f"expected an nn.RNN/LSTM/GRU or a cell, got {type(model).__name__}")


def _layers(model: Any) -> list[list[Tensor | None]]:
    """[w_ih, w_hh, b_ih, b_hh] per layer, detached so the diagnostic leaves the model's .grad alone."""
    if isinstance(model, _CellBase):
        ws = [model.weight_ih, model.weight_hh, model.bias_ih, model.bias_hh]
        return [[None if w is None else w.detach() for w in ws]]
    out = []
    for layer in range(model.num_layers):
        ws = model.layer_weights(layer)
        if not model.bias:
            ws = ws + [None, None]
        out.append([None if w is None else w.detach() for w in ws])
    return out


def bptt_gradients(model: Any, x: Tensor, hx: Any = None, loss_fn: Callable[[Tensor], Tensor] | None = None,
                   lengths: Any = None, layer: int = -1, state: str = "h") -> np.ndarray:
    """∂J⁽ᵀ⁾/∂h⁽ᵗ⁾ for t = 0 … T as one array of shape (T+1, batch, hidden); row 0 is h⁽⁰⁾.

    ``model``: an ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (unidirectional; any ``num_layers``) or an
    ``RNNCell``/``LSTMCell``/``GRUCell``. ``x``: the input sequence, laid out as the module expects
    (``(T, B, D)``, ``(B, T, D)`` with ``batch_first``, or unbatched ``(T, D)``; cells take ``(T, B, D)``).
    ``hx``: the initial state as the module takes it (``(h0, c0)`` for the LSTM), zeros by default.
    ``loss_fn``: J as a function of the top layer's final hidden state h⁽ᵀ⁾ (B, H), a scalar
    Tensor; default ``h_T.sum()``. ``layer``: whose states to report (default the top one).
    ``state``: ``"h"``, or ``"c"`` for the LSTM's cell state.
    ``lengths``: true lengths of a padded batch, as in ``RNNBase.forward``; a sequence's state
    stops changing after its last step, so its rows past ``lengths[b]`` hold no information and
    are returned as NaN.

    Limits: bidirectional layers are refused; dropout between layers is not applied (the
    measurement is of the deterministic network); the computation is float64-exact only if the
    model is float64 (``model.double()``).
    """
    mode = _mode_of(model)
    if getattr(model, "bidirectional", False):
        raise NotImplementedError("bptt_gradients: bidirectional layers are not supported (measure each direction "
                                  "with a unidirectional layer holding its weights)")
    if state not in ("h", "c") or (state == "c" and mode != "lstm"):
        raise ValueError(f"bptt_gradients: state must be 'h' (or 'c' for an LSTM), got {state!r}")
    if not isinstance(x, Tensor):
        raise TypeError(f"bptt_gradients: x must be a Tensor, got {type(x).__name__}")
    cell = isinstance(model, _CellBase)
    layers = _layers(model)
    n_layers = len(layers)
    if not -n_layers <= layer < n_layers:
        raise ValueError(f"bptt_gradients: layer {layer} out of range for {n_layers} layer(s)")
    layer %= n_layers
    hidden = model.hidden_size
    lstm = mode == "lstm"
    x = x.detach()
    if x.dtype != layers[0][0].dtype:
        raise TypeError(f"bptt_gradients: x has dtype {x.dtype} but the model is {layers[0][0].dtype}")
    unbatched = x.ndim == 2
    if unbatched:
        x = x.unsqueeze(1)
    elif x.ndim != 3:
        raise ValueError(f"bptt_gradients: x must be 2-D or 3-D, got shape {x.shape}")
    elif not cell and model.batch_first:
        x = x.transpose(0, 1)
    t_, b_ = x.shape[0], x.shape[1]
    if x.shape[2] != model.input_size:
        raise ValueError(f"bptt_gradients: x has {x.shape[2]} features but the model's input_size is {model.input_size}")

    # initial states: fresh leaves that ask for a gradient, so row 0 (h⁽⁰⁾) is measured too
    def init_state(s: Tensor | None) -> list[Tensor]:
        if s is None:
            return [zeros(b_, hidden, dtype=x.dtype, device=x.device).requires_grad_() for _ in range(n_layers)]
        arr = s.detach().reshape(n_layers, b_, hidden) if not cell else s.detach().reshape(1, b_, hidden)
        return [Tensor(arr.numpy()[k].copy(), device=x.device).requires_grad_() for k in range(n_layers)]

    if lstm:
        h0, c0 = (None, None) if hx is None else hx
        hs0, cs0 = init_state(h0), init_state(c0)
    else:
        hs0, cs0 = init_state(hx), [None] * n_layers
    keep = None
    valid = None
    if lengths is not None:
        lens = lengths.numpy() if isinstance(lengths, Tensor) else np.asarray(lengths)
        if lens.shape != (b_,) or lens.dtype.kind not in "iu" or lens.min() < 1 or lens.max() > t_:
            raise ValueError(f"bptt_gradients: lengths must be ({b_},) integers in [1, {t_}], got {lens!r}")
        valid = np.arange(t_ + 1)[:, None] <= lens[None, :]  # (T+1, B): h⁽⁰⁾ … h⁽ᴸ⁾ are real states
        keep = [Tensor(valid[t + 1][:, None], device=x.device) for t in range(t_)]

    watched: list[Tensor] = []
    with enable_grad():
        inp = [x[t] for t in range(t_)]
        for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(layers):
            h, c = hs0[k], cs0[k]
            if k == layer:
                watched.append(c if state == "c" else h)
            outs = []
            for t in range(t_):
                if lstm:
                    h_new, c_new = lstm_cell(inp[t], h, c, w_ih, w_hh, b_ih, b_hh)
                elif mode == "gru":
                    h_new, c_new = gru_cell(inp[t], h, w_ih, w_hh, b_ih, b_hh), None
                else:
                    h_new, c_new = rnn_cell(inp[t], h, w_ih, w_hh, b_ih, b_hh, mode[4:]), None
                if keep is not None:
                    h_new = where(keep[t], h_new, h)
                    c_new = where(keep[t], c_new, c) if lstm else None
                h, c = h_new, c_new
                if k == layer:
                    watched.append((c if state == "c" else h).retain_grad())
                outs.append(h)
            inp = outs
        loss = h.sum() if loss_fn is None else loss_fn(h)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"bptt_gradients: loss_fn must return a scalar Tensor, got {getattr(loss, 'shape', loss)!r}")
        loss.reshape(()).backward()
    grads = np.stack([np.zeros((b_, hidden)) if w.grad is None else w.grad.numpy().astype(np.float64)
                      for w in watched])
    if valid is not None:
        grads[~valid] = np.nan
    return grads


def bptt_gradient_norms(model: Any, x: Tensor, hx: Any = None, loss_fn: Callable[[Tensor], Tensor] | None = None,
                        lengths: Any = None, per_sample: bool = False, **kw: Any) -> np.ndarray:
    """‖∂J⁽ᵀ⁾/∂h⁽ᵗ⁾‖ for t = 0 … T, shape (T+1,): row t is the state after t steps, T − t the distance.

    The norm is the Frobenius norm over the batch (the gradient of the summed loss), or one L2
    norm per sequence with ``per_sample=True`` (shape (T+1, B)). Arguments as :func:`bptt_gradients`
    (``layer=``, ``state=`` pass through); padded steps (``lengths``) are NaN per sample and left
    out of the batch norm.

        >>> import tinygrad_rnn as tr
        >>> lstm = tr.nn.LSTM(3, 5, seed=0)
        >>> g = bptt_gradient_norms(lstm, tr.randn(10, 2, 3, seed=1)); bool(g[-1] > g[0])
        True
    """
    g = bptt_gradients(model, x, hx=hx, loss_fn=loss_fn, lengths=lengths, **kw)
    per = np.sqrt(np.sum(g * g, axis=-1))  # NaN rows stay NaN
    if per_sample:
        return per
    return np.sqrt(np.nansum(per * per, axis=1))


def spectral_radius(w: Any) -> float:
    """max |λ| over the eigenvalues of a square matrix (Tensor or array).

        >>> spectral_radius(np.array([[0.0, 2.0], [0.5, 0.0]]))
        1.0
    """
    a = w.numpy() if isinstance(w, Tensor) else np.asarray(w)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"spectral_radius needs a square matrix, got shape {a.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(np.linalg.eigvals(a.astype(np.float64)))))


def recurrent_spectral_radii(model: Any) -> dict[str, float]:
    """ρ of every recurrent matrix: ``{"weight_hh_l0": ρ}`` for an RNN; per gate block for the LSTM
    (``"weight_hh_l0[i]"``, ``[f]``, ``[g]``, ``[o]``) and the GRU (``[r]``, ``[z]``, ``[n]``).

        >>> import tinygrad_rnn as tr
        >>> sorted(recurrent_spectral_radii(tr.nn.GRU(2, 3)))
        ['weight_hh_l0[n]', 'weight_hh_l0[r]', 'weight_hh_l0[z]']
    """
    mode = _mode_of(model)
    if isinstance(model, _CellBase):
        named = [("weight_hh", model.weight_hh)]
    else:
        named = [(n, p) for n, p in model.named_parameters() if n.startswith("weight_hh")]
    hsz = model.hidden_size
    out: dict[str, float] = {}
    for name, w in named:
        arr = w.numpy()
        gates = GATE_NAMES[mode]
        if not gates:
            out[name] = spectral_radius(arr)
        for k, gname in enumerate(gates):
            out[f"{name}[{gname}]"] = spectral_radius(arr[k * hsz:(k + 1) * hsz])
    return out


def fit_rate(norms: Any, skip: int = 0, distances: Any = None) -> float:
    """The per-step factor r of a least-squares fit log‖g‖ ≈ a + (T − t)·log r.

    ``norms`` as returned by :func:`bptt_gradient_norms` (row t = h⁽ᵗ⁾, last row = h⁽ᵀ⁾), or give
    the ``distances`` explicitly. r < 1: vanishing, r > 1: exploding. ``skip`` drops the first
    ``skip`` distances (the transient next to the loss). Zero or non-finite norms are ignored.

        >>> round(fit_rate([0.25, 0.5, 1.0]), 6)
        0.5
    """
    n = np.asarray(norms, dtype=np.float64).reshape(-1)
    d = np.arange(len(n))[::-1].astype(np.float64) if distances is None else np.asarray(distances, dtype=np.float64)
    ok = np.isfinite(n) & (n > 0) & (d >= skip)
    if ok.sum() < 2:
        return float("nan")
    slope = np.polyfit(d[ok], np.log(n[ok]), 1)[0]
    return float(np.exp(slope))
