"""The PyTorch API pieces RNN programs use, each against torch itself: ``utils.data``,
``nn.utils.rnn`` (and packed input to the recurrent layers), the loss modules, ``optim.LBFGS``
and ``ReduceLROnPlateau``. Values, shapes, dtypes, gradients and refusals.
"""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch  # the parity extra installs it
import torch.nn.utils.rnn as trnn
import torch.utils.data as tdata

import tinygrad_rnn as tr
import tinygrad_rnn.nn.utils.rnn as rnn
import tinygrad_rnn.utils.data as data

pytestmark = pytest.mark.torch


def _np(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else t.numpy()


# ------------------------------------------------------------------------------------------------
# utils.data

Point = collections.namedtuple("Point", "x y")


@pytest.mark.parametrize("samples", [
    [1.5, 2.5], [1, 2, 3], [True, False], [np.float32(1), np.float32(2)],
    [np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)],
    [(1, 2.0), (3, 4.0)], [{"a": 1, "b": [1.0, 2.0]}, {"a": 2, "b": [3.0, 4.0]}],
    [Point(1, 2.0), Point(3, 4.0)], [("s", 1), ("t", 2)],
])
def test_default_collate_as_torch(samples):
    ref = tdata.default_collate(samples)
    ours = data.default_collate(samples)

    def same(a, b):
        if isinstance(a, torch.Tensor):
            assert isinstance(b, tr.Tensor) and tuple(a.shape) == b.shape
            assert b.dtype == np.dtype(str(a.dtype).split(".")[1])
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        elif isinstance(a, dict):
            assert a.keys() == b.keys()
            for k in a:
                same(a[k], b[k])
        elif isinstance(a, (list, tuple)):
            assert type(a) is type(b) and len(a) == len(b)
            for x, y in zip(a, b):
                same(x, y)
        else:
            assert a == b

    same(ref, ours)


def test_default_collate_stacks_tensors_and_refuses_unknown():
    out = data.default_collate([tr.ones(2, 3), tr.zeros(2, 3)])
    assert out.shape == (2, 2, 3)
    with pytest.raises(TypeError, match="batch must contain tensors"):
        data.default_collate([object(), object()])
    with pytest.raises(RuntimeError, match="equal size"):
        data.default_collate([[1, 2], [1]])


def _loaders(n=10, **kw):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n)
    return (tdata.DataLoader(tdata.TensorDataset(torch.tensor(x), torch.tensor(y)), **kw),
            data.DataLoader(data.TensorDataset(tr.tensor(x), tr.tensor(y)), **kw))


@pytest.mark.parametrize("kw", [dict(batch_size=3), dict(batch_size=3, drop_last=True), dict(batch_size=1),
                                dict(batch_size=None), dict(batch_size=4, collate_fn=lambda b: len(b)),
                                dict(sampler=[3, 1, 4, 1, 5], batch_size=2),
                                dict(batch_sampler=[[0, 1], [7], [2, 3, 9]]), dict(batch_size=5, num_workers=0)])
def test_dataloader_batches_as_torch(kw):
    a, b = _loaders(**kw)
    assert len(a) == len(b)
    ra, rb = list(a), list(b)
    assert len(ra) == len(rb)
    for p, q in zip(ra, rb):
        if isinstance(p, int):
            assert p == q
            continue
        for u, v in zip(p, q):
            assert u.shape == v.shape
            np.testing.assert_array_equal(_np(u), _np(v))


def test_dataloader_shuffle_is_a_permutation_reproducible_by_generator():
    _, b = _loaders(n=12, batch_size=5, shuffle=True, generator=tr.Generator(3))
    first = np.concatenate([yb.numpy() for _, yb in b])
    second = np.concatenate([yb.numpy() for _, yb in b])
    assert sorted(first.tolist()) == list(range(12)) and sorted(second.tolist()) == list(range(12))
    assert first.tolist() != second.tolist()  # a new permutation each epoch
    _, c = _loaders(n=12, batch_size=5, shuffle=True, generator=tr.Generator(3))
    assert np.concatenate([yb.numpy() for _, yb in c]).tolist() == first.tolist()


def test_dataloader_tensordataset_gather_equals_per_sample_collate():
    """A TensorDataset's batches are gathered in one index per tensor: the same as stacking samples."""
    ds = data.TensorDataset(tr.randn(9, 2, 3, dtype=tr.float64), tr.arange(9), tr.ones(9, dtype=tr.int32))
    order = [4, 0, 8, 8, 1, 2, 7]
    fast = list(data.DataLoader(ds, batch_size=3, sampler=order))
    slow = list(data.DataLoader(data.Subset(ds, list(range(9))), batch_size=3, sampler=order))
    assert len(fast) == len(slow) == 3
    for f, s in zip(fast, slow):
        assert isinstance(f, list) and isinstance(s, list)
        for a, b in zip(f, s):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_dataloader_num_workers_runs_in_process():
    calls = []
    _, b = _loaders(batch_size=4, num_workers=2, worker_init_fn=calls.append)
    assert [len(yb) for _, yb in b] == [4, 4, 2] and calls == [0]


@pytest.mark.parametrize("kw, msg", [
    (dict(sampler=[0, 1], shuffle=True), "mutually exclusive with shuffle"),
    (dict(batch_sampler=[[0]], batch_size=2), "batch_sampler option is mutually exclusive"),
    (dict(batch_size=None, drop_last=True), "batch_size=None"),
    (dict(num_workers=-1), "num_workers option should be non-negative"),
    (dict(batch_size=0), "batch_size should be a positive integer"),
])
def test_dataloader_refusals_as_torch(kw, msg):
    x = torch.zeros(4, 1)
    with pytest.raises(ValueError, match=msg):
        tdata.DataLoader(tdata.TensorDataset(x), **kw)
    with pytest.raises(ValueError, match=msg):
        data.DataLoader(data.TensorDataset(tr.zeros(4, 1)), **kw)


@pytest.mark.filterwarnings("ignore:Length of split")  # torch's note on the empty split
@pytest.mark.parametrize("lengths", [[3, 7], [0.3, 0.7], [0.33, 0.33, 0.34], [0.5, 0.5, 0.0], [10]])
def test_random_split_sizes_as_torch(lengths):
    ds = list(range(10))
    ref = [len(s) for s in tdata.random_split(ds, lengths)]
    parts = data.random_split(ds, lengths, generator=tr.Generator(0))
    assert [len(s) for s in parts] == ref
    assert sorted(i for p in parts for i in p) == ds  # disjoint, covering


def test_random_split_refuses_bad_lengths():
    with pytest.raises(ValueError, match="Sum of input lengths"):
        data.random_split(list(range(10)), [3, 3])


def test_datasets_subset_concat_tensordataset():
    ds = data.TensorDataset(tr.arange(6.0), tr.arange(6))
    assert len(ds) == 6 and ds[2][0].item() == 2.0
    sub = data.Subset(ds, [5, 0])
    assert len(sub) == 2 and sub[0][1].item() == 5
    cat = ds + sub
    assert len(cat) == 8 and cat[7][1].item() == 0 and cat[-1][1].item() == 0
    with pytest.raises(ValueError, match="Size mismatch"):
        data.TensorDataset(tr.zeros(3), tr.zeros(4))
    assert list(data.SequentialSampler(range(3))) == [0, 1, 2]
    rs = data.RandomSampler(range(5), generator=tr.Generator(1))
    assert sorted(rs) == [0, 1, 2, 3, 4] and len(rs) == 5
    assert len(list(data.RandomSampler(range(5), replacement=True, num_samples=9))) == 9
    assert list(data.BatchSampler(range(5), 2, drop_last=False)) == [[0, 1], [2, 3], [4]]
    assert len(data.BatchSampler(range(5), 2, drop_last=True)) == 2
    assert tr.utils.data.DataLoader is data.DataLoader


def test_iterable_dataset_batches():
    class Stream(data.IterableDataset):
        def __iter__(self):
            return iter(range(7))

    assert [b.tolist() for b in data.DataLoader(Stream(), batch_size=3)] == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="shuffle"):
        data.DataLoader(Stream(), shuffle=True)


# ------------------------------------------------------------------------------------------------
# nn.utils.rnn

LENGTHS = [3, 5, 1, 4]


def _seqs(dtype=np.float64, feat=(2,)):
    rng = np.random.default_rng(0)
    return [rng.standard_normal((n,) + feat).astype(dtype) for n in LENGTHS]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_sequence_as_torch(batch_first, side):
    s = _seqs(feat=(2, 3))
    ref = trnn.pad_sequence([torch.tensor(a) for a in s], batch_first=batch_first, padding_value=-1.5, padding_side=side)
    ours = rnn.pad_sequence([tr.tensor(a) for a in s], batch_first=batch_first, padding_value=-1.5, padding_side=side)
    assert ours.shape == tuple(ref.shape)
    np.testing.assert_array_equal(ours.numpy(), ref.numpy())


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_pack_pad_roundtrip_and_gradients_as_torch(batch_first, enforce_sorted):
    s = _seqs()
    if enforce_sorted:
        s = sorted(s, key=len, reverse=True)
    lens = [len(a) for a in s]
    xt = trnn.pad_sequence([torch.tensor(a) for a in s], batch_first=batch_first).requires_grad_()
    xo = tr.tensor(xt.detach().numpy(), requires_grad=True)
    pt = trnn.pack_padded_sequence(xt, torch.tensor(lens), batch_first=batch_first, enforce_sorted=enforce_sorted)
    po = rnn.pack_padded_sequence(xo, lens, batch_first=batch_first, enforce_sorted=enforce_sorted)
    assert isinstance(po, rnn.PackedSequence) and isinstance(po, tuple)
    for a, b in zip(pt, po):
        if a is None:
            assert b is None
        else:
            np.testing.assert_array_equal(_np(a), _np(b))
    assert po.batch_sizes.dtype == np.int64
    ut, lt = trnn.pad_packed_sequence(pt, batch_first=batch_first, padding_value=7.0, total_length=6)
    uo, lo = rnn.pad_packed_sequence(po, batch_first=batch_first, padding_value=7.0, total_length=6)
    np.testing.assert_array_equal(uo.numpy(), _np(ut))
    assert lo.tolist() == lt.tolist() and lo.dtype == np.int64
    w = np.random.default_rng(1).standard_normal(ut.shape)
    (ut * torch.tensor(w)).sum().backward()
    (uo * tr.tensor(w)).sum().backward()
    np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), rtol=0, atol=0)


def test_pack_sequence_unpack_and_unpad():
    s = [tr.tensor(a) for a in _seqs()]
    p = rnn.pack_sequence(s, enforce_sorted=False)
    back = rnn.unpack_sequence(p)
    for a, b in zip(s, back):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    ref = trnn.pack_sequence([torch.tensor(a.numpy()) for a in s], enforce_sorted=False)
    np.testing.assert_array_equal(p.data.numpy(), ref.data.numpy())


def test_packing_refusals():
    x = tr.zeros(4, 3, 2)
    with pytest.raises(ValueError, match="sorted in decreasing order"):
        rnn.pack_padded_sequence(x, [1, 3, 2])
    with pytest.raises(ValueError, match="greater than 0"):
        rnn.pack_padded_sequence(x, [2, 0, 0], enforce_sorted=False)
    with pytest.raises(ValueError, match="expected 3 lengths"):
        rnn.pack_padded_sequence(x, [2, 1])
    with pytest.raises(ValueError, match="exceeds the padded length"):
        rnn.pack_padded_sequence(x, [5, 1, 1])
    with pytest.raises(TypeError, match="integers"):
        rnn.pack_padded_sequence(x, [2.0, 1.0, 1.0])
    p = rnn.pack_padded_sequence(x, [3, 2, 1])
    with pytest.raises(ValueError, match="total_length"):
        rnn.pad_packed_sequence(p, total_length=2)
    with pytest.raises(ValueError, match="trailing shapes differ"):
        rnn.pad_sequence([tr.zeros(2, 3), tr.zeros(2, 4)])
    with pytest.raises(ValueError, match="carries its own lengths"):
        tr.nn.GRU(2, 3)(rnn.pack_sequence([tr.zeros(2, 2)]), lengths=[2])


@pytest.mark.parametrize("mode, kw", [("LSTM", dict(num_layers=2, bidirectional=True)),
                                      ("GRU", dict(batch_first=True)), ("RNN", dict(nonlinearity="relu")),
                                      ("LSTM", dict(batch_first=True, bias=False))])
@pytest.mark.parametrize("with_hx", [False, True])
def test_packed_input_to_recurrent_layers_as_torch(mode, kw, with_hx):
    """Output packing, h_n in the caller's batch order, and every gradient (input, h0, weights)."""
    torch.manual_seed(0)
    tm = getattr(torch.nn, mode)(2, 3, dtype=torch.float64, **kw)
    om = getattr(tr.nn, mode)(2, 3, dtype=tr.float64, **kw)
    om.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    om.flatten_parameters()
    s = _seqs()
    nl = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    h0 = np.random.default_rng(2).standard_normal((nl, len(s), 3))
    xt = [torch.tensor(a, requires_grad=True) for a in s]
    xo = [tr.tensor(a, requires_grad=True) for a in s]
    hts = [torch.tensor(h0, requires_grad=True) for _ in range(2)]
    hos = [tr.tensor(h0, requires_grad=True) for _ in range(2)]
    hxt = None if not with_hx else (tuple(hts) if mode == "LSTM" else hts[0])
    hxo = None if not with_hx else (tuple(hos) if mode == "LSTM" else hos[0])
    ot, ht = tm(trnn.pack_sequence(xt, enforce_sorted=False), hxt)
    oo, ho = om(rnn.pack_sequence(xo, enforce_sorted=False), hxo)
    assert isinstance(oo, rnn.PackedSequence)
    np.testing.assert_allclose(oo.data.numpy(), _np(ot.data), rtol=1e-12, atol=1e-13)
    assert oo.batch_sizes.tolist() == ot.batch_sizes.tolist()
    assert oo.sorted_indices.tolist() == ot.sorted_indices.tolist()
    ht, ho = (ht if mode == "LSTM" else (ht,)), (ho if mode == "LSTM" else (ho,))
    for a, b in zip(ht, ho):
        np.testing.assert_allclose(b.numpy(), _np(a), rtol=1e-12, atol=1e-13)
    w = np.random.default_rng(3).standard_normal(tuple(ot.data.shape))
    lt = (ot.data * torch.tensor(w)).sum() + sum((h ** 2).sum() for h in ht)
    lo = (oo.data * tr.tensor(w)).sum() + sum((h ** 2).sum() for h in ho)
    lt.backward()
    lo.backward()
    for a, b in zip(xt, xo):
        np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-10, atol=1e-12)
    if with_hx:
        for a, b in zip(hts[: len(ht)], hos[: len(ho)]):
            np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-10, atol=1e-12)
    for (name, p), q in zip(tm.named_parameters(), om.parameters()):
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_nn_utils_is_a_package_keeping_its_functions():
    assert tr.nn.utils.rnn is rnn
    for name in ("clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "vector_to_parameters"):
        assert callable(getattr(tr.nn.utils, name))


# ------------------------------------------------------------------------------------------------
# loss modules

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_modules_as_torch(reduction):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4, 3))
    t = rng.integers(0, 4, size=(6, 3))
    t[1, 2] = -100
    for name, inp, tgt in [("CrossEntropyLoss", x, t), ("NLLLoss", x, t), ("MSELoss", x, x[::-1].copy())]:
        xt, xo = torch.tensor(inp, requires_grad=True), tr.tensor(inp, requires_grad=True)
        a = getattr(torch.nn, name)(reduction=reduction)(xt, torch.tensor(tgt))
        b = getattr(tr.nn, name)(reduction=reduction)(xo, tr.tensor(tgt))
        np.testing.assert_allclose(b.numpy(), _np(a), rtol=1e-12, err_msg=name)
        a.sum().backward()
        b.sum().backward()
        np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-15, err_msg=name)


def test_loss_modules_legacy_flags_ignore_index_and_refusals():
    x, t = np.random.default_rng(6).standard_normal((5, 3)), np.array([0, 2, 1, 1, 0])
    for kw in (dict(reduce=False), dict(size_average=False), dict(size_average=True, reduce=True)):
        with pytest.warns(UserWarning):
            ref = torch.nn.CrossEntropyLoss(**kw)(torch.tensor(x), torch.tensor(t))
        np.testing.assert_allclose(tr.nn.CrossEntropyLoss(**kw)(tr.tensor(x), tr.tensor(t)).numpy(), ref.numpy())
    ref = torch.nn.NLLLoss(ignore_index=1)(torch.tensor(x), torch.tensor(t))
    np.testing.assert_allclose(tr.nn.NLLLoss(ignore_index=1)(tr.tensor(x), tr.tensor(t)).numpy(), ref.numpy())
    with pytest.raises(ValueError, match="weight is not supported"):
        tr.nn.CrossEntropyLoss(weight=tr.ones(3))
    with pytest.raises(ValueError, match="weight is not supported"):
        tr.nn.NLLLoss(weight=tr.ones(3))
    with pytest.raises(ValueError, match="label_smoothing"):
        tr.nn.CrossEntropyLoss(label_smoothing=0.1)
    with pytest.raises(ValueError, match="reduction"):
        tr.nn.MSELoss(reduction="avg")
    assert repr(tr.nn.MSELoss(reduction="sum")) == "MSELoss(reduction='sum')"


# ------------------------------------------------------------------------------------------------
# optim.LBFGS

def _rosenbrock_run(mod, line_search_fn, steps=4, history_size=100, max_iter=20, lr=1.0):
    x = mod.tensor(np.array([-1.5, 2.0, 0.5]), requires_grad=True)
    w = mod.tensor(np.array([[1.0, 0.5]]), requires_grad=True)
    opt = mod.optim.LBFGS([x, w], lr=lr, max_iter=max_iter, history_size=history_size, line_search_fn=line_search_fn)
    trace = []

    def closure():
        opt.zero_grad()
        loss = ((1 - x[:2]) ** 2).sum() + 100 * ((x[1:] - x[:2] ** 2) ** 2).sum() + ((w - x[:2]) ** 2).sum()
        loss.backward()
        trace.append(loss.item())
        return loss

    for _ in range(steps):
        opt.step(closure)
        trace.extend(x.detach().numpy().tolist() + w.detach().numpy().reshape(-1).tolist())
    return np.array(trace)


# Rosenbrock's curved valley amplifies rounding (a different summation order in a dot product): after
# ~60 evaluations with the line search the two runs part at 1e-8, so that case stops after one step
@pytest.mark.parametrize("line_search_fn, history_size, max_iter, lr, steps", [
    (None, 100, 20, 0.1, 4), ("strong_wolfe", 100, 20, 1.0, 1), ("strong_wolfe", 3, 7, 1.0, 4), (None, 2, 5, 0.05, 4)])
def test_lbfgs_iterates_as_torch(line_search_fn, history_size, max_iter, lr, steps):
    ref = _rosenbrock_run(torch, line_search_fn, steps, history_size=history_size, max_iter=max_iter, lr=lr)
    ours = _rosenbrock_run(tr, line_search_fn, steps, history_size=history_size, max_iter=max_iter, lr=lr)
    assert ours.shape == ref.shape  # the same number of function evaluations
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)
    assert ref[-6] != ref[0]


def test_lbfgs_converges_and_refuses():
    ours = _rosenbrock_run(tr, "strong_wolfe", steps=10)
    np.testing.assert_allclose(ours[-5:], 1.0, atol=1e-4)  # x -> (1, 1, 1), w -> (1, 1)
    p = tr.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="line_search_fn"):
        tr.optim.LBFGS([p], line_search_fn="armijo")
    with pytest.raises(ValueError, match="parameter groups"):
        tr.optim.LBFGS([{"params": [p]}, {"params": [tr.zeros(1, requires_grad=True)]}])
    with pytest.raises(ValueError, match="closure"):
        tr.optim.LBFGS([p]).step()
    with pytest.raises(ValueError, match="one device and dtype"):
        tr.optim.LBFGS([p, tr.zeros(1, dtype=tr.float64, requires_grad=True)])


# ------------------------------------------------------------------------------------------------
# ReduceLROnPlateau

@pytest.mark.parametrize("kw", [dict(), dict(mode="max", threshold_mode="abs", threshold=0.1, patience=0),
                                dict(factor=0.5, patience=1, cooldown=2, min_lr=[0.2, 0.01]),
                                dict(threshold_mode="abs", eps=0.3, factor=0.5, patience=0)])
def test_reduce_lr_on_plateau_as_torch(kw):
    metrics = [5, 4, 4, 4.1, 3, 3, 3, 3, 2.99, 6, 6, 6, 6, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    ps = [torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)]
    qs = [tr.zeros(1, requires_grad=True), tr.zeros(1, requires_grad=True)]
    so = torch.optim.lr_scheduler.ReduceLROnPlateau(torch.optim.SGD([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.5}],
                                                                    lr=1.0), **kw)
    sq = tr.optim.lr_scheduler.ReduceLROnPlateau(tr.optim.SGD([{"params": qs[:1]}, {"params": qs[1:], "lr": 0.5}],
                                                              lr=1.0), **kw)
    for m in metrics:
        so.step(m)
        sq.step(m)
        assert sq.get_last_lr() == so.get_last_lr()
        assert (sq.best, sq.num_bad_epochs, sq.cooldown_counter, sq.last_epoch) == \
            (so.best, so.num_bad_epochs, so.cooldown_counter, so.last_epoch)
    state = sq.state_dict()
    again = tr.optim.lr_scheduler.ReduceLROnPlateau(sq.optimizer, **kw)
    again.load_state_dict(state)
    assert (again.best, again.num_bad_epochs, again.mode) == (sq.best, sq.num_bad_epochs, sq.mode)


def test_reduce_lr_on_plateau_refusals():
    opt = tr.optim.SGD([tr.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match="Factor should be < 1.0"):
        tr.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode avg is unknown"):
        tr.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="avg")
    with pytest.raises(ValueError, match="threshold mode x is unknown"):
        tr.optim.lr_scheduler.ReduceLROnPlateau(opt, threshold_mode="x")
    with pytest.raises(ValueError, match="expected 1 min_lrs"):
        tr.optim.lr_scheduler.ReduceLROnPlateau(opt, min_lr=[0.1, 0.2])


def test_multinomial_draws_what_numpys_choice_draws_for_the_same_seed():
    """One draw, or draws with replacement, come from one cumulative-sum search for all rows at once: the
    same uniforms in the same order as NumPy's Generator.choice(p=row / row.sum()) per row, so the same
    samples (seeded runs reproduce across the two code paths); without replacement, several draws per row."""
    from tinygrad_rnn.random import _rng

    rng0 = np.random.default_rng(0)
    checked = 0
    for trial in range(200):
        rows, c, n = int(rng0.integers(1, 5)), int(rng0.integers(1, 80)), int(rng0.integers(1, 6))
        rep = bool(rng0.integers(0, 2)) or n == 1
        w = rng0.random((rows, c)) ** 3
        w[w < 0.1] = 0
        if (w.sum(1) <= 0).any() or (not rep and (np.count_nonzero(w, axis=1) < n).any()):
            continue
        got = tr.multinomial(tr.tensor(w), n, replacement=rep, generator=tr.Generator().manual_seed(trial)).numpy()
        r2 = _rng(None, tr.Generator().manual_seed(trial))
        want = np.stack([r2.choice(c, size=n, replace=rep, p=row / row.sum()) for row in w])
        np.testing.assert_array_equal(got.reshape(rows, n), want)
        assert got.dtype == np.int64 and (w[np.arange(rows)[:, None], got.reshape(rows, n)] > 0).all()
        checked += 1
    assert checked > 150
    with pytest.raises(ValueError, match="sum of probabilities <= 0"):
        tr.multinomial(tr.tensor([[0.0, 0.0], [1.0, 2.0]]), 1)
