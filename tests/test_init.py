"""Weight initialisation (tinygrad_rnn.nn.init): the bounds, spreads and spectra each scheme
promises, reproducibility under seed=/generator=, and PyTorch's fan and gain conventions."""
import math

import numpy as np
import pytest

import tinygrad_rnn as tr
from tinygrad_rnn.nn import init


@pytest.fixture
def torch():
    import torch  # the parity extra installs it: never a skip

    return torch


def _t(*shape, dtype=np.float64):
    return tr.Tensor(np.zeros(shape, dtype=dtype), requires_grad=True)


# ---------------------------------------------------------------------------------------
# gains and fans


def test_calculate_gain_by_hand():
    assert init.calculate_gain("linear") == 1.0 and init.calculate_gain("sigmoid") == 1.0
    assert init.calculate_gain("tanh") == 5 / 3
    assert init.calculate_gain("relu") == math.sqrt(2)
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)), rel=1e-15)
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3), rel=1e-15)
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError, match="'swish'"):
        init.calculate_gain("swish")


@pytest.mark.torch
def test_calculate_gain_matches_torch(torch):
    for name, param in [("linear", None), ("conv1d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                        ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)]:
        assert init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param), rel=1e-15)


def test_fan_errors():
    with pytest.raises(ValueError, match=r"fewer than 2 dimensions, got shape \(5,\)"):
        init.xavier_uniform_(_t(5))
    with pytest.raises(ValueError, match="fan_middle"):
        init.kaiming_uniform_(_t(3, 4), mode="fan_middle")


# ---------------------------------------------------------------------------------------
# fan-scaled distributions: bounds and empirical spread on a large matrix


def test_xavier_uniform_bound_and_std():
    w = init.xavier_uniform_(_t(300, 500), gain=2.0, seed=0).numpy()
    a = 2.0 * math.sqrt(6 / 800)
    assert np.abs(w).max() <= a and np.abs(w).max() > 0.999 * a
    assert w.std() == pytest.approx(a / math.sqrt(3), rel=0.01)
    assert abs(w.mean()) < 0.01 * a


def test_xavier_normal_std_uses_the_receptive_field():
    w = init.xavier_normal_(_t(40, 60, 5), seed=1).numpy()  # fan_in 300, fan_out 200
    assert w.std() == pytest.approx(math.sqrt(2 / 500), rel=0.02)


def test_kaiming_uniform_linear_default_is_one_over_sqrt_fan_in():
    w = init.kaiming_uniform_(_t(200, 400), a=math.sqrt(5), seed=2).numpy()
    bound = 1 / math.sqrt(400)
    assert np.abs(w).max() <= bound * (1 + 1e-12) and np.abs(w).max() > 0.999 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    w = init.kaiming_uniform_(_t(200, 400), mode="fan_out", nonlinearity="relu", seed=2).numpy()
    assert np.abs(w).max() == pytest.approx(math.sqrt(2) * math.sqrt(3 / 200), rel=1e-3)


def test_kaiming_normal_std():
    w = init.kaiming_normal_(_t(300, 400), nonlinearity="relu", seed=3).numpy()
    assert w.std() == pytest.approx(math.sqrt(2 / 400), rel=0.01)
    with pytest.warns(UserWarning, match="zero-element"):
        init.kaiming_normal_(_t(0, 4))


@pytest.mark.torch
def test_spreads_match_torch(torch):
    torch.manual_seed(0)
    pairs = [
        (lambda t: init.xavier_uniform_(t, seed=0), torch.nn.init.xavier_uniform_),
        (lambda t: init.xavier_normal_(t, gain=0.5, seed=0), lambda t: torch.nn.init.xavier_normal_(t, gain=0.5)),
        (lambda t: init.kaiming_uniform_(t, a=math.sqrt(5), seed=0), lambda t: torch.nn.init.kaiming_uniform_(t, a=math.sqrt(5))),
        (lambda t: init.kaiming_normal_(t, mode="fan_out", seed=0), lambda t: torch.nn.init.kaiming_normal_(t, mode="fan_out")),
    ]
    for ours, theirs in pairs:
        a = ours(_t(256, 128, 3)).numpy()
        b = theirs(torch.zeros(256, 128, 3, dtype=torch.float64)).numpy()
        assert a.std() == pytest.approx(b.std(), rel=0.02)
        assert np.abs(a).max() == pytest.approx(np.abs(b).max(), rel=0.2)


# ---------------------------------------------------------------------------------------
# plain fills and reproducibility


def test_uniform_normal_constant_fills():
    w = init.uniform_(_t(100, 100), -2.0, 3.0, seed=0).numpy()
    assert w.min() >= -2.0 and w.max() < 3.0 and w.mean() == pytest.approx(0.5, abs=0.05)
    w = init.normal_(_t(100, 100), 1.0, 0.5, seed=0).numpy()
    assert w.mean() == pytest.approx(1.0, abs=0.02) and w.std() == pytest.approx(0.5, rel=0.02)
    t = _t(3, 4)
    assert init.constant_(t, 0.25) is t and np.all(t.numpy() == 0.25)
    assert np.all(init.ones_(t).numpy() == 1.0) and np.all(init.zeros_(t).numpy() == 0.0)
    np.testing.assert_array_equal(init.eye_(_t(2, 3)).numpy(), np.eye(2, 3))


def test_init_keeps_leaf_dtype_and_records_nothing():
    t = _t(4, 4, dtype=np.float32)
    init.orthogonal_(t, seed=0)
    assert t.dtype == np.float32 and t.is_leaf and t.requires_grad and t.grad_fn is None
    t64 = init.orthogonal_(_t(4, 4), seed=0)
    np.testing.assert_array_equal(t.numpy(), t64.numpy().astype(np.float32))


@pytest.mark.parametrize("fn", [
    lambda t, **k: init.uniform_(t, **k), lambda t, **k: init.normal_(t, **k), lambda t, **k: init.xavier_uniform_(t, **k),
    lambda t, **k: init.xavier_normal_(t, **k), lambda t, **k: init.kaiming_uniform_(t, **k),
    lambda t, **k: init.kaiming_normal_(t, **k), lambda t, **k: init.orthogonal_(t, **k), lambda t, **k: init.np_rnn_(t, **k),
])
def test_seeds_and_generators_are_reproducible(fn):
    a = fn(_t(6, 6), seed=7).numpy()
    np.testing.assert_array_equal(a, fn(_t(6, 6), seed=7).numpy())
    assert not np.array_equal(a, fn(_t(6, 6), seed=8).numpy())
    g1, g2 = tr.Generator(3), tr.Generator(3)
    first, second = fn(_t(6, 6), generator=g1).numpy(), fn(_t(6, 6), generator=g1).numpy()
    assert not np.array_equal(first, second), "a generator must advance"
    np.testing.assert_array_equal(first, fn(_t(6, 6), generator=g2).numpy())
    np.testing.assert_array_equal(second, fn(_t(6, 6), generator=g2).numpy())
    tr.manual_seed(11)
    c = fn(_t(6, 6)).numpy()
    tr.manual_seed(11)
    np.testing.assert_array_equal(c, fn(_t(6, 6)).numpy())
    with pytest.raises(ValueError, match="either seed= or generator="):
        fn(_t(6, 6), seed=1, generator=g1)


# ---------------------------------------------------------------------------------------
# recurrent matrices: the spectra they promise


@pytest.mark.parametrize("shape", [(64, 64), (50, 20), (20, 50), (6, 2, 5)])
def test_orthogonal_is_orthonormal_with_singular_values_gain(shape):
    gain = 1.5
    w = init.orthogonal_(_t(*shape), gain=gain, seed=0).numpy().reshape(shape[0], -1)
    rows, cols = w.shape
    k = min(rows, cols)
    gram = w.T @ w if rows >= cols else w @ w.T
    np.testing.assert_allclose(gram, gain ** 2 * np.eye(k), atol=1e-12)
    np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False), np.full(k, gain), rtol=1e-12)


def test_orthogonal_sign_correction_makes_it_unbiased():
    # without the diag(R) sign fix, Householder QR makes Q[0, 0] negative every time
    firsts = [init.orthogonal_(_t(3, 3), seed=s).numpy()[0, 0] for s in range(300)]
    assert 0.38 < np.mean(np.array(firsts) > 0) < 0.62


def test_orthogonal_on_stacked_lstm_weights():
    lstm = tr.nn.LSTM(3, 8)
    w = init.orthogonal_(lstm.weight_hh_l0, seed=0)
    assert w is lstm.weight_hh_l0 and w.shape == (32, 8)
    np.testing.assert_allclose(w.numpy().T @ w.numpy(), np.eye(8), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(32, 8\)"):
        init.identity_(lstm.weight_hh_l0)


def test_identity_eigenvalues_are_scale():
    w = init.identity_(_t(16, 16), scale=0.5).numpy()
    np.testing.assert_array_equal(np.linalg.eigvals(w), np.full(16, 0.5))
    np.testing.assert_array_equal(w, 0.5 * np.eye(16))
    with pytest.raises(ValueError, match=r"square 2-D tensor, got shape \(8, 4\)"):
        init.identity_(_t(8, 4))
    with pytest.raises(ValueError, match=r"\(2, 2, 2\)"):
        init.identity_(_t(2, 2, 2))


@pytest.mark.parametrize("n", [1, 2, 64, 200])
def test_np_rnn_is_spd_with_top_eigenvalue_one(n):
    w = init.np_rnn_(_t(n, n), seed=n).numpy()
    np.testing.assert_array_equal(w, w.T)
    eig = np.linalg.eigvalsh(w)
    assert eig.max() == pytest.approx(1.0, abs=1e-12)
    assert np.all(eig > 0) and np.all(eig <= 1.0 + 1e-12)
    np.linalg.cholesky(w)  # positive definite
    if n >= 64:
        # R Rᵀ/N has a Marchenko-Pastur spectrum on [0, 4]: the others really are below 1, not all ~1
        assert eig[-2] < 1.0 - 1e-3 and eig.min() < 0.4


def test_np_rnn_float32_and_errors():
    w = init.np_rnn_(_t(32, 32, dtype=np.float32), seed=0).numpy()
    assert w.dtype == np.float32
    assert np.linalg.eigvalsh(w.astype(np.float64)).max() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"square 2-D tensor, got shape \(3, 4\)"):
        init.np_rnn_(_t(3, 4))
