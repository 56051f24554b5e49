"""BPTT gradient diagnostics against closed forms, finite differences and the fused layers."""
import numpy as np
import pytest

import tinygrad_rnn as tr
from tinygrad_rnn.nn import init
from tinygrad_rnn.nn.diagnostics import bptt_gradient_norms, bptt_gradients, fit_rate, recurrent_spectral_radii, spectral_radius


def positive_relu_rnn(rho: float, hidden: int = 4, inputs: int = 3, seed: int = 0) -> tuple[tr.nn.RNN, np.ndarray]:
    """A ReLU RNN whose pre-activations stay positive (all weights, inputs, h0 > 0): it is linear,
    so ∂J/∂h⁽ᵗ⁾ = (W_hhᵀ)^(T−t)·1 for J = sum(h⁽ᵀ⁾), and the Perron root of W_hh is its spectral radius."""
    rng = np.random.default_rng(seed)
    rnn = tr.nn.RNN(inputs, hidden, nonlinearity="relu", dtype="float64")
    w = rng.uniform(0.1, 1.0, (hidden, hidden))
    w *= rho / spectral_radius(w)
    rnn.weight_hh_l0.copy_(w)
    rnn.weight_ih_l0.copy_(rng.uniform(0.1, 1.0, (hidden, inputs)))
    rnn.bias_ih_l0.copy_(rng.uniform(0.0, 0.1, hidden))
    rnn.bias_hh_l0.copy_(rng.uniform(0.0, 0.1, hidden))
    return rnn, w


@pytest.mark.parametrize("steps", [1, 2, 30])
def test_linear_rnn_matches_closed_form(steps):
    rnn, w = positive_relu_rnn(0.9)
    rng = np.random.default_rng(1)
    x = tr.tensor(rng.uniform(0.1, 1.0, (steps, 2, 3)))
    h0 = tr.tensor(rng.uniform(0.1, 1.0, (1, 2, 4)))
    g = bptt_gradients(rnn, x, hx=h0)
    assert g.shape == (steps + 1, 2, 4)
    for t in range(steps + 1):
        want = np.linalg.matrix_power(w.T, steps - t) @ np.ones(4)
        np.testing.assert_allclose(g[t], np.broadcast_to(want, (2, 4)), rtol=1e-12, atol=1e-12)
    norms = bptt_gradient_norms(rnn, x, hx=h0)
    np.testing.assert_allclose(norms, np.linalg.norm(g.reshape(steps + 1, -1), axis=1), rtol=1e-12)
    np.testing.assert_allclose(norms[-1], np.sqrt(2 * 4))  # ∂J/∂h⁽ᵀ⁾ = 1 for both sequences


@pytest.mark.parametrize("rho", [0.7, 0.95, 1.0, 1.3])
def test_rate_follows_spectral_radius(rho):
    """Vanishing below 1, exploding above: the fitted per-step factor is the Perron root."""
    rnn, _ = positive_relu_rnn(rho, hidden=6)
    x = tr.tensor(np.random.default_rng(2).uniform(0.1, 1.0, (40, 3, 3)))
    norms = bptt_gradient_norms(rnn, x)
    rate = fit_rate(norms, skip=5)
    assert rate == pytest.approx(rho, rel=1e-6)
    assert (np.diff(norms) > 0).all() if rho < 1 else (rho == 1.0 or (np.diff(norms) < 0).all())


def test_tanh_rnn_vanishes_faster_than_its_radius():
    """tanh' ≤ 1 only shrinks the Jacobians: with ρ = 0.5 (orthogonal W_hh) the rate is at most 0.5,
    with ρ = 1, no bias and tiny inputs (tanh' ≈ 1) an orthogonal W_hh keeps the norm almost exactly."""
    for scale, lo, hi in ((0.5, 0.0, 0.5 + 1e-9), (1.0, 0.99, 1.0 + 1e-9)):
        rnn = tr.nn.RNN(2, 8, seed=0, dtype="float64")
        init.orthogonal_(rnn.weight_hh_l0, gain=scale, seed=0)
        init.zeros_(rnn.bias_ih_l0), init.zeros_(rnn.bias_hh_l0)
        x = tr.randn(30, 4, 2, seed=1, dtype="float64") * 1e-3
        assert recurrent_spectral_radii(rnn)["weight_hh_l0"] == pytest.approx(scale)
        rate = fit_rate(bptt_gradient_norms(rnn, x))
        assert lo <= rate <= hi, (scale, rate)


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_grad_of_initial_state_matches_finite_differences_of_fused_layer(mode, num_layers):
    """Row 0 (∂J/∂h⁽⁰⁾) of the unrolled diagnostic against central differences of the *fused* module."""
    cls = {"rnn_tanh": tr.nn.RNN, "lstm": tr.nn.LSTM, "gru": tr.nn.GRU}[mode]
    m = cls(3, 4, num_layers=num_layers, seed=3, dtype="float64")
    x = tr.randn(6, 2, 3, seed=4, dtype="float64")
    rng = np.random.default_rng(5)
    h0 = rng.standard_normal((num_layers, 2, 4)) * 0.5
    c0 = rng.standard_normal((num_layers, 2, 4)) * 0.5

    def hx(h):
        return (tr.tensor(h), tr.tensor(c0)) if mode == "lstm" else tr.tensor(h)

    def j(h):
        out = m(x, hx(h))[1]
        h_n = out[0] if mode == "lstm" else out
        return float(np.tanh(h_n.numpy()[-1]).sum())  # a nonlinear loss of the top layer's h⁽ᵀ⁾

    for layer in range(num_layers):
        g = bptt_gradients(m, x, hx=hx(h0), loss_fn=lambda h: h.tanh().sum(), layer=layer)[0]
        num = np.zeros_like(h0[layer])
        eps = 1e-6
        for idx in np.ndindex(*num.shape):
            hp, hm = h0.copy(), h0.copy()
            hp[(layer, *idx)] += eps
            hm[(layer, *idx)] -= eps
            num[idx] = (j(hp) - j(hm)) / (2 * eps)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cls", [tr.nn.RNN, tr.nn.LSTM, tr.nn.GRU])
def test_unrolled_final_state_equals_fused_forward_and_leaves_model_alone(cls):
    m = cls(3, 5, seed=0)
    x = tr.randn(7, 2, 3, seed=1)
    seen = {}

    def loss(h):
        seen["h"] = h.numpy().copy()
        return h.sum()

    bptt_gradients(m, x, loss_fn=loss)
    out = m(x)[1]
    h_n = (out[0] if cls is tr.nn.LSTM else out).numpy()[0]
    np.testing.assert_allclose(seen["h"], h_n, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in m.parameters())


def test_layouts_cells_and_lstm_cell_state():
    lstm = tr.nn.LSTM(3, 4, seed=0, dtype="float64")
    x = tr.randn(5, 2, 3, seed=1, dtype="float64")
    ref = bptt_gradient_norms(lstm, x)
    bf = tr.nn.LSTM(3, 4, batch_first=True, dtype="float64")
    bf.load_state_dict(lstm.state_dict())
    np.testing.assert_allclose(bptt_gradient_norms(bf, x.transpose(0, 1)), ref, rtol=1e-12)
    cell = tr.nn.LSTMCell(3, 4, dtype="float64")
    cell.load_state_dict({k[:-3]: v for k, v in lstm.state_dict().items()})
    np.testing.assert_allclose(bptt_gradient_norms(cell, x), ref, rtol=1e-12)
    one = bptt_gradient_norms(lstm, x[:, 0])  # unbatched (T, D)
    np.testing.assert_allclose(one, bptt_gradient_norms(lstm, x[:, :1]), rtol=1e-12)
    c = bptt_gradient_norms(lstm, x, state="c")
    assert c.shape == (6,) and np.isfinite(c).all()
    with pytest.raises(ValueError, match="state"):
        bptt_gradient_norms(tr.nn.GRU(3, 4), x.float(), state="c")
    with pytest.raises(NotImplementedError, match="bidirectional"):
        bptt_gradient_norms(tr.nn.RNN(3, 4, bidirectional=True), x.float())


def test_lengths_match_each_sequence_alone():
    rnn = tr.nn.GRU(2, 3, seed=0, dtype="float64")
    x = tr.randn(6, 3, 2, seed=1, dtype="float64")
    lengths = [6, 2, 4]
    g = bptt_gradients(rnn, x, lengths=lengths)
    per = bptt_gradient_norms(rnn, x, lengths=lengths, per_sample=True)
    assert per.shape == (7, 3)
    for b, n in enumerate(lengths):
        alone = bptt_gradients(rnn, x[:n, b:b + 1])[:, 0]
        np.testing.assert_allclose(g[: n + 1, b], alone, rtol=1e-12, atol=1e-14)
        assert np.isnan(g[n + 1:, b]).all() and np.isnan(per[n + 1:, b]).all()
    batch = bptt_gradient_norms(rnn, x, lengths=lengths)
    np.testing.assert_allclose(batch, np.sqrt(np.nansum(per ** 2, axis=1)))


def test_spectral_radius_and_gate_blocks():
    assert spectral_radius(np.array([[0.0, -3.0], [3.0, 0.0]])) == pytest.approx(3.0)  # complex pair ±3i
    assert spectral_radius(tr.eye(4) * 0.5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="square"):
        spectral_radius(np.ones((2, 3)))
    lstm = tr.nn.LSTM(2, 3, num_layers=2)
    for layer in range(2):
        w = getattr(lstm, f"weight_hh_l{layer}")
        w.copy_(np.concatenate([s * np.eye(3) for s in (0.1, 0.2, 0.3, 0.4)]) * (layer + 1))
    radii = recurrent_spectral_radii(lstm)
    assert list(radii) == [f"weight_hh_l{k}[{g}]" for k in range(2) for g in "ifgo"]
    np.testing.assert_allclose(list(radii.values()), [0.1, 0.2, 0.3, 0.4, 0.2, 0.4, 0.6, 0.8], rtol=1e-6)
    assert list(recurrent_spectral_radii(tr.nn.RNNCell(2, 3))) == ["weight_hh"]


def test_fit_rate():
    d = np.arange(20)
    assert fit_rate(3.0 * 1.1 ** d[::-1]) == pytest.approx(1.1)
    assert fit_rate([1.0, 2.0, 4.0], distances=[0, 1, 2]) == pytest.approx(2.0)
    assert fit_rate([0.0, 0.0, 1.0]) != fit_rate([0.0, 0.0, 1.0])  # nan: fewer than two usable points
