"""The GPU kernels' per-element math, written once as *kernel descriptions*.

A description lists statements such as ``i = sigmoid(xi + hi)`` or ``c = select(m, f * cp + i * g, cp)``
that are valid Python *and* valid CUDA C++ expressions. From each description this module

  * generates the CUDA source (``cuda_source``): the statements verbatim, each becoming
    ``const R name = <expr>;``, wrapped in the loads, stores and launch indexing of its layout;
  * evaluates it on the host with NumPy (``evaluate`` / ``run_numpy``), which is how the tests
    compare the math of every GPU kernel with the Numba CPU kernels (``rnn_kernels.py``,
    ``cpu_kernels.py``, ``optim_kernels.py``) on machines without a GPU.

The vocabulary is deliberately small: ``+ - * /``, unary ``-``, integer literals (so ``1 - i``
stays in the storage type in both languages), names, and the functions ``sigmoid``, ``tanh``,
``exp``, ``log``, ``sqrt`` and ``select(cond, a, b)`` (``cond ? a : b`` in C, ``np.where`` in
NumPy), where ``cond`` is a name (the 0/1 mask ``m``) or one comparison. Masking uses ``select``
rather than ``m * a + (1 - m) * b``: a padded step must carry its state bit-for-bit even when the
other branch overflowed (``0 * inf`` is nan). ``check_kernel`` enforces all of this.

    >>> sorted(KERNELS)[:2]
    ['adagrad_step', 'adam_step']
    >>> "const R c = select(m, f * cp + i * g, cp);" in cuda_source(KERNELS["lstm_step_forward"], "float32")
    True

What the NumPy evaluation does NOT cover (it needs a GPU, and ``tests/test_cuda.py`` checks it
there): the generated loads/stores and index arithmetic, the launch configuration, the block
reductions of the softmax kernel, compilation by NVRTC, cuBLAS, and CUDA-graph capture.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Kernel", "KERNELS", "check_kernel", "cuda_source", "evaluate", "run_numpy", "sigmoid",
           "sgd_kernel", "adam_kernel", "rmsprop_kernel", "adagrad_kernel", "cell_kernel", "XENT_TERM",
           "XENT_ROW", "XENT_BACKWARD"]

FUNCTIONS = ("sigmoid", "tanh", "exp", "log", "sqrt", "select")


@dataclass(frozen=True)
class Kernel:
    """One kernel's math.

    ``space``: ``"cell"`` (elements (row, col) of a (rows, H) state; arrays laid out as in
    ``rnn_kernels.py``), ``"flat"`` (elements of 1-D arrays) or ``"custom"`` (hand-written
    indexing in this file: the softmax kernels). ``arrays``: (name, layout) in argument order,
    layout ``"gN"`` (N gate blocks of width H per row: (rows, N*H)), ``"row"`` (rows,),
    ``"col"`` (H,) or ``"flat"``. ``loads``: (variable, array, gate block). ``stores``:
    (array, gate block, variable). ``compute``: ``"storage"`` (arithmetic in the arrays' dtype)
    or ``"float64"`` (the optimizers and softmax, as their CPU kernels do).
    """

    name: str
    space: str
    arrays: tuple[tuple[str, str], ...]
    loads: tuple[tuple[str, str | None, int], ...]
    body: tuple[str, ...]
    stores: tuple[tuple[str, int, str], ...] = ()
    scalars: tuple[str, ...] = ()
    compute: str = "storage"

    def layout(self, array: str) -> str:
        return dict(self.arrays)[array]


# ------------------------------------------------------------------------------------------
# validation


_RESERVED = {"R", "T", "int", "float", "double", "long", "const", "char", "bool", "if", "else", "for", "while",
             "return", "do", "in", "is", "or", "and", "not", "lambda", "auto", "case", "default", "switch",
             "break", "continue", "goto", "signed", "unsigned", "short", "void", "struct", "union", "enum",
             "static", "extern", "register", "volatile", "sizeof", "typedef", "inline", "template", "this",
             "new", "delete", "true", "false", "None", "True", "False", "max", "min", "abs", "pow", "np"}


def _check_expr(node: ast.AST, defined: set[str], where: str, cond_ok: bool = False) -> None:
    if isinstance(node, ast.BinOp):
        if not isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            raise ValueError(f"{where}: operator {type(node.op).__name__} is not in the kernel vocabulary (+ - * /)")
        if isinstance(node.op, ast.Div) and isinstance(node.left, ast.Constant) and isinstance(node.right, ast.Constant):
            raise ValueError(f"{where}: integer / integer truncates in C; write the value instead")
        _check_expr(node.left, defined, where)
        _check_expr(node.right, defined, where)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub):
            raise ValueError(f"{where}: unary {type(node.op).__name__} is not allowed (only -x)")
        _check_expr(node.operand, defined, where)
    elif isinstance(node, ast.Constant):
        if type(node.value) is not int:
            raise ValueError(f"{where}: literal {node.value!r} must be an integer (it keeps the storage type in C and NumPy)")
    elif isinstance(node, ast.Name):
        if node.id not in defined:
            raise ValueError(f"{where}: name {node.id!r} is used before it is defined")
    elif isinstance(node, ast.Compare):
        if not cond_ok:
            raise ValueError(f"{where}: a comparison may only be select()'s first argument")
        if len(node.ops) != 1 or not isinstance(node.ops[0], (ast.Gt, ast.GtE, ast.Lt, ast.LtE, ast.Eq, ast.NotEq)):
            raise ValueError(f"{where}: only single comparisons (a > b, ...) are allowed")
        _check_expr(node.left, defined, where)
        _check_expr(node.comparators[0], defined, where)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            raise ValueError(f"{where}: only the calls {FUNCTIONS} are allowed")
        want = 3 if node.func.id == "select" else 1
        if len(node.args) != want:
            raise ValueError(f"{where}: {node.func.id} takes {want} argument(s)")
        for k, a in enumerate(node.args):
            _check_expr(a, defined, where, cond_ok=node.func.id == "select" and k == 0)
    else:
        raise ValueError(f"{where}: {type(node).__name__} is not in the kernel vocabulary")


def _parse(stmt: str) -> tuple[str, ast.expr]:
    tree = ast.parse(stmt)
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assign) or len(tree.body[0].targets) != 1 \
            or not isinstance(tree.body[0].targets[0], ast.Name):
        raise ValueError(f"kernel statement {stmt!r} must be one assignment 'name = expression'")
    return tree.body[0].targets[0].id, tree.body[0].value


def check_kernel(k: Kernel) -> None:
    """Raise ValueError unless every statement is in the shared Python/C vocabulary, every name is
    assigned once before use, and loads/stores name declared arrays."""
    arrays = dict(k.arrays)
    defined = set(k.scalars)
    for var, arr, _ in k.loads:
        if arr is not None and arr not in arrays:
            raise ValueError(f"{k.name}: load {var} reads undeclared array {arr!r}")
        defined.add(var)
    for name in list(defined) + list(arrays):
        if name in _RESERVED or name.endswith("_") or name in FUNCTIONS:
            raise ValueError(f"{k.name}: name {name!r} is reserved (C keyword, helper, or trailing '_')")
    clash = defined & set(arrays)
    if clash:
        raise ValueError(f"{k.name}: {sorted(clash)} name both an array and a value")
    for stmt in k.body:
        target, expr = _parse(stmt)
        where = f"{k.name}: {stmt!r}"
        _check_expr(expr, defined, where)
        if target in defined or target in arrays or target in _RESERVED or target.endswith("_") or target in FUNCTIONS:
            raise ValueError(f"{where}: {target!r} is already defined or reserved (assign each name once)")
        defined.add(target)
    for arr, block, var in k.stores:
        if arr not in arrays or var not in defined:
            raise ValueError(f"{k.name}: store {arr}[{block}] = {var} names an undeclared array or value")


# ------------------------------------------------------------------------------------------
# the descriptions: recurrent cells (layout and stored values exactly as rnn_kernels.py)


def _gates(prefix: str, array: str, names: str) -> tuple[tuple[str, str, int], ...]:
    return tuple((prefix + n, array, k) for k, n in enumerate(names.split()))


LSTM_FORWARD = Kernel(
    "lstm_step_forward", "cell",
    arrays=(("xw", "g4"), ("hw", "g4"), ("h_prev", "g1"), ("c_prev", "g1"), ("mask", "row"),
            ("gates", "g4"), ("h_out", "g1"), ("c_out", "g1")),
    loads=_gates("x", "xw", "i f g o") + _gates("h", "hw", "i f g o")
    + (("hp", "h_prev", 0), ("cp", "c_prev", 0), ("m", "mask", 0)),
    body=("i = sigmoid(xi + hi)",
          "f = sigmoid(xf + hf)",
          "g = tanh(xg + hg)",
          "o = sigmoid(xo + ho)",
          "c = select(m, f * cp + i * g, cp)",
          "h = select(m, o * tanh(c), hp)"),
    stores=(("gates", 0, "i"), ("gates", 1, "f"), ("gates", 2, "g"), ("gates", 3, "o"),
            ("c_out", 0, "c"), ("h_out", 0, "h")),
)

LSTM_BACKWARD = Kernel(
    "lstm_step_backward", "cell",
    arrays=(("gates", "g4"), ("c_prev", "g1"), ("c_t", "g1"), ("mask", "row"), ("dout", "g1"),
            ("dh_carry", "g1"), ("dc_carry", "g1"), ("dgates", "g4"), ("dh_pass", "g1"), ("dc_prev", "g1")),
    loads=(("i", "gates", 0), ("f", "gates", 1), ("g", "gates", 2), ("o", "gates", 3), ("cp", "c_prev", 0),
           ("ct", "c_t", 0), ("m", "mask", 0), ("dy", "dout", 0), ("dhc", "dh_carry", 0), ("dcc", "dc_carry", 0)),
    body=("tc = tanh(ct)",
          "dh = dy + dhc",
          "dc = dcc + dh * o * (1 - tc * tc)",
          "di = select(m, dc * g * i * (1 - i), 0)",
          "df = select(m, dc * cp * f * (1 - f), 0)",
          "dg = select(m, dc * i * (1 - g * g), 0)",
          "dgo = select(m, dh * tc * o * (1 - o), 0)",
          "dhp = select(m, 0, dhc)",
          "dcp = select(m, dc * f, dcc)"),
    stores=(("dgates", 0, "di"), ("dgates", 1, "df"), ("dgates", 2, "dg"), ("dgates", 3, "dgo"),
            ("dh_pass", 0, "dhp"), ("dc_prev", 0, "dcp")),
)

GRU_FORWARD = Kernel(
    "gru_step_forward", "cell",
    arrays=(("xw", "g3"), ("hw", "g3"), ("b_hn", "col"), ("h_prev", "g1"), ("mask", "row"),
            ("store", "g4"), ("h_out", "g1")),
    loads=_gates("x", "xw", "r z n") + _gates("w", "hw", "r z n")
    + (("bhn", "b_hn", 0), ("hp", "h_prev", 0), ("m", "mask", 0)),
    body=("r = sigmoid(xr + wr)",
          "z = sigmoid(xz + wz)",
          "hn = wn + bhn",
          "n = tanh(xn + r * hn)",
          "h = select(m, (1 - z) * n + z * hp, hp)"),
    stores=(("store", 0, "r"), ("store", 1, "z"), ("store", 2, "n"), ("store", 3, "hn"), ("h_out", 0, "h")),
)

GRU_BACKWARD = Kernel(
    "gru_step_backward", "cell",
    arrays=(("store", "g4"), ("h_prev", "g1"), ("mask", "row"), ("dout", "g1"), ("dh_carry", "g1"),
            ("dxw", "g3"), ("dhw", "g3"), ("dh_pass", "g1")),
    loads=(("r", "store", 0), ("z", "store", 1), ("n", "store", 2), ("hn", "store", 3), ("hp", "h_prev", 0),
           ("m", "mask", 0), ("dy", "dout", 0), ("dhc", "dh_carry", 0)),
    body=("dh = dy + dhc",
          "dn = dh * (1 - z) * (1 - n * n)",
          "dz = dh * (hp - n) * z * (1 - z)",
          "dr = dn * hn * r * (1 - r)",
          "dxr = select(m, dr, 0)",
          "dxz = select(m, dz, 0)",
          "dxn = select(m, dn, 0)",
          "dhn = select(m, dn * r, 0)",
          "dhp = select(m, dh * z, dhc)"),
    stores=(("dxw", 0, "dxr"), ("dxw", 1, "dxz"), ("dxw", 2, "dxn"), ("dhw", 0, "dxr"), ("dhw", 1, "dxz"),
            ("dhw", 2, "dhn"), ("dh_pass", 0, "dhp")),
)


def _rnn_forward(relu: bool) -> Kernel:
    act = "select(a <= 0, 0, a)" if relu else "tanh(a)"  # a NaN stays NaN, as PyTorch's relu
    return Kernel(
        f"rnn_{'relu' if relu else 'tanh'}_step_forward", "cell",
        arrays=(("xw", "g1"), ("hw", "g1"), ("h_prev", "g1"), ("mask", "row"), ("h_out", "g1")),
        loads=(("xa", "xw", 0), ("ha", "hw", 0), ("hp", "h_prev", 0), ("m", "mask", 0)),
        body=("a = xa + ha", f"h = select(m, {act}, hp)"),
        stores=(("h_out", 0, "h"),),
    )


def _rnn_backward(relu: bool) -> Kernel:
    da = "select(y <= 0, 0, dh)" if relu else "dh * (1 - y * y)"  # passes through a NaN, as the composite
    return Kernel(
        f"rnn_{'relu' if relu else 'tanh'}_step_backward", "cell",
        arrays=(("h_t", "g1"), ("mask", "row"), ("dout", "g1"), ("dh_carry", "g1"), ("dpre", "g1"), ("dh_pass", "g1")),
        loads=(("y", "h_t", 0), ("m", "mask", 0), ("dy", "dout", 0), ("dhc", "dh_carry", 0)),
        body=("dh = dy + dhc", f"da = select(m, {da}, 0)", "dhp = select(m, 0, dhc)"),
        stores=(("dpre", 0, "da"), ("dh_pass", 0, "dhp")),
    )


_CELLS = {
    ("lstm", "forward"): LSTM_FORWARD, ("lstm", "backward"): LSTM_BACKWARD,
    ("gru", "forward"): GRU_FORWARD, ("gru", "backward"): GRU_BACKWARD,
    ("rnn_tanh", "forward"): _rnn_forward(False), ("rnn_tanh", "backward"): _rnn_backward(False),
    ("rnn_relu", "forward"): _rnn_forward(True), ("rnn_relu", "backward"): _rnn_backward(True),
}


def cell_kernel(mode: str, direction: str) -> Kernel:
    """The step kernel of ``mode`` (lstm, gru, rnn_tanh, rnn_relu) for ``direction`` forward/backward."""
    return _CELLS[(mode, direction)]


# ------------------------------------------------------------------------------------------
# softmax cross-entropy (row reductions around these statements are hand-written below)

XENT_TERM = Kernel("softmax_xent_term", "custom", arrays=(), loads=(("x", None, 0), ("mx", None, 0)),
                   body=("e = exp(x - mx)",), compute="float64")
# the row max and the log-sum are kept apart (their sum, the log-sum-exp, rounds away log(C) for
# |logits| >= 1e14): the loss adds the log-sum last, backward rebuilds softmax as exp((x - mx) - ls)
XENT_ROW = Kernel("softmax_xent_row", "custom", arrays=(),
                  loads=(("mx", None, 0), ("s", None, 0), ("xt", None, 0), ("keep", None, 0)),
                  body=("ls = log(s)", "loss = select(keep, (mx - xt) + ls, 0)"), compute="float64")
XENT_BACKWARD = Kernel("softmax_xent_backward", "custom", arrays=(),
                       loads=(("x", None, 0), ("mx", None, 0), ("ls", None, 0), ("g", None, 0), ("keep", None, 0),
                              ("hit", None, 0)),
                       body=("d = select(keep, exp((x - mx) - ls) * g - select(hit, g, 0), 0)",), compute="float64")


# ------------------------------------------------------------------------------------------
# optimizer steps (the contract in optim_kernels.py); one variant per combination of flags


@functools.lru_cache(maxsize=None)
def sgd_kernel(momentum: bool, first_step: bool, nesterov: bool) -> Kernel:
    arrays = [("param", "flat"), ("grad", "flat")]
    loads = [("p", "param", 0), ("gr", "grad", 0)]
    body = ["d = gr + weight_decay * p"]
    stores = []
    if momentum:
        arrays.append(("buf", "flat"))
        if first_step:
            body.append("b = d")  # PyTorch: the first buffer is the gradient itself, undampened
        else:
            loads.append(("b0", "buf", 0))
            body.append("b = momentum * b0 + (1 - dampening) * d")
        body.append("step = d + momentum * b" if nesterov else "step = b")
        stores.append(("buf", 0, "b"))
    else:
        body.append("step = d")
    body.append("pn = p - lr * step")
    stores.insert(0, ("param", 0, "pn"))
    name = f"sgd_step_m{int(momentum)}{int(first_step and momentum)}{int(nesterov and momentum)}"
    return Kernel(name, "flat", tuple(arrays), tuple(loads), tuple(body), tuple(stores),
                  scalars=("lr", "momentum", "dampening", "weight_decay"), compute="float64")


@functools.lru_cache(maxsize=None)
def adam_kernel(amsgrad: bool) -> Kernel:
    arrays = [("param", "flat"), ("grad", "flat"), ("exp_avg", "flat"), ("exp_avg_sq", "flat")]
    loads = [("p", "param", 0), ("gr", "grad", 0), ("m0", "exp_avg", 0), ("v0", "exp_avg_sq", 0)]
    body = ["pd = p * (1 - decoupled_decay)",
            "g = gr + weight_decay * pd",
            "mn = beta1 * m0 + (1 - beta1) * g",
            "vn = beta2 * v0 + (1 - beta2) * (g * g)"]
    stores = [("exp_avg", 0, "mn"), ("exp_avg_sq", 0, "vn")]
    if amsgrad:
        arrays.append(("max_exp_avg_sq", "flat"))
        loads.append(("vmax0", "max_exp_avg_sq", 0))
        body.append("vh = select(vmax0 > vn, vmax0, vn)")
        stores.append(("max_exp_avg_sq", 0, "vh"))
    else:
        body.append("vh = vn")
    body += ["denom = sqrt(vh) / bias_correction2_sqrt + eps", "pn = pd - step_size * (mn / denom)"]
    stores.insert(0, ("param", 0, "pn"))
    return Kernel(f"adam_step{'_amsgrad' if amsgrad else ''}", "flat", tuple(arrays), tuple(loads), tuple(body),
                  tuple(stores), scalars=("beta1", "beta2", "eps", "weight_decay", "decoupled_decay", "step_size",
                                          "bias_correction2_sqrt"), compute="float64")


@functools.lru_cache(maxsize=None)
def rmsprop_kernel(centered: bool, momentum: bool) -> Kernel:
    arrays = [("param", "flat"), ("grad", "flat"), ("square_avg", "flat")]
    loads = [("p", "param", 0), ("gr", "grad", 0), ("sq0", "square_avg", 0)]
    body = ["g = gr + weight_decay * p", "sq = alpha * sq0 + (1 - alpha) * (g * g)"]
    stores = [("square_avg", 0, "sq")]
    if centered:
        arrays.append(("grad_avg", "flat"))
        loads.append(("ga0", "grad_avg", 0))
        # E[g^2] >= E[g]^2 exactly; clamp so rounding cannot take sqrt of a tiny negative number
        body += ["ga = alpha * ga0 + (1 - alpha) * g", "var = sq - ga * ga", "avg = sqrt(select(var > 0, var, 0)) + eps"]
        stores.append(("grad_avg", 0, "ga"))
    else:
        body.append("avg = sqrt(sq) + eps")
    if momentum:
        arrays.append(("buf", "flat"))
        loads.append(("b0", "buf", 0))
        body += ["b = momentum * b0 + g / avg", "pn = p - lr * b"]
        stores.append(("buf", 0, "b"))
    else:
        body.append("pn = p - lr * (g / avg)")
    stores.insert(0, ("param", 0, "pn"))
    return Kernel(f"rmsprop_step_c{int(centered)}m{int(momentum)}", "flat", tuple(arrays), tuple(loads), tuple(body),
                  tuple(stores), scalars=("lr", "alpha", "eps", "weight_decay", "momentum"), compute="float64")


@functools.lru_cache(maxsize=None)
def adagrad_kernel() -> Kernel:
    return Kernel("adagrad_step", "flat", (("param", "flat"), ("grad", "flat"), ("state_sum", "flat")),
                  (("p", "param", 0), ("gr", "grad", 0), ("s0", "state_sum", 0)),
                  ("g = gr + weight_decay * p", "s = s0 + g * g", "pn = p - clr * (g / (sqrt(s) + eps))"),
                  (("param", 0, "pn"), ("state_sum", 0, "s")), scalars=("clr", "eps", "weight_decay"),
                  compute="float64")


def _all_kernels() -> dict[str, Kernel]:
    ks = list(_CELLS.values()) + [XENT_TERM, XENT_ROW, XENT_BACKWARD, adagrad_kernel()]
    ks += [sgd_kernel(m, f, n) for m in (False, True) for f in (False, True) for n in (False, True)]
    ks += [adam_kernel(a) for a in (False, True)]
    ks += [rmsprop_kernel(c, m) for c in (False, True) for m in (False, True)]
    out: dict[str, Kernel] = {}
    for k in ks:
        check_kernel(k)
        out.setdefault(k.name, k)
    return out


# ------------------------------------------------------------------------------------------
# host evaluation with NumPy


def sigmoid(x: Any) -> Any:
    """The same split as the CUDA helper and rnn_kernels._sigmoid: exp of a non-positive number only."""
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _select(cond: Any, a: Any, b: Any) -> Any:
    return np.where(np.asarray(cond) != 0, a, b)


_NUMPY_FUNCS = {"sigmoid": sigmoid, "tanh": np.tanh, "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "select": _select}


def evaluate(k: Kernel, values: dict[str, Any], scalars: dict[str, float] | None = None) -> dict[str, Any]:
    """Run ``k``'s statements on NumPy arrays (``values`` by load name, already in the compute
    dtype and broadcastable); returns every value, loads included, by name."""
    ns: dict[str, Any] = {"__builtins__": {}}
    ns.update(_NUMPY_FUNCS)
    ns.update(scalars or {})
    ns.update(values)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for stmt in k.body:
            exec(stmt, ns)  # noqa: S102 - statements were validated by check_kernel
    return {n: v for n, v in ns.items() if n not in _NUMPY_FUNCS and n != "__builtins__"}


def _view(k: Kernel, arr: Any, array: str, block: int, rows: int, h: int) -> Any:
    lay = k.layout(array)
    if lay == "flat":
        return arr.reshape(-1)
    if lay == "row":
        return arr.reshape(rows, 1)
    if lay == "col":
        return arr.reshape(1, h)
    g = int(lay[1:])
    return arr.reshape(rows, g, h)[:, block, :]


def run_numpy(k: Kernel, arrays: dict[str, np.ndarray], scalars: dict[str, float] | None = None,
              rows: int = 0, h: int = 0) -> None:
    """Evaluate a ``cell``/``flat`` kernel on host arrays and write its stores into them, as the GPU
    kernel would (``rows``, ``h``: the cell space's shape)."""
    storage = next(arrays[a].dtype for a, _, _ in k.stores)
    cdt = np.float64 if k.compute == "float64" else storage
    values = {var: _view(k, arrays[arr], arr, block, rows, h).astype(cdt) for var, arr, block in k.loads}
    out = evaluate(k, values, {s: float(v) for s, v in (scalars or {}).items()})
    for arr, block, var in k.stores:
        view = _view(k, arrays[arr], arr, block, rows, h)
        view[...] = np.broadcast_to(np.asarray(out[var]).astype(view.dtype), view.shape)


# ------------------------------------------------------------------------------------------
# CUDA source generation

_HELPERS = r"""
__device__ __forceinline__ float tgr_exp(float x) { return expf(x); }
__device__ __forceinline__ double tgr_exp(double x) { return ::exp(x); }
__device__ __forceinline__ float tgr_log(float x) { return logf(x); }
__device__ __forceinline__ double tgr_log(double x) { return ::log(x); }
__device__ __forceinline__ float tgr_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double tgr_tanh(double x) { return ::tanh(x); }
__device__ __forceinline__ float tgr_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double tgr_sqrt(double x) { return ::sqrt(x); }
#define exp(x) tgr_exp(x)
#define log(x) tgr_log(x)
#define tanh(x) tgr_tanh(x)
#define sqrt(x) tgr_sqrt(x)
// exp of a non-positive number only, as rnn_kernels._sigmoid: no overflow for large |x|
__device__ __forceinline__ R sigmoid(R x) {
    if (x >= 0) return 1 / (1 + exp(-x));
    const R e = exp(x);
    return e / (1 + e);
}
__device__ __forceinline__ R select(bool c, R a, R b) { return c ? a : b; }
"""

_CTYPES = {"float32": "float", "float64": "double"}


def _ctype(dtype: Any) -> str:
    name = np.dtype(dtype).name
    if name not in _CTYPES:
        raise TypeError(f"GPU kernels support float32 and float64, got {name}")
    return _CTYPES[name]


def _prelude(k: Kernel, dtype: Any) -> str:
    t = _ctype(dtype)
    r = "double" if k.compute == "float64" else t
    return f"typedef {t} T;\ntypedef {r} R;\n{_HELPERS}"


def _body_c(k: Kernel, indent: str) -> str:
    return "".join(f"{indent}const R {stmt};\n" for stmt in k.body)


def _index(k: Kernel, array: str, block: int) -> str:
    lay = k.layout(array)
    if lay == "flat":
        return "e_"
    if lay == "row":
        return "row_"
    if lay == "col":
        return "col_"
    g = int(lay[1:])
    return "e_" if g == 1 else f"(row_ * {g} + {block}) * H_ + col_"


def _params(k: Kernel) -> list[str]:
    written = {a for a, _, _ in k.stores}
    return [f"{'' if a in written else 'const '}T* {a}" for a, _ in k.arrays] + [f"const double {s}" for s in k.scalars]


def cuda_source(k: Kernel, dtype: Any) -> str:
    """The CUDA C++ source of kernel ``k`` for ``dtype`` (float32/float64); the entry point is ``k.name``."""
    if k.space == "custom":
        return _custom_source(k, dtype)
    loads = "".join(f"        const R {v} = (R){a}[{_index(k, a, b)}];\n" for v, a, b in k.loads)
    stores = "".join(f"        {a}[{_index(k, a, b)}] = (T){v};\n" for a, b, v in k.stores)
    if k.space == "cell":
        params = ", ".join(_params(k) + ["const int rows_", "const int H_"])
        uses_col = "col_" in loads + stores
        loop = ("    const int n_ = rows_ * H_;\n"
                "    for (int e_ = blockIdx.x * blockDim.x + threadIdx.x; e_ < n_; e_ += blockDim.x * gridDim.x) {\n"
                "        const int row_ = e_ / H_;\n"
                + ("        const int col_ = e_ - row_ * H_;\n" if uses_col else ""))
    elif k.space == "flat":
        params = ", ".join(_params(k) + ["const long long n_"])
        loop = ("    for (long long e_ = (long long)blockIdx.x * blockDim.x + threadIdx.x; e_ < n_;\n"
                "         e_ += (long long)blockDim.x * gridDim.x) {\n")
    else:
        raise ValueError(f"unknown kernel space {k.space!r}")
    return (f"{_prelude(k, dtype)}\nextern \"C\" __global__ void {k.name}({params}) {{\n{loop}{loads}"
            f"{_body_c(k, '        ')}{stores}    }}\n}}\n")


_BLOCK_REDUCE = r"""
__device__ __forceinline__ double warp_max_(double v) {
    for (int o = 16; o > 0; o >>= 1) { const double w = __shfl_down_sync(0xffffffffu, v, o); v = (w > v) ? w : v; }
    return v;
}
__device__ __forceinline__ double warp_sum_(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}
// blockDim.x is a multiple of 32 (at most 1024); every thread gets the block's result
__device__ double block_max_(double v, double* sh) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max_(v);
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        v = (lane < nw) ? sh[lane] : sh[0];
        v = warp_max_(v);
        if (lane == 0) sh[32] = v;
    }
    __syncthreads();
    const double r = sh[32];
    __syncthreads();
    return r;
}
__device__ double block_sum_(double v, double* sh) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_(v);
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        v = (lane < nw) ? sh[lane] : 0.0;
        v = warp_sum_(v);
        if (lane == 0) sh[32] = v;
    }
    __syncthreads();
    const double r = sh[32];
    __syncthreads();
    return r;
}
"""


def _custom_source(k: Kernel, dtype: Any) -> str:
    pre = _prelude(k, dtype)
    if k.name in ("softmax_xent_term", "softmax_xent_row"):
        return pre + _BLOCK_REDUCE + (
            "\n// one block per row: max, then the sum of exp(x - max) in float64, then the row's loss\n"
            "extern \"C\" __global__ void softmax_xent_forward(const T* logits, const long long* targets,\n"
            "        const long long ignore_, T* loss_out, double* mx_out, double* ls_out, const int C_) {\n"
            "    __shared__ double red_[33];\n"
            "    const long long row_ = blockIdx.x;\n"
            "    const T* xr_ = logits + row_ * C_;\n"
            "    double mxl_ = (double)xr_[0];\n"
            "    for (int j_ = threadIdx.x; j_ < C_; j_ += blockDim.x) {\n"
            "        const double v_ = (double)xr_[j_];\n"
            "        if (v_ > mxl_) mxl_ = v_;\n"
            "    }\n"
            "    const R mx = block_max_(mxl_, red_);\n"
            "    double sl_ = 0.0;\n"
            "    for (int j_ = threadIdx.x; j_ < C_; j_ += blockDim.x) {\n"
            "        const R x = (R)xr_[j_];\n"
            + _body_c(XENT_TERM, "        ")
            + "        sl_ += e;\n"
            "    }\n"
            "    const R s = block_sum_(sl_, red_);\n"
            "    if (threadIdx.x == 0) {\n"
            "        const long long t_ = targets[row_];\n"
            "        const R keep = (t_ != ignore_) ? 1 : 0;\n"
            "        const R xt = (t_ != ignore_ && t_ >= 0 && t_ < C_) ? (R)xr_[t_] : 0;\n"
            + _body_c(XENT_ROW, "        ")
            + "        mx_out[row_] = (double)mx;\n"
            "        ls_out[row_] = (double)ls;\n"
            "        loss_out[row_] = (T)loss;\n"
            "    }\n"
            "}\n")
    if k.name == "softmax_xent_backward":
        return pre + (
            "\nextern \"C\" __global__ void softmax_xent_backward(const T* logits, const double* mx_in, const double* ls_in,\n"
            "        const long long* targets, const long long ignore_, const double* grad_rows, T* out,\n"
            "        const long long rows_, const int C_) {\n"
            "    const long long n_ = rows_ * C_;\n"
            "    for (long long e_ = (long long)blockIdx.x * blockDim.x + threadIdx.x; e_ < n_;\n"
            "         e_ += (long long)blockDim.x * gridDim.x) {\n"
            "        const long long row_ = e_ / C_;\n"
            "        const long long col_ = e_ - row_ * C_;\n"
            "        const long long t_ = targets[row_];\n"
            "        const R x = (R)logits[e_];\n"
            "        const R mx = (R)mx_in[row_];\n"
            "        const R ls = (R)ls_in[row_];\n"
            "        const R g = (R)grad_rows[row_];\n"
            "        const R keep = (t_ != ignore_) ? 1 : 0;\n"
            "        const R hit = (t_ == col_) ? 1 : 0;\n"
            + _body_c(XENT_BACKWARD, "        ")
            + "        out[e_] = (T)d;\n"
            "    }\n"
            "}\n")
    raise ValueError(f"no CUDA template for custom kernel {k.name!r}")


KERNELS: dict[str, Kernel] = _all_kernels()
