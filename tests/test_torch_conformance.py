"""PyTorch's own OpInfo inputs for every op tinygrad_rnn claims (issue 9).

``torch.testing._internal.common_methods_invocations.op_db`` is PyTorch's test database: for each
op, ``sample_inputs`` and ``reference_inputs`` give the edge cases (0-d, empty, +-inf, NaN, ties,
``dim=()``, broadcasting, non-contiguous) its own suite runs. Here each float64 sample runs through
torch and through our op; forward values (shape, dtype, value) and the gradient of every float input
(for a random weighting of the outputs) must agree. Otherwise the sample must be *refused*: our op
raises a ``TypeError``/``ValueError`` of its own (an unsupported argument such as ``alpha=`` or a
tensor ``clamp`` bound). Anything else (a mismatch, another exception, NumPy's own error) fails.
Samples torch itself rejects are skipped. ``python tests/test_torch_conformance.py`` prints the
counts and the refusals.
"""
from __future__ import annotations

import collections
import sys
import warnings

import numpy as np
import pytest

# the parity extra installs torch and expecttest (which torch's test internals import): no skip
import torch  # noqa: E402
import torch.testing._internal.common_methods_invocations as cmi  # noqa: E402

import tinygrad_rnn as tr  # noqa: E402
import tinygrad_rnn.nn.functional as F  # noqa: E402

pytestmark = pytest.mark.torch


def _method(name):
    return lambda x, *a, **k: getattr(x, name)(*a, **k)


def _binary(name, reverse):
    """torch.add(input, other, **kw) where input may be a number: then other's reflected method."""
    return lambda x, y, **k: getattr(x, name)(y, **k) if isinstance(x, tr.Tensor) else getattr(y, reverse)(x, **k)


# (OpInfo name, variant) -> our call with the OpInfo's calling convention
OURS = {
    ("abs", ""): _method("abs"), ("neg", ""): _method("neg"), ("exp", ""): _method("exp"),
    ("log", ""): _method("log"), ("tanh", ""): _method("tanh"), ("sigmoid", ""): _method("sigmoid"),
    ("sqrt", ""): _method("sqrt"), ("nn.functional.relu", ""): lambda x, *a, **k: F.relu(x, *a, **k),
    ("clone", ""): _method("clone"),
    ("add", ""): _binary("add", "__radd__"), ("sub", ""): _binary("sub", "__rsub__"), ("mul", ""): _binary("mul", "__rmul__"),
    ("div", "no_rounding_mode"): _binary("div", "__rtruediv__"), ("div", "trunc_rounding"): _binary("div", "__rtruediv__"),
    ("div", "floor_rounding"): _binary("div", "__rtruediv__"), ("pow", ""): _binary("pow", "__rpow__"),
    # x.__rop__(y) is y op x; torch's OpInfo also calls them with a number as x
    ("__radd__", ""): lambda x, y: y + x, ("__rsub__", ""): lambda x, y: y - x,
    ("__rmul__", ""): lambda x, y: y * x, ("__rdiv__", ""): lambda x, y: y / x,
    ("__rpow__", ""): lambda x, y: y ** x,
    ("maximum", ""): lambda x, *a, **k: tr.maximum(x, *a, **k), ("minimum", ""): lambda x, *a, **k: tr.minimum(x, *a, **k),
    ("clamp", ""): lambda x, *a, **k: tr.clamp(x, *a, **k),
    ("matmul", ""): lambda x, *a, **k: tr.matmul(x, *a, **k),
    ("sum", ""): _method("sum"), ("mean", ""): _method("mean"), ("amax", ""): lambda x, *a, **k: tr.amax(x, *a, **k),
    ("amin", ""): lambda x, *a, **k: tr.amin(x, *a, **k), ("argmax", ""): _method("argmax"),
    ("max", "reduction_with_dim"): _method("max"), ("max", "reduction_no_dim"): _method("max"),
    ("max", "binary"): _method("max"), ("min", "reduction_with_dim"): _method("min"),
    ("min", "reduction_no_dim"): _method("min"), ("min", "binary"): _method("min"),
    ("softmax", ""): _method("softmax"), ("softmax", "with_dtype"): _method("softmax"),
    ("log_softmax", ""): _method("log_softmax"), ("log_softmax", "with_dtype"): _method("log_softmax"),
    ("reshape", ""): _method("reshape"), ("view", ""): _method("view"), ("permute", ""): _method("permute"),
    ("transpose", ""): _method("transpose"), ("t", ""): _method("t"), ("T", ""): lambda x: x.T,
    ("unsqueeze", ""): _method("unsqueeze"), ("squeeze", ""): _method("squeeze"), ("squeeze", "multiple"): _method("squeeze"),
    ("flatten", ""): _method("flatten"), ("expand", ""): _method("expand"), ("__getitem__", ""): _method("__getitem__"),
    ("cat", ""): lambda xs, *a, **k: tr.cat(xs, *a, **k), ("stack", ""): lambda xs, *a, **k: tr.stack(xs, *a, **k),
    ("split", ""): lambda x, *a, **k: tr.split(x, *a, **k), ("split", "list_args"): lambda x, *a, **k: tr.split(x, *a, **k),
    ("chunk", ""): lambda x, *a, **k: tr.chunk(x, *a, **k),
    ("where", ""): lambda x, cond, other, **k: tr.where(cond, x, other, **k),
    ("nn.functional.embedding", ""): lambda w, idx, **k: F.embedding(idx, w, **k),
    ("nn.functional.cross_entropy", ""): lambda x, *a, **k: F.cross_entropy(x, *a, **k),
    ("nn.functional.nll_loss", ""): lambda x, *a, **k: F.nll_loss(x, *a, **k),
    ("nn.functional.mse_loss", ""): lambda x, *a, **k: F.mse_loss(x, *a, **k),
    ("nn.functional.linear", ""): lambda x, *a, **k: F.linear(x, *a, **k),
}
OPS = {(op.name, op.variant_test_name): op for op in cmi.op_db if (op.name, op.variant_test_name) in OURS}
IDS = sorted(OURS)
RESULTS: dict[tuple[str, str], collections.Counter] = {}
REFUSALS: dict[tuple[str, str], set] = collections.defaultdict(set)
RTOL, ATOL = 1e-7, 1e-9


class _Converter:
    """torch -> tinygrad_rnn, keeping identity (a tensor used twice becomes one of ours used twice)."""

    def __init__(self, grad: bool):
        self.grad = grad
        self.memo: dict[int, object] = {}
        self.pairs: list[tuple[object, object]] = []  # (torch leaf, our leaf) for float inputs

    def __call__(self, v):
        if isinstance(v, torch.Tensor):
            if id(v) in self.memo:
                return self.memo[id(v)]
            ours = tr.tensor(v.detach().cpu().numpy().copy())
            if self.grad and v.dtype == torch.float64 and v.requires_grad:
                ours.requires_grad_(True)
                self.pairs.append((v, ours))
            self.memo[id(v)] = ours
            return ours
        if isinstance(v, torch.Size):
            return tuple(v)
        if isinstance(v, (list, tuple)):
            return type(v)(self(x) for x in v) if not hasattr(v, "_fields") else type(v)(*[self(x) for x in v])
        if isinstance(v, dict):
            return {k: self(x) for k, x in v.items()}
        if isinstance(v, torch.dtype):
            return v  # our ops take no torch dtype: passing it on makes them refuse it, as they should
        return v


def _leafify(sample, grad: bool):
    """Fresh torch leaves (float64 ones requiring grad) so that torch.autograd.grad can be asked for them."""
    memo: dict[int, object] = {}

    def conv(v):
        if isinstance(v, torch.Tensor):
            if id(v) not in memo:
                t = v.detach().clone()
                if grad and t.dtype == torch.float64:
                    t.requires_grad_(True)
                memo[id(v)] = t
            return memo[id(v)]
        if isinstance(v, torch.Size):
            return v
        if isinstance(v, (list, tuple)) and not hasattr(v, "_fields"):
            return type(v)(conv(x) for x in v)
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(sample.input), conv(tuple(sample.args)), conv(dict(sample.kwargs))


def _outs(v):
    if isinstance(v, (tuple, list)):
        return list(v)
    return [v]


def _np_dtype(t):
    return np.dtype(str(t.dtype).replace("torch.", "")) if str(t.dtype) != "torch.bool" else np.dtype(bool)


def run_sample(key, op, sample, seed: int) -> tuple[str, str]:
    """('pass' | 'refused' | 'skipped', detail); raises AssertionError on a mismatch or a crash."""
    grad = op.supports_autograd
    inp, args, kwargs = _leafify(sample, grad)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = op(inp, *args, **kwargs)
    except Exception as e:  # torch rejects the sample itself
        return "skipped", f"torch: {type(e).__name__}"
    if expected is NotImplemented:
        return "skipped", "torch: NotImplemented"
    conv = _Converter(grad)
    try:
        o_inp, o_args, o_kwargs = conv(inp), conv(args), conv(kwargs)
        if not conv.memo:  # numbers only (torch.add(2.0, 3.0)): not a tensor op
            return "skipped", "no tensor operand"
        with np.errstate(all="ignore"):
            got = OURS[key](o_inp, *o_args, **o_kwargs)
    except (TypeError, ValueError) as e:
        if type(e).__module__.startswith("numpy"):
            raise AssertionError(f"{key}: NumPy's own error leaked: {type(e).__name__}: {e}\n{sample}") from e
        return "refused", f"{type(e).__name__}: {str(e)[:160]}"
    except Exception as e:
        raise AssertionError(f"{key}: crashed with {type(e).__name__}: {e}\n{sample}") from e
    exp_l, got_l = _outs(expected), _outs(got)
    assert len(exp_l) == len(got_l), f"{key}: {len(got_l)} outputs, torch gives {len(exp_l)}\n{sample}"
    for i, (e_, g_) in enumerate(zip(exp_l, got_l)):
        assert isinstance(g_, tr.Tensor), f"{key}: output {i} is a {type(g_).__name__}\n{sample}"
        en = e_.detach().cpu().numpy()
        assert g_.shape == tuple(en.shape), f"{key}: output {i} shape {g_.shape}, torch {tuple(en.shape)}\n{sample}"
        assert g_.dtype == _np_dtype(e_), f"{key}: output {i} dtype {g_.dtype}, torch {e_.dtype}\n{sample}"
        np.testing.assert_allclose(g_.numpy(), en, rtol=RTOL, atol=ATOL, equal_nan=True,
                                   err_msg=f"{key}: forward output {i}\n{sample}")
    leaves = [t for t, _ in conv.pairs]
    if not grad or not leaves:
        return "pass", ""
    rng = np.random.default_rng(seed)
    w = [rng.standard_normal(tuple(e_.shape)) if e_.dtype == torch.float64 and e_.requires_grad else None for e_ in exp_l]
    if all(x is None for x in w):
        return "pass", ""
    loss_t = sum((e_ * torch.from_numpy(x)).sum() for e_, x in zip(exp_l, w) if x is not None)
    try:
        grads_t = torch.autograd.grad(loss_t, leaves, allow_unused=True)
    except Exception as e:
        return "skipped", f"torch backward: {type(e).__name__}"
    terms = [(g_ * tr.tensor(x)).sum() for g_, x in zip(got_l, w) if x is not None and g_.requires_grad]
    if terms:
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        try:
            with np.errstate(all="ignore"):
                total.backward()
        except Exception as e:
            raise AssertionError(f"{key}: backward crashed with {type(e).__name__}: {e}\n{sample}") from e
    for j, ((t_leaf, ours), gt) in enumerate(zip(conv.pairs, grads_t)):
        ref = np.zeros(tuple(t_leaf.shape)) if gt is None else gt.numpy()
        mine = np.zeros(ours.shape) if ours.grad is None else ours.grad.numpy()
        np.testing.assert_allclose(mine, ref, rtol=1e-6, atol=1e-8, equal_nan=True,
                                   err_msg=f"{key}: gradient of float input {j} of shape {ours.shape}\n{sample}")
    return "pass", ""


def _samples(op):
    for kind in ("sample_inputs", "reference_inputs"):
        try:
            yield from ((kind, s) for s in getattr(op, kind)("cpu", torch.float64, requires_grad=False))
        except ValueError:  # a few generators refuse requires_grad combos or dtypes: take what they gave
            continue


@pytest.mark.parametrize("key", IDS, ids=[f"{n}.{v}" if v else n for n, v in IDS])
def test_opinfo_samples(key):
    if key not in OPS:
        pytest.skip(f"{key} is not in this torch's op_db")
    op = OPS[key]
    counts: collections.Counter = collections.Counter()
    for n, (kind, sample) in enumerate(_samples(op)):
        status, detail = run_sample(key, op, sample, seed=n)
        counts[(kind, status)] += 1
        if status == "refused":
            REFUSALS[key].add(detail)
    RESULTS[key] = counts
    assert sum(counts.values()) > 0


def summary() -> str:
    tot: collections.Counter = collections.Counter()
    for c in RESULTS.values():
        tot.update(c)
    lines = []
    for kind in ("sample_inputs", "reference_inputs"):
        lines.append(f"{kind}: " + ", ".join(f"{s} {tot[(kind, s)]}" for s in ("pass", "refused", "skipped")))
    lines.append("refusals:")
    for key in sorted(REFUSALS):
        for d in sorted(REFUSALS[key]):
            lines.append(f"  {key[0]}{'.' + key[1] if key[1] else ''}: {d}")
    return "\n".join(lines)


if __name__ == "__main__":  # the counts and refusal list for the README
    for key in IDS:
        if key in OPS:
            test_opinfo_samples(key)
    print(summary())
    sys.exit(0)
