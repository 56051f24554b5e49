"""Optimizers and lr schedules: against plain NumPy references (always), against torch.optim
(when torch is installed), against hand computation, and their bookkeeping (groups, state that
follows its parameter's device, state_dict)."""
import math
import pathlib

import numpy as np
import pytest

import tinygrad_rnn as tr
from tinygrad_rnn import optim
from tinygrad_rnn.backend.cpu import CPUBackend
from tinygrad_rnn.optim import lr_scheduler

SHAPES = [(3, 4), (5,), ()]


@pytest.fixture
def torch():
    import torch  # the parity extra installs it: never a skip

    return torch


def _param(arr):
    return tr.Tensor(np.array(arr, copy=True), requires_grad=True)


def _set_grad(p, g):
    p.grad = tr.Tensor(np.array(g, dtype=p.dtype, copy=True))


def _problem(rng, steps, dtype=np.float64):
    """Initial values and one gradient per step for each of SHAPES (a fixed stream, not a loss)."""
    p0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    return p0, grads


# ---------------------------------------------------------------------------------------
# plain NumPy references, written from the algorithms' published pseudo-code (float64)


class RefSGD:
    def __init__(self, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        self.lr, self.mu, self.damp, self.wd, self.nesterov = lr, momentum, dampening, weight_decay, nesterov
        self.buf = None

    def step(self, p, g):
        d = g + self.wd * p
        if self.mu:
            self.buf = d.copy() if self.buf is None else self.mu * self.buf + (1 - self.damp) * d
            d = d + self.mu * self.buf if self.nesterov else self.buf
        return p - self.lr * d


class RefAdam:
    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
        self.lr, (self.b1, self.b2), self.eps, self.wd = lr, betas, eps, weight_decay
        self.ams, self.decoupled = amsgrad, decoupled
        self.m = self.v = self.vmax = None
        self.t = 0

    def step(self, p, g):
        if self.m is None:
            self.m, self.v, self.vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
        self.t += 1
        if self.decoupled:
            p = p * (1 - self.lr * self.wd)
        else:
            g = g + self.wd * p
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        self.vmax = np.maximum(self.vmax, self.v)
        m_hat = self.m / (1 - self.b1 ** self.t)
        v_hat = (self.vmax if self.ams else self.v) / (1 - self.b2 ** self.t)
        return p - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class RefRMSprop:
    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        self.lr, self.alpha, self.eps, self.wd, self.mu, self.centered = lr, alpha, eps, weight_decay, momentum, centered
        self.sq = self.ga = self.buf = None

    def step(self, p, g):
        if self.sq is None:
            self.sq, self.ga, self.buf = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
        g = g + self.wd * p
        self.sq = self.alpha * self.sq + (1 - self.alpha) * g * g
        if self.centered:
            self.ga = self.alpha * self.ga + (1 - self.alpha) * g
            avg = np.sqrt(self.sq - self.ga ** 2) + self.eps
        else:
            avg = np.sqrt(self.sq) + self.eps
        if self.mu > 0:
            self.buf = self.mu * self.buf + g / avg
            return p - self.lr * self.buf
        return p - self.lr * g / avg


class RefAdagrad:
    def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        self.lr, self.decay, self.wd, self.init, self.eps = lr, lr_decay, weight_decay, initial_accumulator_value, eps
        self.sum = None
        self.t = 0

    def step(self, p, g):
        if self.sum is None:
            self.sum = np.full_like(p, self.init)
        self.t += 1
        g = g + self.wd * p
        self.sum = self.sum + g * g
        return p - self.lr / (1 + (self.t - 1) * self.decay) * g / (np.sqrt(self.sum) + self.eps)


CASES = [
    ("sgd", optim.SGD, RefSGD, dict(lr=0.1)),
    ("sgd_wd", optim.SGD, RefSGD, dict(lr=0.1, weight_decay=0.01)),
    ("sgd_momentum", optim.SGD, RefSGD, dict(lr=0.1, momentum=0.9)),
    ("sgd_momentum_dampening", optim.SGD, RefSGD, dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.02)),
    ("sgd_nesterov", optim.SGD, RefSGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("adam", optim.Adam, RefAdam, dict(lr=0.01)),
    ("adam_wd", optim.Adam, RefAdam, dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    ("adam_amsgrad", optim.Adam, RefAdam, dict(lr=0.01, weight_decay=0.01, amsgrad=True)),
    ("adamw", optim.AdamW, lambda **k: RefAdam(decoupled=True, **k), dict(lr=0.01, weight_decay=0.1)),
    ("rmsprop", optim.RMSprop, RefRMSprop, dict(lr=0.01)),
    ("rmsprop_momentum_wd", optim.RMSprop, RefRMSprop, dict(lr=0.01, momentum=0.9, weight_decay=0.01)),
    ("rmsprop_centered", optim.RMSprop, RefRMSprop, dict(lr=0.01, alpha=0.9, centered=True)),
    ("rmsprop_centered_momentum", optim.RMSprop, RefRMSprop, dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1)),
    ("adagrad", optim.Adagrad, RefAdagrad, dict(lr=0.1)),
    ("adagrad_decay", optim.Adagrad, RefAdagrad, dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.1)),
]
CASE_IDS = [c[0] for c in CASES]
STEPS = 6


def _run_ours(cls, kwargs, p0, grads):
    params = [_param(a) for a in p0]
    opt = cls(params, **kwargs)
    history = []
    for gs in grads:
        for p, g in zip(params, gs):
            _set_grad(p, g)
        opt.step()
        history.append([p.numpy().copy() for p in params])
    return history, params, opt


def _run_ref(ref_cls, kwargs, p0, grads):
    refs = [ref_cls(**kwargs) for _ in p0]
    ps = [a.astype(np.float64) for a in p0]
    history = []
    for gs in grads:
        ps = [r.step(p, g.astype(np.float64)) for r, p, g in zip(refs, ps, gs)]
        history.append(ps)
    return history


@pytest.mark.parametrize("name,cls,ref,kwargs", CASES, ids=CASE_IDS)
def test_matches_numpy_reference_float64(name, cls, ref, kwargs, rng):
    p0, grads = _problem(rng, STEPS)
    ours, params, _ = _run_ours(cls, kwargs, p0, grads)
    theirs = _run_ref(ref, kwargs, p0, grads)
    for t, (a_step, b_step) in enumerate(zip(ours, theirs)):
        for a, b in zip(a_step, b_step):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=f"{name}: step {t + 1}")
    assert all(p.dtype == np.float64 for p in params)
    moved = np.abs(ours[-1][0] - p0[0]).max()
    assert moved > 1e-3, "the parameters hardly moved: the comparison would be vacuous"


@pytest.mark.parametrize("name,cls,ref,kwargs", CASES, ids=CASE_IDS)
def test_float32_params_and_state_stay_float32(name, cls, ref, kwargs, rng):
    p0, grads = _problem(rng, STEPS, dtype=np.float32)
    ours, params, opt = _run_ours(cls, kwargs, p0, grads)
    theirs = _run_ref(ref, kwargs, p0, grads)
    for a, b in zip(ours[-1], theirs[-1]):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=name)
    for p in params:
        for k, v in opt.state[p].items():
            if k != "step":
                assert v.dtype == np.float32, (k, v.dtype)


def test_reference_comparison_can_fail(rng):
    """Negative control: a different hyper-parameter is detected by the same comparison."""
    p0, grads = _problem(rng, STEPS)
    ours, _, _ = _run_ours(optim.Adam, dict(lr=0.01, betas=(0.9, 0.99)), p0, grads)
    theirs = _run_ref(RefAdam, dict(lr=0.01, betas=(0.9, 0.999)), p0, grads)
    assert not np.allclose(ours[-1][0], theirs[-1][0], rtol=1e-12, atol=1e-14)
    nest, _, _ = _run_ours(optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True), p0, grads)
    plain, _, _ = _run_ours(optim.SGD, dict(lr=0.1, momentum=0.9), p0, grads)
    assert not np.allclose(nest[-1][0], plain[-1][0])


@pytest.mark.torch
@pytest.mark.parametrize("name,cls,ref,kwargs", CASES, ids=CASE_IDS)
def test_matches_torch_step_by_step(name, cls, ref, kwargs, rng, torch):
    p0, grads = _problem(rng, STEPS)
    ours = [_param(a) for a in p0]
    theirs = [torch.tensor(a, requires_grad=True) for a in p0]
    opt = cls(ours, **kwargs)
    topt = getattr(torch.optim, cls.__name__)(theirs, **kwargs)
    for t, gs in enumerate(grads):
        for p, tp, g in zip(ours, theirs, gs):
            _set_grad(p, g)
            tp.grad = torch.tensor(g)
        opt.step()
        topt.step()
        for i, (p, tp) in enumerate(zip(ours, theirs)):
            np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-12, atol=1e-14,
                                       err_msg=f"{name}: param {i} after step {t + 1}")
            for k, tv in topt.state[tp].items():
                tv = float(tv) if k == "step" else tv.numpy()
                np.testing.assert_allclose(opt.state[p][k], tv, rtol=1e-12, atol=1e-14, err_msg=f"{name}: state {k}")


# ---------------------------------------------------------------------------------------
# hand computation


def test_sgd_by_hand():
    w = _param(np.array([1.0, -2.0]))
    opt = optim.SGD([w], lr=0.1, momentum=0.5)
    _set_grad(w, [2.0, 4.0])
    opt.step()  # buf = g = [2, 4]; w = [1, -2] - 0.1*[2, 4]
    np.testing.assert_allclose(w.numpy(), [0.8, -2.4], rtol=0, atol=1e-15)
    _set_grad(w, [2.0, 4.0])
    opt.step()  # buf = 0.5*[2, 4] + [2, 4] = [3, 6]; w -= 0.1*[3, 6]
    np.testing.assert_allclose(w.numpy(), [0.5, -3.0], rtol=0, atol=1e-15)


def test_adam_and_adagrad_first_step_is_lr_times_sign():
    # after one step m_hat = g and v_hat = g², so the update is lr * g / (|g| + eps)
    g = np.array([3.0, -0.5, 1e-3])
    for opt_cls in (optim.Adam, optim.Adagrad):
        w = _param(np.zeros(3))
        opt = opt_cls([w], lr=0.1, eps=1e-12)
        _set_grad(w, g)
        opt.step()
        np.testing.assert_allclose(w.numpy(), -0.1 * g / (np.abs(g) + 1e-12), rtol=1e-12)
        np.testing.assert_allclose(w.numpy(), -0.1 * np.sign(g), rtol=1e-8)


@pytest.mark.parametrize("cls,kw", [
    (optim.SGD, dict(lr=0.1, momentum=0.9)), (optim.Adam, dict(lr=0.05)),
    (optim.RMSprop, dict(lr=0.01, centered=True, momentum=0.5)), (optim.Adagrad, dict(lr=0.5)),
], ids=["SGD", "Adam", "RMSprop", "Adagrad"])
def test_training_a_linear_model_with_autograd(cls, kw):
    rng = np.random.default_rng(0)
    x = tr.Tensor(rng.standard_normal((64, 3)))
    y = tr.Tensor(x.numpy() @ np.array([[1.5], [-2.0], [0.5]]))
    w = tr.Tensor(np.zeros((3, 1)), requires_grad=True)
    opt = cls([w], **kw)

    def closure():
        opt.zero_grad()
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        return loss

    first = closure().item()
    for _ in range(150):
        loss = opt.step(closure)
    assert loss.item() < 1e-6 * first


def test_training_nn_linear_float32():
    lin = tr.nn.Linear(4, 2, seed=0)
    x = tr.randn(32, 4, seed=1)
    y = x @ tr.randn(4, 2, seed=2)
    opt = optim.Adam(lin.parameters(), lr=0.05)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = ((lin(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-2 * losses[0]
    assert lin.weight.dtype == np.float32


# ---------------------------------------------------------------------------------------
# bookkeeping


def test_params_without_grad_are_skipped():
    a, b = _param(np.ones(2)), _param(np.ones(2))
    opt = optim.Adam([a, b], lr=0.1)
    _set_grad(a, [1.0, 1.0])
    opt.step()
    assert not np.allclose(a.numpy(), 1.0)
    np.testing.assert_array_equal(b.numpy(), 1.0)
    assert not opt.state.get(b)


def test_zero_grad():
    a = _param(np.ones(2))
    opt = optim.SGD([a], lr=0.1)
    _set_grad(a, [1.0, 2.0])
    grad = a.grad
    opt.zero_grad(set_to_none=False)
    assert a.grad is grad and np.all(a.grad.numpy() == 0)
    opt.zero_grad()
    assert a.grad is None


def test_param_groups_have_their_own_options(rng):
    p0, grads = _problem(rng, 4)
    params = [_param(a) for a in p0]
    opt = optim.SGD([{"params": params[:2]}, {"params": [params[2]], "lr": 0.5, "momentum": 0.9}], lr=0.1)
    refs = [RefSGD(lr=0.1), RefSGD(lr=0.1), RefSGD(lr=0.5, momentum=0.9)]
    ps = [a.copy() for a in p0]
    for gs in grads:
        for p, g in zip(params, gs):
            _set_grad(p, g)
        opt.step()
        ps = [r.step(p, g) for r, p, g in zip(refs, ps, gs)]
    for p, want in zip(params, ps):
        np.testing.assert_allclose(p.numpy(), want, rtol=1e-12)
    assert opt.param_groups[0]["momentum"] == 0.0 and opt.param_groups[1]["lr"] == 0.5


def test_constructor_errors():
    w = _param(np.ones(2))
    with pytest.raises(TypeError, match="single Tensor"):
        optim.SGD(w, lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [w]}, {"params": [w]}], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([w * 2], lr=0.1)
    with pytest.raises(TypeError, match="only optimize Tensors"):
        optim.SGD([np.ones(2)], lr=0.1)


@pytest.mark.parametrize("make,value", [
    (lambda p: optim.SGD(p, lr=-0.1), "-0.1"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-0.5), "-0.5"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "momentum=0.0"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "dampening=0.1"),
    (lambda p: optim.SGD(p, lr=0.1, weight_decay=-1.0), "-1.0"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.999)), "index 0: 1.0"),
    (lambda p: optim.Adam(p, betas=(0.9, -0.1)), "index 1: -0.1"),
    (lambda p: optim.Adam(p, eps=-1e-8), "-1e-08"),
    (lambda p: optim.Adam(p, lr=float("nan")), "nan"),
    (lambda p: optim.RMSprop(p, alpha=-0.9), "-0.9"),
    (lambda p: optim.RMSprop(p, momentum=-0.9), "-0.9"),
    (lambda p: optim.Adagrad(p, lr_decay=-0.1), "-0.1"),
    (lambda p: optim.Adagrad(p, initial_accumulator_value=-2.0), "-2.0"),
    (lambda p: optim.SGD([{"params": p, "lr": -3.0}], lr=0.1), "-3.0"),
])
def test_invalid_hyper_parameters_name_the_value(make, value):
    with pytest.raises(ValueError, match=value.replace("(", r"\(").replace(".", r"\.")):
        make([_param(np.ones(2))])


def test_strided_and_0d_params(rng):
    base = rng.standard_normal((4, 3))
    w = tr.Tensor(np.asfortranarray(base), requires_grad=True)
    assert not w.numpy().flags.c_contiguous
    s = _param(np.array(2.0))
    opt = optim.Adam([w, s], lr=0.1, amsgrad=True)
    ref_w, ref_s = RefAdam(lr=0.1, amsgrad=True), RefAdam(lr=0.1, amsgrad=True)
    pw, ps = base.copy(), np.array(2.0)
    for _ in range(3):
        g = rng.standard_normal((4, 3))
        w.grad = tr.Tensor(np.asfortranarray(g))
        _set_grad(s, np.array(0.5))
        opt.step()
        pw, ps = ref_w.step(pw, g), ref_s.step(ps, np.array(0.5))
    np.testing.assert_allclose(w.numpy(), pw, rtol=1e-12)
    np.testing.assert_allclose(s.numpy(), ps, rtol=1e-12)
    assert opt.state[w]["exp_avg"].flags.c_contiguous


def test_state_dict_round_trip_continues_identically(rng):
    p0, grads = _problem(rng, 6)
    for cls, kw in ((optim.Adam, dict(lr=0.01, amsgrad=True)), (optim.SGD, dict(lr=0.1, momentum=0.9)),
                    (optim.RMSprop, dict(centered=True, momentum=0.5)), (optim.Adagrad, dict(lr_decay=0.1))):
        a = [_param(x) for x in p0]
        opt_a = cls(a, **kw)
        for gs in grads[:3]:
            for p, g in zip(a, gs):
                _set_grad(p, g)
            opt_a.step()
        sd = opt_a.state_dict()
        assert sd["param_groups"][0]["params"] == [0, 1, 2]
        arrays = [v for s in sd["state"].values() for v in s.values() if not isinstance(v, (int, float))]
        assert arrays and all(type(v) is np.ndarray for v in arrays)
        arrays[0][...] = 123.0  # a copy: the optimizer must not see this
        sd = opt_a.state_dict()
        b = [_param(p.numpy()) for p in a]
        opt_b = cls(b, lr=999.0)
        opt_b.load_state_dict(sd)
        assert opt_b.param_groups[0]["lr"] == opt_a.param_groups[0]["lr"]
        for gs in grads[3:]:
            for p, q, g in zip(a, b, gs):
                _set_grad(p, g)
                _set_grad(q, g)
            opt_a.step()
            opt_b.step()
        for p, q in zip(a, b):
            np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=cls.__name__)


def test_load_state_dict_rejects_mismatched_groups():
    opt = optim.SGD([_param(np.ones(2)), _param(np.ones(3))], lr=0.1, momentum=0.9)
    other = optim.SGD([_param(np.ones(2))], lr=0.1)
    with pytest.raises(ValueError, match="has 1 parameters"):
        opt.load_state_dict(other.state_dict())
    sd = opt.state_dict()
    sd["state"] = {0: {"momentum_buffer": np.ones(5)}}
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        opt.load_state_dict(sd)


class FakeDevice(CPUBackend):
    """A second 'device' made of NumPy arrays: records the arrays it makes and the kernels it runs."""

    name = "fake"

    def __init__(self):
        self.made, self.calls = [], []

    def to_host(self, a):
        return np.array(a, copy=True)

    def from_host(self, a):
        out = np.array(a, copy=True)
        self.made.append(out)
        return out

    def adam_step(self, *args, **kw):
        self.calls.append("adam_step")
        return super().adam_step(*args, **kw)


def _move(p, be):
    """What Module.to does: swap the parameter's array and backend in place."""
    p.data = be.from_host(p._be.to_host(p.data))
    p._be = be


def test_state_follows_the_parameter_to_another_device(rng):
    p0, grads = _problem(rng, 6)
    ps = [_param(a) for a in p0]
    opt = optim.Adam(ps, lr=0.01, amsgrad=True)
    refs = [RefAdam(lr=0.01, amsgrad=True) for _ in ps]
    want = [a.copy() for a in p0]
    fake = FakeDevice()

    def step(gs):
        nonlocal want
        for p, g in zip(ps, gs):
            p.grad = tr.Tensor._make(p._be.from_host(np.array(g)), p._be, False, None, 0)
        opt.step()
        want = [r.step(w, g) for r, w, g in zip(refs, want, gs)]

    for gs in grads[:2]:
        step(gs)
    for p in ps:
        _move(p, fake)
    for gs in grads[2:4]:
        step(gs)
    assert fake.calls.count("adam_step") == 2 * len(ps), "the kernels must be asked of the parameter's backend"
    for p in ps:
        for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert any(opt.state[p][k] is a for a in fake.made), f"state {k} did not move to the parameter's device"
    assert opt.state_dict()["state"][0]["exp_avg"].shape == p0[0].shape
    cpu = tr.get_backend("cpu")
    for p in ps:
        _move(p, cpu)
    step(grads[4])
    for p in ps:
        assert not any(opt.state[p]["exp_avg"] is a for a in fake.made)
    for p, w in zip(ps, want):
        np.testing.assert_allclose(p.numpy(), w, rtol=1e-12, err_msg="state was lost or corrupted by the moves")


def test_state_follows_a_dtype_change(rng):
    p = _param(rng.standard_normal(4).astype(np.float32))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    _set_grad(p, np.ones(4))
    opt.step()
    p.data = p.data.astype(np.float64)  # what Module.double() does
    _set_grad(p, np.ones(4))
    opt.step()
    assert opt.state[p]["momentum_buffer"].dtype == np.float64
    assert p.dtype == np.float64


def test_state_follows_module_to_dtype():
    lin = tr.nn.Linear(3, 2, seed=0)
    opt = optim.Adam(lin.parameters(), lr=0.01)
    x = tr.randn(5, 3, seed=1)
    lin(x).sum().backward()
    opt.step()
    lin.to(np.float64)  # in place: the optimizer's references stay valid
    opt.zero_grad()
    lin(x.to(np.float64)).sum().backward()
    opt.step()
    assert all(opt.state[p]["exp_avg"].dtype == np.float64 and opt.state[p]["step"] == 2 for p in lin.parameters())


def test_optimizers_never_import_numba():
    # the kernels are reached through p._be so a GPU backend can supply its own
    for f in (pathlib.Path(optim.__file__).parent).glob("*.py"):
        assert "numba" not in f.read_text(), f.name


# ---------------------------------------------------------------------------------------
# learning-rate schedules


def _opt(lr=1.0, groups=1):
    return optim.SGD([{"params": [_param(np.ones(1))], "lr": lr * (i + 1)} for i in range(groups)], lr=lr)


def _lrs(sched, epochs):
    out = []
    for _ in range(epochs):
        out.append(sched.get_last_lr())
        sched.optimizer.step()
        sched.step()
    return out


def test_step_exponential_multistep_lambda_closed_forms():
    lrs = _lrs(lr_scheduler.StepLR(_opt(0.5), step_size=3, gamma=0.1), 8)
    assert np.allclose([x[0] for x in lrs], [0.5 * 0.1 ** (e // 3) for e in range(8)], rtol=1e-12)
    lrs = _lrs(lr_scheduler.ExponentialLR(_opt(2.0, groups=2), gamma=0.9), 6)
    assert np.allclose(lrs, [[2.0 * 0.9 ** e, 4.0 * 0.9 ** e] for e in range(6)], rtol=1e-12)
    sched = lr_scheduler.MultiStepLR(_opt(1.0), milestones=[2, 5, 5], gamma=0.5)
    lrs = _lrs(sched, 7)
    assert np.allclose([x[0] for x in lrs], [1, 1, 0.5, 0.5, 0.5, 0.125, 0.125], rtol=1e-12)
    assert np.allclose(sched.closed_form(6), [0.125])
    lrs = _lrs(lr_scheduler.LambdaLR(_opt(0.1, groups=2), [lambda e: e + 1, lambda e: 1.0]), 3)
    assert np.allclose(lrs, [[0.1, 0.2], [0.2, 0.2], [0.3, 0.2]], rtol=1e-12)


def test_scheduler_writes_the_lr_the_optimizer_uses():
    opt = _opt(1.0)
    sched = lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    assert opt.param_groups[0]["initial_lr"] == 1.0
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.5
    p = opt.param_groups[0]["params"][0]
    _set_grad(p, [1.0])
    opt.step()
    np.testing.assert_allclose(p.numpy(), [0.5])


def test_zaremba_ptb_schedule():
    """lr 1 for 4 epochs, then halved every epoch (Zaremba et al. 2014, small model, 13 epochs)."""
    want = [1.0] * 4 + [0.5 ** k for k in range(1, 10)]
    via_helper = _lrs(lr_scheduler.LambdaLR(_opt(1.0), lr_scheduler.decay_after(4, 0.5)), 13)
    via_lambda = _lrs(lr_scheduler.LambdaLR(_opt(1.0), lambda e: 0.5 ** max(0, e - 3)), 13)
    assert [x[0] for x in via_helper] == want
    assert [x[0] for x in via_lambda] == want
    import pickle

    f = pickle.loads(pickle.dumps(lr_scheduler.decay_after(6, 1 / 1.2)))
    assert f(5) == 1.0 and math.isclose(f(7), 1 / 1.2 ** 2)


def test_scheduler_errors_and_state_dict():
    with pytest.raises(ValueError, match="step_size"):
        lr_scheduler.StepLR(_opt(), step_size=0)
    with pytest.raises(ValueError, match="expected 2 lr_lambdas"):
        lr_scheduler.LambdaLR(_opt(groups=2), [lambda e: 1.0])
    with pytest.raises(TypeError, match="not an Optimizer"):
        lr_scheduler.StepLR(object(), step_size=1)
    a = lr_scheduler.StepLR(_opt(), step_size=2, gamma=0.5)
    _lrs(a, 3)
    b = lr_scheduler.StepLR(_opt(), step_size=2, gamma=0.5)
    b.load_state_dict(a.state_dict())
    assert b.last_epoch == 3 and b.get_last_lr() == a.get_last_lr()
    sd = lr_scheduler.LambdaLR(_opt(), lambda e: 1.0).state_dict()
    assert "lr_lambdas" not in sd and "optimizer" not in sd


@pytest.mark.torch
def test_schedules_match_torch(torch):
    def pair(make_ours, make_theirs):
        t = torch.nn.Parameter(torch.ones(1))
        topt = torch.optim.SGD([{"params": [t]}, {"params": [torch.nn.Parameter(torch.ones(1))], "lr": 0.3}], lr=0.7)
        opt = optim.SGD([{"params": [_param(np.ones(1))]}, {"params": [_param(np.ones(1))], "lr": 0.3}], lr=0.7)
        ours, theirs = make_ours(opt), make_theirs(topt)
        for _ in range(12):
            np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-14)
            opt.step()
            topt.step()
            ours.step()
            theirs.step()

    S, T = lr_scheduler, torch.optim.lr_scheduler
    pair(lambda o: S.StepLR(o, 4, 0.3), lambda o: T.StepLR(o, 4, 0.3))
    pair(lambda o: S.ExponentialLR(o, 0.8), lambda o: T.ExponentialLR(o, 0.8))
    pair(lambda o: S.MultiStepLR(o, [1, 4, 4, 9], 0.5), lambda o: T.MultiStepLR(o, [1, 4, 4, 9], 0.5))
    pair(lambda o: S.LambdaLR(o, S.decay_after(4, 0.5)), lambda o: T.LambdaLR(o, S.decay_after(4, 0.5)))


# ---------------------------------------------------------------------------------------
# the kernels vectorise: no per-division ZeroDivisionError branch; 0/0 is nan, as in PyTorch


def test_optimizer_kernels_compile_without_python_division_checks():
    from tinygrad_rnn.backend import optim_kernels as OK

    for k in (OK.sgd_step, OK.adam_step, OK.rmsprop_step, OK.adagrad_step):
        assert k.targetoptions.get("error_model") == "numpy", k


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_zero_eps_zero_grad_is_nan_like_torch(dtype):
    w = tr.tensor(np.ones(3, dtype=dtype), requires_grad=True)
    w.grad = tr.tensor(np.zeros(3, dtype=dtype))
    with np.errstate(invalid="ignore"):
        optim.Adam([w], lr=0.1, eps=0.0).step()  # 0 / (sqrt(0) + 0): nan, never a ZeroDivisionError
    assert np.isnan(w.numpy()).all()
    import torch
    tw = torch.ones(3, dtype=getattr(torch, np.dtype(dtype).name), requires_grad=True)
    tw.grad = torch.zeros(3, dtype=tw.dtype)
    torch.optim.Adam([tw], lr=0.1, eps=0.0).step()
    assert torch.isnan(tw.detach()).all()
