"""``nn.Module`` and the basic layers: registration and PyTorch's parameter order, state dicts and
their errors, atomic checkpoints, train/eval, zero_grad, dtype/device moves, and the layers'
forward passes against NumPy."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

import tinygrad_rnn as tr
from tinygrad_rnn import nn


class Net(nn.Module):
    """Nested two levels deep, to pin PyTorch's depth-first order."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Embedding(7, 3, seed=0), nn.LSTM(3, 4, seed=1))
        self.head = nn.Linear(4, 2, seed=2)
        self.scale = nn.Parameter(tr.ones(2))

    def forward(self, ids):
        out, _ = self.enc[1](self.enc[0](ids))
        return self.head(out) * self.scale


NET_NAMES = ["scale", "enc.0.weight", "enc.1.weight_ih_l0", "enc.1.weight_hh_l0", "enc.1.bias_ih_l0",
             "enc.1.bias_hh_l0", "head.weight", "head.bias"]


def _raises(exc, *fragments):
    return pytest.raises(exc, match=".*".join(re.escape(f) for f in fragments))


# ---------------------------------------------------------------------------------------
# registration and order


def test_registration():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(tr.zeros(2, 3))
            self.plain = tr.zeros(4)  # a plain Tensor is not a parameter
            self.sub = nn.Linear(3, 1)
            self.register_parameter("maybe", None)

    m = M()
    assert [n for n, _ in m.named_parameters()] == ["w", "sub.weight", "sub.bias"]
    assert m.maybe is None and "maybe" in m._parameters
    assert [n for n, _ in m.named_modules()] == ["", "sub"]
    assert list(m.children()) == [m.sub]
    assert m.num_parameters() == 6 + 3 + 1
    m.w = tr.zeros(2, 3)  # replacing a Parameter by a plain Tensor unregisters it
    assert [n for n, _ in m.named_parameters()] == ["sub.weight", "sub.bias"]
    del m.sub
    assert list(m.named_parameters()) == [] and not hasattr(m, "sub")
    m.w = nn.Parameter(tr.ones(1))
    assert [n for n, _ in m.named_parameters()] == ["w"]


def test_setattr_before_init_is_an_error():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(tr.zeros(1))

    with _raises(AttributeError, "super().__init__()"):
        Bad()


def test_shared_parameter_and_module_listed_once():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, nn.Tanh(), lin)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias"]
    assert len(list(seq.modules())) == 3  # seq, lin, tanh


def test_nested_order_is_pytorch_depth_first():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == NET_NAMES
    assert [n for n, _ in net.named_modules()] == ["", "enc", "enc.0", "enc.1", "head"]
    assert list(net.state_dict()) == NET_NAMES


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_rnn_parameter_order_per_layer_per_direction(cls):
    m = cls(3, 4, num_layers=2, bidirectional=True)
    expected = [f"{w}_l{layer}{sfx}" for layer in range(2) for sfx in ("", "_reverse")
                for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert [n for n, _ in m.named_parameters()] == expected
    g = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}[cls] * 4
    shapes = dict((n, p.shape) for n, p in m.named_parameters())
    assert shapes["weight_ih_l0"] == (g, 3) and shapes["weight_ih_l1_reverse"] == (g, 8)
    assert shapes["weight_hh_l1"] == (g, 4) and shapes["bias_hh_l0_reverse"] == (g,)
    no_bias = cls(3, 4, num_layers=2, bias=False)
    assert [n for n, _ in no_bias.named_parameters()] == ["weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1"]


def test_cell_parameter_names():
    assert list(nn.LSTMCell(3, 4).state_dict()) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    assert list(nn.GRUCell(3, 4, bias=False).state_dict()) == ["weight_ih", "weight_hh"]


# ---------------------------------------------------------------------------------------
# state dicts


def test_state_dict_is_a_copy():
    lin = nn.Linear(3, 2)
    sd = lin.state_dict()
    assert isinstance(sd["weight"], np.ndarray) and sd["weight"].shape == (2, 3)
    sd["weight"][...] = 42.0
    assert not np.any(lin.weight.numpy() == 42.0)


def test_load_state_dict_round_trip_between_modules():
    a, b = Net(), Net()
    for p in b.parameters():
        p.data[...] = 0
    missing, unexpected = b.load_state_dict(a.state_dict())
    assert missing == [] and unexpected == []
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)
    ids = np.array([[1, 2], [3, 0]])
    np.testing.assert_array_equal(a(ids).numpy(), b(ids).numpy())


def test_load_state_dict_strict_errors_name_keys_and_shapes():
    lin = nn.Linear(3, 4)
    before = lin.state_dict()
    with _raises(ValueError, "missing keys", "'bias'"):
        lin.load_state_dict({"weight": np.zeros((4, 3))})
    with _raises(ValueError, "unexpected keys", "'extra'"):
        lin.load_state_dict({**before, "extra": np.zeros(2)})
    with _raises(ValueError, "weight", "(5, 3)", "(4, 3)"):
        lin.load_state_dict({"weight": np.zeros((5, 3)), "bias": np.zeros(4)})
    with _raises(ValueError, "bias", "int64"):
        lin.load_state_dict({"weight": np.zeros((4, 3)), "bias": np.zeros(4, dtype=np.int64)})
    with _raises(ValueError, "weight", "non-finite"):
        lin.load_state_dict({"weight": np.full((4, 3), np.nan), "bias": np.zeros(4)})
    with _raises(TypeError, "dict", "list"):
        lin.load_state_dict([("weight", np.zeros((4, 3)))])
    # a failed load changes nothing, not even the keys that were fine
    with pytest.raises(ValueError):
        lin.load_state_dict({"weight": np.ones((4, 3)), "bias": np.zeros(5)})
    for k, v in lin.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_non_strict_returns_missing_and_unexpected():
    lin = nn.Linear(3, 4)
    bias_before = lin.bias.numpy().copy()
    missing, unexpected = lin.load_state_dict({"weight": np.ones((4, 3)), "other": np.zeros(1)}, strict=False)
    assert missing == ["bias"] and unexpected == ["other"]
    np.testing.assert_array_equal(lin.weight.numpy(), np.ones((4, 3)))
    np.testing.assert_array_equal(lin.bias.numpy(), bias_before)
    with _raises(ValueError, "weight", "(2, 3)", "(4, 3)"):  # a wrong shape is an error even when not strict
        lin.load_state_dict({"weight": np.ones((2, 3))}, strict=False)


def test_load_state_dict_keeps_the_parameter_dtype_and_identity():
    lin = nn.Linear(3, 4)
    w = lin.weight
    lin.load_state_dict({"weight": np.ones((4, 3), dtype=np.float64), "bias": tr.zeros(4, dtype=tr.float64)})
    assert lin.weight is w and w.dtype == tr.float32
    np.testing.assert_array_equal(w.numpy(), np.ones((4, 3), dtype=np.float32))


# ---------------------------------------------------------------------------------------
# checkpoints on disk


def test_save_load_round_trip_with_metadata(tmp_path):
    a, b = Net(), Net()
    for p in b.parameters():
        p.data[...] = 0
    path = tmp_path / "sub" / "ckpt.npz"  # the folder is created
    a.save(path, epoch=3, note="best", lr=0.5, vocab=["a", "b"])
    meta = b.load(path)
    assert meta == {"epoch": 3, "note": "best", "lr": 0.5, "vocab": ["a", "b"]}
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)
        assert q.dtype == p.dtype
    state, meta2 = nn.load(str(path))
    assert list(state) == NET_NAMES and meta2 == meta
    assert [f for f in os.listdir(path.parent)] == ["ckpt.npz"]


def test_load_non_strict_from_file(tmp_path):
    nn.save({"weight": np.ones((2, 3))}, tmp_path / "w.npz")
    lin = nn.Linear(3, 2)
    with _raises(ValueError, "missing keys", "'bias'"):
        lin.load(tmp_path / "w.npz")
    assert lin.load(tmp_path / "w.npz", strict=False) == {}
    np.testing.assert_array_equal(lin.weight.numpy(), np.ones((2, 3)))


def test_reserved_metadata_key(tmp_path):
    with _raises(ValueError, "reserved"):
        nn.save({"__tinygrad_rnn_meta__": np.zeros(1)}, tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("partial", [False, True], ids=["before-writing", "half-written"])
def test_save_is_atomic(tmp_path, monkeypatch, partial):
    path = tmp_path / "ckpt.npz"
    old = nn.Linear(3, 2, seed=0)
    old.save(path, epoch=1)
    original_bytes = path.read_bytes()

    def failing_savez(f, **arrays):
        if partial:
            f.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    new = nn.Linear(3, 2, seed=1)
    with _raises(OSError, "disk full"):
        new.save(path, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == original_bytes
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]  # no temporary file left behind
    fresh = nn.Linear(3, 2, seed=5)
    assert fresh.load(path) == {"epoch": 1}
    np.testing.assert_array_equal(fresh.weight.numpy(), old.weight.numpy())


def _valid_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    nn.LSTM(3, 4, seed=0).save(path, epoch=1)
    return path, path.read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "truncated-tail", "flipped-byte", "garbage", "empty"])
def test_damaged_checkpoint_raises_value_error(tmp_path, damage):
    path, data = _valid_checkpoint(tmp_path)
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "truncated-tail":
        data = data[:-10]
    elif damage == "flipped-byte":
        i = len(data) // 2
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    elif damage == "garbage":
        data = np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes()
    else:
        data = b""
    path.write_bytes(data)
    m = nn.LSTM(3, 4, seed=1)
    before = m.state_dict()
    with _raises(ValueError, str(path)):
        m.load(path)
    for k, v in m.state_dict().items():  # nothing was loaded
        np.testing.assert_array_equal(v, before[k])


def test_foreign_npz_raises_value_error(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, weight=np.zeros((2, 3)), bias=np.zeros(2))
    with _raises(ValueError, "not a tinygrad_rnn checkpoint"):
        nn.Linear(3, 2).load(path)
    with pytest.raises(FileNotFoundError):
        nn.Linear(3, 2).load(tmp_path / "nope.npz")


# ---------------------------------------------------------------------------------------
# modes, gradients, dtypes, devices


def test_train_eval_recurse():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.5), nn.LSTM(2, 2)))
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    assert net.train() is net and all(m.training for m in net.modules())
    net[1].eval()
    assert net.training and net[0].training and not net[1].training and not net[1][1].training
    net.train(False)
    assert not any(m.training for m in net.modules())


def test_dropout_behaviour():
    x = tr.ones(200, 50, dtype=tr.float64, requires_grad=True)
    drop = nn.Dropout(0.3, generator=tr.Generator(0))
    y = drop(x)
    vals = y.numpy()
    kept = vals != 0
    assert 0.25 < 1 - kept.mean() < 0.35
    np.testing.assert_allclose(vals[kept], 1 / 0.7)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), vals)  # the gradient is the same mask
    assert not np.array_equal(drop(x).numpy(), vals)  # a fresh mask each call
    again = nn.Dropout(0.3, generator=tr.Generator(0))(x).numpy()
    np.testing.assert_array_equal(again, vals)  # reproducible from the generator
    drop.eval()
    assert drop(x) is x or np.array_equal(drop(x).numpy(), x.numpy())
    np.testing.assert_array_equal(nn.Dropout(0.0)(x).numpy(), x.numpy())
    assert np.all(nn.Dropout(1.0)(x).numpy() == 0)
    with _raises(ValueError, "[0, 1]", "1.5"):
        nn.Dropout(1.5)


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none):
    lin = nn.Linear(3, 2)
    lin(tr.ones(4, 3)).sum().backward()
    assert lin.weight.grad is not None and np.abs(lin.weight.grad.numpy()).sum() > 0
    lin.zero_grad(set_to_none=set_to_none)
    for p in lin.parameters():
        if set_to_none:
            assert p.grad is None
        else:
            assert p.grad is not None and p.grad.shape == p.shape and np.all(p.grad.numpy() == 0)


def test_requires_grad_toggle():
    lin = nn.Linear(3, 2)
    lin.requires_grad_(False)
    assert not any(p.requires_grad for p in lin.parameters())
    assert not lin(tr.ones(1, 3)).requires_grad
    lin.requires_grad_(True)
    assert lin(tr.ones(1, 3)).requires_grad


def test_to_float64_converts_parameters_and_grads_in_place():
    m = nn.LSTM(3, 4, seed=0)
    m(tr.randn(5, 2, 3))[0].sum().backward()
    params = list(m.parameters())
    before = [p.numpy().copy() for p in params]
    grads = [p.grad.numpy().copy() for p in params]
    assert m.to(tr.float64) is m
    for p, b, g, q in zip(m.parameters(), before, grads, params):
        assert p is q  # same Parameter objects: optimizers holding them keep working
        assert p.dtype == tr.float64 and p.grad.dtype == tr.float64
        np.testing.assert_array_equal(p.numpy(), b.astype(np.float64))
        np.testing.assert_array_equal(p.grad.numpy(), g.astype(np.float64))
    out, _ = m(tr.randn(5, 2, 3, dtype=tr.float64))
    assert out.dtype == tr.float64
    with _raises(TypeError, "float32", "float64"):
        m(tr.randn(5, 2, 3, dtype=tr.float32))
    m.float()
    assert all(p.dtype == tr.float32 and p.grad.dtype == tr.float32 for p in m.parameters())
    m.double()
    assert all(p.dtype == tr.float64 for p in m.parameters())
    with _raises(TypeError, "float"):
        m.to(tr.int64)


@pytest.mark.parametrize("cls", [nn.Linear, nn.Embedding, nn.LSTMCell, nn.GRU])
def test_constructor_dtype(cls):
    m = cls(3, 4, dtype=tr.float64)
    assert all(p.dtype == tr.float64 for p in m.parameters())
    assert all(p.dtype == tr.float32 for p in cls(3, 4).parameters())


def test_to_cuda_without_a_gpu_raises():
    if tr.cuda.is_available():
        pytest.skip("a CUDA GPU is available here")
    lin = nn.Linear(3, 2)
    w = lin.weight.numpy().copy()
    with pytest.raises(tr.DeviceUnavailableError, match="cuda"):
        lin.to("cuda")
    with pytest.raises(tr.DeviceUnavailableError):
        lin.cuda()
    assert lin.weight.device == "cpu"
    np.testing.assert_array_equal(lin.weight.numpy(), w)
    assert issubclass(tr.DeviceUnavailableError, RuntimeError)


# ---------------------------------------------------------------------------------------
# the basic layers against NumPy


@pytest.mark.parametrize("shape", [(3,), (4, 3), (2, 5, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_numpy(shape, bias):
    lin = nn.Linear(3, 2, bias=bias, dtype=tr.float64, seed=0)
    x = np.random.default_rng(0).standard_normal(shape)
    ref = x @ lin.weight.numpy().T + (lin.bias.numpy() if bias else 0)
    np.testing.assert_allclose(lin(tr.tensor(x)).numpy(), ref, rtol=1e-13)
    assert (lin.bias is None) == (not bias)
    bound = 1 / np.sqrt(3)
    assert np.all(np.abs(lin.weight.numpy()) <= bound)
    xt = tr.tensor(x, requires_grad=True)
    assert tr.gradcheck(lambda a, w, *b: (a @ w.T + b[0]) if b else a @ w.T,
                        [xt, lin.weight] + ([lin.bias] if bias else []))
    with _raises(ValueError, "(4, 5)", "(2, 3)"):
        lin(tr.zeros(4, 5, dtype=tr.float64))


def test_linear_seed_is_reproducible():
    a, b = nn.Linear(4, 3, seed=7), nn.Linear(4, 3, seed=7)
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())
    assert not np.array_equal(a.weight.numpy(), nn.Linear(4, 3, seed=8).weight.numpy())


def test_embedding_matches_numpy_and_padding_idx_gets_no_gradient():
    emb = nn.Embedding(6, 3, padding_idx=2, dtype=tr.float64, seed=0)
    w = emb.weight.numpy().copy()
    assert np.all(w[2] == 0)
    ids = np.array([[0, 2, 5], [2, 2, 1]])
    out = emb(ids)
    np.testing.assert_array_equal(out.numpy(), w[ids])
    out_w = np.random.default_rng(1).standard_normal(out.shape)
    (out * tr.tensor(out_w)).sum().backward()
    g = emb.weight.grad.numpy()
    assert np.all(g[2] == 0)
    expected = np.zeros_like(w)
    np.add.at(expected, ids.reshape(-1), out_w.reshape(-1, 3))
    expected[2] = 0
    np.testing.assert_allclose(g, expected, rtol=1e-13)
    assert np.all(g[[3, 4]] == 0)  # unused rows
    assert nn.Embedding(6, 3, padding_idx=-1).padding_idx == 5
    with _raises(ValueError, "id 7", "6 embeddings"):
        emb(np.array([7]))
    with _raises(ValueError, "padding_idx", "6"):
        nn.Embedding(6, 3, padding_idx=6)


def test_sequential_and_module_list():
    seq = nn.Sequential(nn.Linear(3, 5, dtype=tr.float64, seed=0), nn.Tanh(), nn.Linear(5, 2, dtype=tr.float64, seed=1),
                        nn.Sigmoid())
    x = np.random.default_rng(0).standard_normal((4, 3))
    l1, l2 = seq[0], seq[2]
    h = np.tanh(x @ l1.weight.numpy().T + l1.bias.numpy())
    ref = 1 / (1 + np.exp(-(h @ l2.weight.numpy().T + l2.bias.numpy())))
    np.testing.assert_allclose(seq(tr.tensor(x)).numpy(), ref, rtol=1e-12)
    assert len(seq) == 4 and isinstance(seq[1], nn.Tanh) and seq[-1] is seq[3]
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    relu = nn.Sequential(nn.ReLU())(tr.tensor(np.array([-1.0, 2.0])))
    np.testing.assert_array_equal(relu.numpy(), [0.0, 2.0])
    with _raises(TypeError, "argument 1", "ufunc", "not a Module"):
        nn.Sequential(nn.Tanh(), np.tanh)
    ml = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 1)])
    ml.append(nn.Linear(1, 1))
    assert len(ml) == 3 and [type(m) for m in ml] == [nn.Linear] * 3 and ml[2].in_features == 1
    assert [n for n, _ in ml.named_parameters()][::2] == ["0.weight", "1.weight", "2.weight"]


def test_repr_names_the_configuration():
    r = repr(nn.Sequential(nn.LSTM(3, 4, num_layers=2, bidirectional=True), nn.Linear(8, 2)))
    assert "LSTM(3, 4, num_layers=2, bidirectional=True)" in r and "(1): Linear(in_features=8, out_features=2" in r
