"""The Tensor surface PyTorch RNN programs use (issue 20) and the memory-sharing rules of issue 18,
each checked against torch itself where torch has the same call.

- ``.data`` is a Tensor over the same memory, outside autograd, unseen by the version counter;
- ``add_(other, alpha=)``, ``new_zeros`` & co., ``narrow``, ``contiguous``, ``type``, ``tr.device``,
  the dtype aliases, the top-level math functions, ``topk``, ``multinomial``, ``randint(high, size)``;
- ``Module.register_buffer`` / ``Module.apply``; ``amin`` with ties;
- ``tr.tensor`` copies, ``from_numpy``/``as_tensor`` share, a tensor over another's memory shares its
  version counter (a generated test over every way of building one), integer conversions that would
  wrap raise.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch  # the parity extra installs it

import tinygrad_rnn as tr
from tinygrad_rnn import nn

# ------------------------------------------------------------------------------------------------
# .data


def test_data_is_a_tensor_sharing_memory_outside_autograd():
    p = tr.tensor([1.0, 2.0, 3.0], requires_grad=True)
    d = p.data
    assert isinstance(d, tr.Tensor) and not d.requires_grad and d.grad_fn is None
    assert np.shares_memory(d.numpy(), p.numpy())
    before = p._version
    d.add_(tr.ones(3), alpha=-0.5)  # the classic manual SGD line
    np.testing.assert_array_equal(p.numpy(), [0.5, 1.5, 2.5])
    assert p._version == before  # as PyTorch: changes through .data are not seen by the version counter


def test_data_change_after_forward_is_not_checked_but_detach_is():
    # PyTorch's documented difference between the two: .data escapes the check, detach() does not
    w = tr.tensor([1.0, 2.0], requires_grad=True)
    x = tr.tensor([3.0, 4.0], requires_grad=True)
    y = (w * x.detach()).sum()
    x.detach().zero_()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()
    x2 = tr.tensor([3.0, 4.0], requires_grad=True)
    y2 = (w * x2).sum()
    x2.data.zero_()
    y2.backward()  # not caught, exactly as torch
    np.testing.assert_array_equal(w.grad.numpy(), [0.0, 0.0])


def test_data_setter_replaces_storage_even_with_another_shape():
    p = tr.zeros(2, requires_grad=True)
    q = tr.arange(6.0).reshape(2, 3)
    p.data = q
    assert p.shape == (2, 3) and p.requires_grad
    assert np.shares_memory(p.numpy(), q.numpy())
    tp = torch.zeros(2, requires_grad=True)
    tp.data = torch.arange(6.0).reshape(2, 3)
    assert tuple(tp.shape) == p.shape


def test_array_protocol_shares_on_cpu_and_converts():
    t = tr.tensor([1.0, 2.0])
    assert np.shares_memory(np.asarray(t), t.numpy())
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    assert not np.shares_memory(np.array(t, copy=True), t.numpy())


# ------------------------------------------------------------------------------------------------
# in-place and arithmetic methods, against torch


@pytest.mark.parametrize("name", ["add", "sub", "add_", "sub_"])
@pytest.mark.parametrize("alpha", [1, -0.5, 2])
def test_alpha_matches_torch(name, alpha):
    a = np.array([1.0, -2.0, 3.0])
    b = np.array([0.5, 4.0, -1.0])
    ours = getattr(tr.tensor(a), name)(tr.tensor(b), alpha=alpha)
    ref = getattr(torch.tensor(a), name)(torch.tensor(b), alpha=alpha)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=0, atol=0)


def test_alpha_is_differentiable_and_must_be_a_number():
    a = tr.tensor([1.0, 2.0], dtype=tr.float64, requires_grad=True)
    b = tr.tensor([3.0, 4.0], dtype=tr.float64, requires_grad=True)
    assert tr.gradcheck(lambda x, y: x.sub(y, alpha=-2.5), [a, b])
    with pytest.raises(TypeError, match="alpha must be a number"):
        a.add(b, alpha="2")


def test_in_place_fillers_and_clamp_():
    t = tr.tensor([-2.0, 0.5, 3.0])
    t.clamp_(-1.0, 1.0)
    np.testing.assert_array_equal(t.numpy(), [-1.0, 0.5, 1.0])
    t.fill_(tr.tensor(7.0))  # a 0-d tensor value, as in PyTorch
    np.testing.assert_array_equal(t.numpy(), [7.0, 7.0, 7.0])
    t.copy_(tr.tensor(2.0))  # copy_ broadcasts its source
    np.testing.assert_array_equal(t.numpy(), [2.0, 2.0, 2.0])
    g = tr.Generator().manual_seed(3)
    u = tr.zeros(2000).uniform_(-1.0, 2.0, generator=g).numpy()
    assert u.min() >= -1.0 and u.max() < 2.0 and abs(u.mean() - 0.5) < 0.08
    n = tr.zeros(4000, dtype=tr.float64).normal_(1.0, 2.0, generator=g).numpy()
    assert abs(n.mean() - 1.0) < 0.15 and abs(n.std() - 2.0) < 0.15
    w = tr.zeros(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="not recorded"):
        w.clamp_(0.0, 1.0)


def test_new_factories_take_dtype_and_device_from_self():
    for mod in (tr, torch):
        w = mod.ones(2, dtype=mod.float64)
        assert w.new_zeros(2, 3).dtype == mod.float64 and tuple(w.new_zeros((2, 3)).shape) == (2, 3)
        assert w.new_ones(4).sum().item() == 4.0
        assert w.new_full((2,), 3.0).tolist() == [3.0, 3.0]
        assert tuple(w.new_empty(5).shape) == (5,)
        assert w.new_zeros(1, dtype=mod.int64).dtype == mod.int64
        src = np.array([1.0, 2.0])
        nt = w.new_tensor(src)
        src[0] = 9.0
        assert nt.tolist() == [1.0, 2.0]  # a copy


def test_narrow_contiguous_type_match_torch():
    a = np.arange(24.0).reshape(4, 6)
    for args in [(0, 1, 2), (1, 0, 6), (1, -3, 2), (0, 4, 0)]:
        np.testing.assert_array_equal(tr.tensor(a).narrow(*args).numpy(), torch.tensor(a).narrow(*args).numpy())
    with pytest.raises(ValueError, match="exceeds dimension size"):
        tr.tensor(a).narrow(0, 3, 2)
    t = tr.tensor(a).t()
    assert not t.is_contiguous() and t.contiguous().is_contiguous()
    c = tr.tensor(a)
    assert c.contiguous() is c
    x = tr.tensor(a, requires_grad=True)
    x.t().contiguous().sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((4, 6)))
    for dt, name in [(tr.float32, "torch.FloatTensor"), (tr.float64, "torch.DoubleTensor"), (tr.int64, "torch.LongTensor")]:
        assert tr.zeros(1, dtype=dt).type() == name
        assert tr.zeros(1).type(name).dtype == dt
    assert tr.zeros(1).type(tr.float64).dtype == tr.float64
    assert torch.zeros(1).type() == "torch.FloatTensor"


def test_device_object_and_dtype_aliases():
    d = tr.device("cpu")
    assert repr(d) == repr(torch.device("cpu")) and str(d) == str(torch.device("cpu"))
    assert d.type == "cpu" and d.index is None
    assert tr.zeros(2, device=d).to(d).device == "cpu" and nn.Linear(2, 2).to(d) is not None
    with pytest.raises(ValueError, match="unknown device"):
        tr.device("tpu")
    x = tr.zeros(2)
    assert x.device.type == torch.zeros(2).device.type == "cpu" and repr(x.device) == repr(torch.zeros(2).device)
    assert x.device == "cpu" and tr.zeros(1, device=x.device).device == x.device
    assert (tr.float, tr.double, tr.long, tr.int, tr.bool) == (tr.float32, tr.float64, tr.int64, tr.int32, tr.bool_)
    assert tr.zeros(1, dtype=tr.double).dtype == np.float64 and tr.tensor([1], dtype=tr.int).dtype == np.int32
    with pytest.raises(TypeError, match="float16"):
        tr.zeros(2, dtype=tr.half)


@pytest.mark.parametrize("name,args", [("exp", ()), ("log", ()), ("tanh", ()), ("sigmoid", ()), ("relu", ()), ("abs", ()),
                                       ("sqrt", ()), ("sum", (1,)), ("mean", ()), ("max", ()), ("min", ()),
                                       ("softmax", (1,)), ("log_softmax", (0,)), ("argmax", (1,)), ("flatten", ()),
                                       ("transpose", (0, 1)), ("unsqueeze", (0,)), ("neg", ())])
def test_top_level_functions_match_torch(name, args):
    a = np.abs(np.random.default_rng(0).standard_normal((3, 4))) + 0.1
    ours = getattr(tr, name)(tr.tensor(a), *args)
    ref = getattr(torch, name)(torch.tensor(a), *args)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-12)


def test_top_level_function_names_a_non_tensor():
    with pytest.raises(TypeError, match="exp\\(\\): argument 'input' must be a Tensor"):
        tr.exp([1.0])
    assert "max" not in vars(tr.ops) and "float" not in vars(tr.dtypes)  # the builtins stay builtins inside the library


# ------------------------------------------------------------------------------------------------
# topk, multinomial, randint


@pytest.mark.parametrize("dim,largest", [(-1, True), (0, True), (1, False)])
def test_topk_matches_torch_with_gradients(dim, largest):
    rng = np.random.default_rng(1)
    a = rng.permutation(24).reshape(4, 6).astype(np.float64)  # distinct values: one right order
    x = tr.tensor(a, requires_grad=True)
    xt = torch.tensor(a, requires_grad=True)
    v, i = tr.topk(x, 3, dim=dim, largest=largest)
    vt, it = torch.topk(xt, 3, dim=dim, largest=largest)
    np.testing.assert_array_equal(v.numpy(), vt.detach().numpy())
    np.testing.assert_array_equal(i.numpy(), it.numpy())
    w = rng.standard_normal(v.shape)
    (v * tr.tensor(w)).sum().backward()
    (vt * torch.tensor(w)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), xt.grad.numpy())
    assert tr.gradcheck(lambda t: t.topk(3, dim=dim, largest=largest).values, [tr.tensor(a, requires_grad=True)])
    assert x.topk(2).indices.dtype == np.int64


def test_topk_k_zero_and_3d_gradients():
    x = tr.randn(2, 3, 4, dtype=tr.float64, requires_grad=True)
    assert tr.gradcheck(lambda t: t.topk(2, dim=1).values, [x])
    assert tr.gradcheck(lambda t: t.topk(0, dim=1).values.sum() + t.sum(), [x])
    assert tr.topk(tr.tensor(5.0), 1).values.item() == 5.0


def test_topk_errors_and_unsorted():
    x = tr.tensor([3.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="out of range"):
        x.topk(4)
    v, i = x.topk(2, sorted=False)
    assert sorted(i.tolist()) == [0, 2] and sorted(v.tolist()) == [2.0, 3.0]


def test_multinomial_frequencies_shapes_and_errors():
    g = tr.Generator().manual_seed(0)
    w = tr.tensor([1.0, 3.0, 0.0, 6.0])
    s = tr.multinomial(w, 20000, replacement=True, generator=g).numpy()
    freq = np.bincount(s, minlength=4) / s.size
    np.testing.assert_allclose(freq, [0.1, 0.3, 0.0, 0.6], atol=0.015)
    assert s.dtype == np.int64
    rows = tr.multinomial(tr.ones(5, 7), 7, generator=g).numpy()
    assert rows.shape == (5, 7) and all(sorted(r) == list(range(7)) for r in rows)  # without replacement: distinct
    with pytest.raises(ValueError, match="non-zero entries"):
        tr.multinomial(w, 4)
    with pytest.raises(ValueError, match="element < 0"):
        tr.multinomial(tr.tensor([1.0, -1.0]), 1)
    with pytest.raises(ValueError, match="1 or 2 dim"):
        tr.multinomial(tr.ones(2, 2, 2), 1)
    with pytest.raises(ValueError, match="sum of probabilities"):
        tr.multinomial(tr.zeros(3), 1)


def test_randint_high_size_form():
    t = tr.randint(9, (3, 4), dtype=tr.int64)
    assert t.shape == (3, 4) and t.numpy().min() >= 0 and t.numpy().max() < 9
    assert tr.randint(5, 6, (2,)).tolist() == [5, 5]
    assert tr.randint(3, size=(2,)).shape == (2,)
    with pytest.raises(ValueError, match="low < high"):
        tr.randint(0, (2,))


# ------------------------------------------------------------------------------------------------
# Module.register_buffer / apply


class _WithBuffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.register_buffer("running", torch_like_zeros(2))
        self.register_buffer("steps", tr.zeros(1, dtype=tr.int64))
        self.register_buffer("scratch", tr.ones(3), persistent=False)


def torch_like_zeros(n):
    return tr.zeros(n)


def test_register_buffer_state_dict_to_and_persistent():
    m = _WithBuffers()
    assert list(m.state_dict()) == ["lin.weight", "lin.bias", "running", "steps"]
    m.double()
    assert m.running.dtype == np.float64 and m.scratch.dtype == np.float64 and m.steps.dtype == np.int64
    m.running = tr.tensor([1.0, 2.0], dtype=tr.float64)
    np.testing.assert_array_equal(m.state_dict()["running"], [1.0, 2.0])
    state = m.state_dict()
    state["running"] = np.array([5.0, 6.0])
    state["steps"] = np.array([4])
    m2 = _WithBuffers().double()
    m2.load_state_dict(state)
    assert m2.running.tolist() == [5.0, 6.0] and m2.steps.tolist() == [4]
    assert not any(p is m.running for p in m.parameters())
    with pytest.raises(TypeError, match="buffer 'running'"):
        m.running = np.zeros(2)
    with pytest.raises(KeyError):
        m.register_buffer("lin", tr.zeros(1))
    # torch's state_dict has the same keys
    tm = torch.nn.Module()
    tm.register_buffer("a", torch.zeros(1))
    tm.register_buffer("b", torch.zeros(1), persistent=False)
    om = nn.Module()
    om.register_buffer("a", tr.zeros(1))
    om.register_buffer("b", tr.zeros(1), persistent=False)
    assert list(tm.state_dict()) == list(om.state_dict())


def test_module_apply_visits_children_first_like_torch():
    def build(mod):
        return mod.nn.Sequential(mod.nn.Linear(2, 3), mod.nn.Sequential(mod.nn.Linear(3, 3)), mod.nn.Linear(3, 1))

    ours, ref = [], []
    out = build(tr).apply(lambda m: ours.append(type(m).__name__))
    build(torch).apply(lambda m: ref.append(type(m).__name__))
    assert ours == ref and isinstance(out, nn.Module)

    def init(m):
        if isinstance(m, nn.Linear):
            m.weight.data.fill_(0.5)

    net = build(tr).apply(init)
    assert all(np.all(p.numpy() == 0.5) for n, p in net.named_parameters() if n.endswith("weight"))


# ------------------------------------------------------------------------------------------------
# amin with ties: the gradient is split evenly, as PyTorch (a seeded loop over tied inputs)


def test_amin_amax_ties_split_the_gradient_like_torch():
    rng = np.random.default_rng(5)
    for _ in range(40):
        shape = tuple(rng.integers(1, 4, size=rng.integers(1, 4)))
        a = rng.integers(0, 3, size=shape).astype(np.float64)  # few values: many ties
        dims = [d for d in range(len(shape)) if rng.random() < 0.5] or [int(rng.integers(len(shape)))]
        dim = dims[0] if len(dims) == 1 and rng.random() < 0.5 else tuple(dims)
        for name in ("amin", "amax"):
            x = tr.tensor(a, requires_grad=True)
            xt = torch.tensor(a, requires_grad=True)
            getattr(tr, name)(x, dim).sum().backward()
            getattr(torch, name)(xt, dim).sum().backward()
            np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=0, atol=1e-15, err_msg=f"{name} {a} {dim}")


# ------------------------------------------------------------------------------------------------
# issue 18: copy or share, and a shared version counter for tensors over the same memory

# every way of building a tensor from a NumPy buffer: does it copy (as torch's namesake does)?
BUFFER_BUILDERS = {
    "tensor": (lambda a: tr.tensor(a), lambda a: torch.tensor(a), False),
    "tensor(dtype=same)": (lambda a: tr.tensor(a, dtype=tr.float64), lambda a: torch.tensor(a, dtype=torch.float64), False),
    "as_tensor": (lambda a: tr.as_tensor(a), lambda a: torch.as_tensor(a), True),
    "from_numpy": (lambda a: tr.from_numpy(a), lambda a: torch.from_numpy(a), True),
    "Tensor()": (lambda a: tr.Tensor(a), lambda a: torch.Tensor(a), True),
}

# every way of building a tensor from a tensor: copy (a correct gradient after the source changes) or
# share (then the version counter catches the change)
TENSOR_BUILDERS = {
    "tensor(t)": lambda t: tr.tensor(t),
    "as_tensor(t)": lambda t: tr.as_tensor(t),
    "as_tensor(t, float32)": lambda t: tr.as_tensor(t, dtype=tr.float32),
    "Tensor(t)": lambda t: tr.Tensor(t),
    "detach": lambda t: t.detach(),
    "clone": lambda t: t.clone(),
    "view": lambda t: t.view(-1).view(t.shape),
    "slice": lambda t: t[:],
    "narrow": lambda t: t.narrow(0, 0, t.shape[0]),
    "t().t()": lambda t: t.t().t(),
    "contiguous": lambda t: t.contiguous(),
    "new_tensor": lambda t: t.new_tensor(t),
    "nn.Parameter(t)": lambda t: nn.Parameter(t),
}

MUTATIONS = {
    "zero_": lambda t: t.zero_(),
    "add_": lambda t: t.add_(1.5),
    "mul_": lambda t: t.mul_(-2.0),
    "fill_": lambda t: t.fill_(0.25),
    "setitem": lambda t: t.__setitem__((0,), 9.0),
    "copy_": lambda t: t.copy_(tr.ones(t.shape, dtype=t.dtype)),
}


@pytest.mark.parametrize("name", sorted(BUFFER_BUILDERS))
def test_buffer_builders_copy_or_share_as_torch(name):
    ours, ref, shares = BUFFER_BUILDERS[name]
    # (float32 only for Tensor(): torch.Tensor always makes float32, so it copies a float64 array; ours keeps the dtype)
    for dtype in (np.float32,) if name == "Tensor()" else (np.float32, np.float64):
        a = np.arange(4.0, dtype=dtype)
        expect = np.shares_memory(ref(a).numpy(), a)
        if shares is not None:
            assert expect == shares
        assert np.shares_memory(ours(a).numpy(), a) == expect, f"{name} {dtype}"


def test_tensor_copies_so_a_refilled_batch_gives_the_right_gradient():
    # the loader of issue 18: the batch buffer is refilled after the forward
    buf = np.array([1.0, 2.0, 3.0])
    w = tr.ones(3, dtype=tr.float64, requires_grad=True)
    y = (w * tr.tensor(buf)).sum()
    buf[:] = 0.0
    y.backward()
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 2.0, 3.0])


def test_generated_builds_and_mutations_never_give_a_silent_wrong_gradient():
    """For every (builder, mutation, which side is mutated, op that saves it): after the forward the
    source or the built tensor is changed in place; backward must either give the gradient of the
    values at forward time, or raise the version-counter error. Never a third outcome."""
    rng = np.random.default_rng(18)
    ops = {"mul": lambda w, s: (w * s).sum(), "matmul": lambda w, s: (s @ w).sum(),
           "exp": lambda w, s: (w * s.exp()).sum()}
    cases = 0
    for bname, build in TENSOR_BUILDERS.items():
        for mname, mutate in MUTATIONS.items():
            for side in ("source", "built"):
                for oname, op in ops.items():
                    a = rng.standard_normal((3, 3))
                    src = tr.tensor(a)
                    built = build(src)
                    w = tr.tensor(rng.standard_normal((3, 3)), dtype=built.dtype, requires_grad=True)
                    y = op(w, built)
                    vals = a.astype(built.dtype)
                    if oname == "mul":
                        expected = vals
                    elif oname == "matmul":
                        expected = vals.sum(axis=0)[:, None] * np.ones((1, 3))
                    else:
                        expected = np.exp(vals)
                    with tr.no_grad():
                        mutate(src if side == "source" else built)
                    cases += 1
                    try:
                        y.backward()
                    except RuntimeError as e:
                        assert "modified by an inplace operation" in str(e), (bname, mname, side, oname, e)
                        continue
                    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-6,
                                               err_msg=f"silent wrong gradient: {bname} {mname} {side} {oname}")
    assert cases == len(TENSOR_BUILDERS) * len(MUTATIONS) * 2 * len(ops)


def test_shared_builders_share_the_version_counter():
    x = tr.ones(2)
    for built in (tr.as_tensor(x), tr.Tensor(x), x.detach(), x[:], x.view(2)):
        v = x._version
        built.add_(1.0)
        assert x._version == v + 1
    assert tr.as_tensor(x) is x  # torch returns the tensor itself too
    assert not np.shares_memory(tr.tensor(x).numpy(), x.numpy())


@pytest.mark.parametrize("data,dtype", [
    (np.array([2**64 - 100], np.uint64), None),
    ([2**64 - 100], None),
    ([2**70], None),
    ([2**63], tr.int64),
    (np.array([2**40]), tr.int32),
    ([1e30], tr.int64),
    ([float("nan")], tr.int64),
    ([float("inf")], tr.int32),
])
def test_out_of_range_integer_conversions_raise(data, dtype):
    with pytest.raises(ValueError, match="out of range"):
        tr.tensor(data, dtype=dtype)


def test_in_range_integer_conversions_still_work():
    assert tr.tensor(np.array([2**63 - 1], np.uint64)).tolist() == [2**63 - 1]
    assert tr.tensor([-(2**63)]).tolist() == [-(2**63)]
    assert tr.tensor([2.9, -1.5], dtype=tr.int64).tolist() == [2, -1]
    assert tr.tensor(np.array([7], np.uint8)).dtype == np.int64


def test_from_numpy_only_takes_ndarrays():
    with pytest.raises(TypeError, match="expected np.ndarray \\(got list\\)"):
        tr.from_numpy([1.0, 2.0])
    with pytest.raises(TypeError, match="float16"):
        tr.from_numpy(np.zeros(2, np.float16))
