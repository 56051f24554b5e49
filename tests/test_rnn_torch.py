"""Against PyTorch: a state dict exported from ``torch.nn.{RNN,LSTM,GRU}`` (and the cells) as NumPy
arrays loads into our layer and gives torch's outputs, final states and gradients (input, initial
state and every parameter), in float32 and float64; padded batches match ``pack_padded_sequence``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch  # the parity extra installs it: these comparisons never skip

import tinygrad_rnn as tr

pytestmark = pytest.mark.torch

from _rnn_paths import PATHS, on_path  # noqa: E402, I001  (tests/ helper)

DTYPES = {"float32": (tr.float32, torch.float32), "float64": (tr.float64, torch.float64)}
# (values rtol, gradients rtol); atol is the same times the largest reference magnitude
TOL = {"float32": (2e-5, 2e-4), "float64": (1e-10, 1e-9)}

CONFIGS = [
    ("lstm", dict(num_layers=2, bidirectional=True)),
    ("gru", dict(num_layers=2, bidirectional=True, batch_first=True)),
    ("rnn_tanh", dict(num_layers=2, bidirectional=True)),
    ("rnn_relu", dict(bias=False)),
    ("rnn_relu", dict(num_layers=2, bidirectional=True, batch_first=True)),
    ("lstm", dict(bias=False, batch_first=True)),
    ("gru", dict(bias=False)),
    ("lstm", dict(num_layers=2)),
]


@pytest.fixture(autouse=True, scope="module")
def _torch_single_thread():
    """Tiny layers: torch's thread pool only contends with NumPy's BLAS threads (100x slower on 2 cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _config_id(c) -> str:
    mode, kw = c
    return mode + "".join(f"-{k}={v}" for k, v in kw.items())




def torch_layer(mode, D, H, tdtype, seed=0, **kw):
    torch.manual_seed(seed)
    if mode.startswith("rnn_"):
        return torch.nn.RNN(D, H, nonlinearity=mode[4:], dtype=tdtype, **kw)
    return {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[mode](D, H, dtype=tdtype, **kw)


def our_layer(mode, D, H, dtype, **kw):
    if mode.startswith("rnn_"):
        return tr.nn.RNN(D, H, nonlinearity=mode[4:], dtype=dtype, **kw)
    return {"lstm": tr.nn.LSTM, "gru": tr.nn.GRU}[mode](D, H, dtype=dtype, **kw)


def exported(tm) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}


def flat(res) -> list:
    out, hn = res
    return [out, *hn] if isinstance(hn, tuple) else [out, hn]


def close(ours, theirs, rtol, what):
    ours = np.asarray(ours)
    theirs = np.asarray(theirs)
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    scale = max(1.0, float(np.abs(theirs).max(initial=0)))
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * scale, err_msg=what)


def compare(tm, m, x_np, states_np, dtype_name, path, lengths=None):
    """Run torch and ours on the same data (torch packs when lengths are given), compare outputs and grads."""
    dtype, tdtype = DTYPES[dtype_name]
    rtol_v, rtol_g = TOL[dtype_name]
    tx = torch.tensor(x_np, dtype=tdtype, requires_grad=True)
    ts = [torch.tensor(s, dtype=tdtype, requires_grad=True) for s in states_np]
    thx = None if not ts else (ts[0] if len(ts) == 1 else tuple(ts))
    bf = tm.batch_first
    if lengths is None:
        tres = tm(tx, thx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(tx, torch.tensor(lengths), batch_first=bf, enforce_sorted=False)
        pout, ths = tm(packed, thx)
        tout, _ = torch.nn.utils.rnn.pad_packed_sequence(pout, batch_first=bf, total_length=x_np.shape[1 if bf else 0])
        tres = (tout, ths)
    touts = flat(tres)
    rng = np.random.default_rng(4)
    weights = [rng.uniform(-1, 1, tuple(o.shape)) for o in touts]
    sum((o * torch.tensor(w, dtype=tdtype)).sum() for o, w in zip(touts, weights)).backward()

    x = tr.tensor(x_np.astype(dtype), requires_grad=True)
    s = [tr.tensor(a.astype(dtype), requires_grad=True) for a in states_np]
    hx = None if not s else (s[0] if len(s) == 1 else tuple(s))
    with on_path(m, path):
        outs = flat(m(x, hx, lengths=None if lengths is None else np.asarray(lengths)))
        sum(((o * tr.tensor(w.astype(dtype))).sum() for o, w in zip(outs, weights)), tr.zeros((), dtype=dtype)).backward()

    names = ["output", "h_n", "c_n"]
    for i, (o, t) in enumerate(zip(outs, touts, strict=True)):
        assert o.dtype == dtype
        close(o.numpy(), t.detach().numpy(), rtol_v, names[i])
    close(x.grad.numpy(), tx.grad.numpy(), rtol_g, "d input")
    for i, (a, b) in enumerate(zip(s, ts)):
        close(a.grad.numpy(), b.grad.numpy(), rtol_g, f"d {names[i + 1]}_0")
    tparams = dict(tm.named_parameters())
    ours = dict(m.named_parameters())
    assert list(ours) == list(tparams)
    for k, p in ours.items():
        assert p.grad.dtype == dtype
        close(p.grad.numpy(), tparams[k].grad.numpy(), rtol_g, f"d {k}")


@pytest.mark.parametrize("config", CONFIGS, ids=[_config_id(c) for c in CONFIGS])
def test_state_dict_keys_and_shapes_match_torch(config):
    mode, kw = config
    tm = torch_layer(mode, 3, 5, torch.float32, **kw)
    m = our_layer(mode, 3, 5, tr.float32, **kw)
    assert [(k, v.shape) for k, v in m.state_dict().items()] == [(k, tuple(v.shape)) for k, v in tm.state_dict().items()]
    assert [(k, p.shape) for k, p in m.named_parameters()] == [(k, tuple(p.shape)) for k, p in tm.named_parameters()]


@pytest.mark.parametrize("with_state", [False, True], ids=["no-h0", "h0"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("config", CONFIGS, ids=[_config_id(c) for c in CONFIGS])
def test_layer_matches_torch(config, dtype_name, path, with_state):
    mode, kw = config
    dtype, tdtype = DTYPES[dtype_name]
    D, H, T, B = 3, 4, 6, 3
    tm = torch_layer(mode, D, H, tdtype, seed=len(kw), **kw)
    m = our_layer(mode, D, H, dtype, **kw)
    missing, unexpected = m.load_state_dict(exported(tm))
    assert missing == [] and unexpected == []
    rng = np.random.default_rng(1)
    x = rng.uniform(-1.5, 1.5, (B, T, D) if kw.get("batch_first") else (T, B, D))
    n_dirs = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    states = [rng.uniform(-1, 1, (n_dirs, B, H)) for _ in range((2 if mode == "lstm" else 1) if with_state else 0)]
    compare(tm, m, x, states, dtype_name, path)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("config", CONFIGS, ids=[_config_id(c) for c in CONFIGS])
def test_lengths_match_pack_padded_sequence(config, dtype_name, path):
    mode, kw = config
    dtype, tdtype = DTYPES[dtype_name]
    D, H, T = 3, 4, 6
    lengths = [4, 6, 1, 3]  # unsorted: enforce_sorted=False on torch's side
    tm = torch_layer(mode, D, H, tdtype, seed=7, **kw)
    m = our_layer(mode, D, H, dtype, **kw)
    m.load_state_dict(exported(tm))
    rng = np.random.default_rng(2)
    B = len(lengths)
    x = rng.uniform(-1.5, 1.5, (B, T, D) if kw.get("batch_first") else (T, B, D))
    n_dirs = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    states = [rng.uniform(-1, 1, (n_dirs, B, H)) for _ in range(2 if mode == "lstm" else 1)]
    compare(tm, m, x, states, dtype_name, path, lengths=lengths)


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
def test_unbatched_layer_matches_torch(mode):
    tm = torch_layer(mode, 3, 4, torch.float64, num_layers=2, bidirectional=True)
    m = our_layer(mode, 3, 4, tr.float64, num_layers=2, bidirectional=True)
    m.load_state_dict(exported(tm))
    x = np.random.default_rng(0).uniform(-1, 1, (5, 3))
    for o, t in zip(flat(m(tr.tensor(x))), flat(tm(torch.tensor(x))), strict=True):
        close(o.numpy(), t.detach().numpy(), 1e-10, mode)


CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("mode", CELLS)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "composite"])
def test_cell_matches_torch(mode, bias, with_hx, unbatched, dtype_name, fused):
    dtype, tdtype = DTYPES[dtype_name]
    rtol_v, rtol_g = TOL[dtype_name]
    D, H, B = 3, 5, 4
    torch.manual_seed(3)
    if mode.startswith("rnn_"):
        tc = torch.nn.RNNCell(D, H, bias=bias, nonlinearity=mode[4:], dtype=tdtype)
        c = tr.nn.RNNCell(D, H, bias=bias, nonlinearity=mode[4:], dtype=dtype)
    else:
        tc = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[mode](D, H, bias=bias, dtype=tdtype)
        c = {"lstm": tr.nn.LSTMCell, "gru": tr.nn.GRUCell}[mode](D, H, bias=bias, dtype=dtype)
    assert [(k, v.shape) for k, v in c.state_dict().items()] == [(k, tuple(v.shape)) for k, v in tc.state_dict().items()]
    c.load_state_dict(exported(tc))
    c.fused = fused  # the one-node step (FusedCell) and the composite cell both equal torch's
    rng = np.random.default_rng(5)
    lead = () if unbatched else (B,)
    x_np = rng.uniform(-1.5, 1.5, lead + (D,))
    s_np = [rng.uniform(-1, 1, lead + (H,)) for _ in range((2 if mode == "lstm" else 1) if with_hx else 0)]
    tx = torch.tensor(x_np, dtype=tdtype, requires_grad=True)
    ts = [torch.tensor(a, dtype=tdtype, requires_grad=True) for a in s_np]
    x = tr.tensor(x_np.astype(dtype), requires_grad=True)
    s = [tr.tensor(a.astype(dtype), requires_grad=True) for a in s_np]
    tres = tc(tx, None if not ts else (ts[0] if len(ts) == 1 else tuple(ts)))
    res = c(x, None if not s else (s[0] if len(s) == 1 else tuple(s)))
    touts = list(tres) if isinstance(tres, tuple) else [tres]
    outs = list(res) if isinstance(res, tuple) else [res]
    weights = [rng.uniform(-1, 1, tuple(o.shape)) for o in touts]
    sum((o * torch.tensor(w, dtype=tdtype)).sum() for o, w in zip(touts, weights)).backward()
    sum((o * tr.tensor(w.astype(dtype))).sum() for o, w in zip(outs, weights)).backward()
    for o, t in zip(outs, touts, strict=True):
        assert o.dtype == dtype
        close(o.numpy(), t.detach().numpy(), rtol_v, "cell output")
    close(x.grad.numpy(), tx.grad.numpy(), rtol_g, "d input")
    for a, b in zip(s, ts):
        close(a.grad.numpy(), b.grad.numpy(), rtol_g, "d state")
    tparams = dict(tc.named_parameters())
    for k, p in c.named_parameters():
        close(p.grad.numpy(), tparams[k].grad.numpy(), rtol_g, f"d {k}")
