"""Optimizers with PyTorch's update rules, semantics and state_dict layout.

An optimizer holds ``param_groups`` (dicts: ``"params"`` plus per-group options) and a
per-parameter ``state`` dict of arrays that live on the parameter's device. The arithmetic is
one fused kernel per algorithm, asked of the parameter's backend (``p._be.adam_step(...)``),
so this file is the same for CPU and GPU; the kernel contract is documented in
``tinygrad_rnn/backend/optim_kernels.py``.

    >>> import tinygrad_rnn as tr
    >>> from tinygrad_rnn import optim
    >>> w = tr.tensor([1.0, -1.0], requires_grad=True)
    >>> opt = optim.SGD([w], lr=0.1)
    >>> (w * w).sum().backward(); opt.step(); w.tolist()
    [0.800000011920929, -0.800000011920929]
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Iterable

import numpy as np

from .. import _checks
from ..backend import Backend, backend_of_array, host_array
from ..tensor import _FLOATS, Tensor, enable_grad

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


class Optimizer:
    """Base class: parameter groups, per-parameter state that follows its parameter's device,
    ``zero_grad``, ``step`` and ``state_dict``/``load_state_dict``.

    Subclasses set the defaults, validate a group in ``_check_group`` and update one parameter
    in ``_update(p, grad, state, group)``.
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        self.state: dict[Tensor, dict[str, Any]] = {}
        self._state_backend: dict[Tensor, Backend] = {}
        self.param_groups: list[dict[str, Any]] = []
        if isinstance(params, (Tensor, dict)):
            raise TypeError(
                f"params should be an iterable of Tensors or of dicts, got a single {type(params).__name__}; "
                "wrap it in a list")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    # -- groups ---------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (``{"params": [...], "lr": ...}``); options it omits take the defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a parameter group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if params is None:
            raise ValueError("a parameter group needs a 'params' entry")
        params = [params] if isinstance(params, Tensor) else list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__} at position {i}")
            if not p.is_leaf:
                raise ValueError(f"can't optimize a non-leaf Tensor (position {i}, shape {p.shape}): detach() it first")
            if p.dtype not in _FLOATS:
                raise TypeError(f"can only optimize float32/float64 tensors, got {p.dtype} at position {i}")
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            raise ValueError("a parameter appears more than once in one parameter group")
        taken = {id(p) for g in self.param_groups for p in g["params"]}
        if taken.intersection(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        group["params"] = params
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group: dict[str, Any]) -> None:
        _check_nonneg(group, "lr", "learning rate")
        if "weight_decay" in group:
            _check_nonneg(group, "weight_decay", "weight_decay value")
        for k in self._flags:
            if not isinstance(group[k], (bool, np.bool_)):
                raise ValueError(f"Invalid {k}: {group[k]!r} (must be True or False)")

    # -- the training-loop API ----------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (``p.grad = None``) or, with ``set_to_none=False``, zero them in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad._data[...] = 0

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()`` when one is given."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad._data
                if tuple(grad.shape) != p.shape:
                    raise ValueError(f"gradient of shape {tuple(grad.shape)} for a parameter of shape {p.shape}")
                self._update(p, grad, self._state_of(p), group)
                p._bump_version()  # saved copies of p in a live graph are now stale
        return loss

    def _update(self, p: Tensor, grad: Any, state: dict[str, Any], group: dict[str, Any]) -> None:  # pragma: no cover
        raise NotImplementedError

    # -- state, kept on the parameter's device -------------------------------------------------------
    def _state_of(self, p: Tensor) -> dict[str, Any]:
        """The state of ``p``, moved (and cast) first if ``p`` changed device or dtype since the last step."""
        state = self.state.setdefault(p, {})
        be = self._state_backend.get(p)
        if be is not p._be or any(_is_array(v) and v.dtype != p.dtype for v in state.values()):
            for k, v in state.items():
                if _is_array(v):
                    host = be.to_host(v) if be is not None else np.asarray(v)
                    state[k] = p._be.from_host(np.array(host, dtype=p.dtype, order="C", copy=True))
            self._state_backend[p] = p._be
        return state

    def _zeros(self, p: Tensor, fill: float = 0.0) -> Any:
        # C-contiguous whatever p's layout (zeros_like would copy a transposed param's strides)
        return p._be.xp.full(p.shape, fill, dtype=p.dtype)

    # what per-parameter state this algorithm keeps: name -> "count" (an int >= 0), "array" (finite, the
    # parameter's shape) or "nonneg" (an array that is also >= 0); the names in _state_together appear all or none
    _state_spec: dict[str, str] = {}
    _state_together: tuple[str, ...] = ()
    _flags: tuple[str, ...] = ()  # group options that must be bools

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {name: ndarray | number}}, "param_groups": [{options, "params": [index]}],
        "optimizer": class name}``, indices counting the parameters through all groups; arrays are host
        NumPy copies. ``tr.save`` writes it and ``tr.load`` gives it back exactly.

        >>> # tr.save({"optim": opt.state_dict()}, "ckpt.npz")
        """
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            for p in g["params"]:
                index.setdefault(id(p), len(index))
            packed = {k: copy.deepcopy(v) for k, v in g.items() if k != "params"}
            packed["params"] = [index[id(p)] for p in g["params"]]
            groups.append(packed)
        state = {}
        for p, s in self.state.items():
            if not s:
                continue
            be = self._state_backend.get(p, p._be)
            state[index[id(p)]] = {k: np.array(be.to_host(v), copy=True) if _is_array(v) else v for k, v in s.items()}
        return {"state": state, "param_groups": groups, "optimizer": type(self).__name__}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict()`` returned; arrays go to each parameter's device and dtype.

        Everything is checked before anything changes: the optimizer type, the group layout, every
        hyperparameter (with the constructor's checks) and every state array (shape, float dtype, finite),
        each failure a ValueError naming the key.
        """
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict):
            raise TypeError(f"{where}: expected the dict from state_dict(), got {type(state_dict).__name__}")
        for key in ("state", "param_groups"):
            if key not in state_dict:
                raise ValueError(f"{where}: the state dict has no {key!r} key")
        extra = set(state_dict) - {"state", "param_groups", "optimizer"}
        if extra:
            raise ValueError(f"{where}: unexpected keys {sorted(map(str, extra))} in the state dict")
        kind = state_dict.get("optimizer", type(self).__name__)
        if kind != type(self).__name__:
            raise ValueError(f"{where}: the state dict is from a {kind} optimizer, not a {type(self).__name__}")
        groups = state_dict["param_groups"]
        if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) for g in groups):
            raise ValueError(f"{where}: 'param_groups' must be a list of dicts")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(groups)} parameter groups, the optimizer has {len(self.param_groups)}")
        by_index: dict[int, Tensor] = {}
        new_groups = []
        for i, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            new_groups.append(self._checked_group(where, i, saved, mine, by_index))
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(f"{where}: parameter indices {sorted(by_index)} are not 0..{len(by_index) - 1}")
        saved_state = state_dict["state"]
        if not isinstance(saved_state, dict):
            raise ValueError(f"{where}: 'state' must be a dict, got {type(saved_state).__name__}")
        new_state: dict[Tensor, dict[str, Any]] = {}
        for i, s in saved_state.items():
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or int(i) not in by_index:
                raise ValueError(f"{where}: state key {i!r} names no parameter (indices are 0..{len(by_index) - 1})")
            new_state[by_index[int(i)]] = self._checked_state(where, int(i), s, by_index[int(i)])
        for mine, new in zip(self.param_groups, new_groups):
            params = mine["params"]
            mine.clear()
            mine.update(new)
            mine["params"] = params
        self.state = new_state
        self._state_backend = {p: p._be for p in new_state}

    def _checked_group(self, where: str, i: int, saved: dict[str, Any], mine: dict[str, Any],
                       by_index: dict[int, Tensor]) -> dict[str, Any]:
        ids = saved.get("params")
        if not isinstance(ids, (list, tuple)) or not all(isinstance(j, int) and not isinstance(j, bool) for j in ids):
            raise ValueError(f"{where}: param_groups[{i}]['params'] must be a list of parameter indices")
        if len(ids) != len(mine["params"]):
            raise ValueError(f"loaded state dict's parameter group {i} has {len(ids)} parameters, "
                             f"the optimizer's has {len(mine['params'])}")
        for j, p in zip(ids, mine["params"]):
            if j in by_index:
                raise ValueError(f"{where}: parameter index {j} appears twice in 'param_groups'")
            by_index[j] = p
        optional = {"initial_lr"}  # set by an LR scheduler, present or not
        own, theirs = set(mine) - {"params"}, set(saved) - {"params"}
        missing, unexpected = sorted(own - theirs - optional), sorted(map(str, theirs - own - optional))
        if missing or unexpected:
            raise ValueError(f"{where}: param_groups[{i}] " + ("lacks keys " + str(missing) if missing else "")
                             + (" and " if missing and unexpected else "")
                             + ("has unexpected keys " + str(unexpected) if unexpected else "")
                             + f" (a state dict of another optimizer than {type(self).__name__}?)")
        new = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
        new["params"] = mine["params"]
        try:
            self._check_group(new)
            if "initial_lr" in new:
                _check_nonneg(new, "initial_lr", "initial_lr")
        except (ValueError, TypeError) as e:
            raise ValueError(f"{where}: param_groups[{i}]: {e}") from None
        del new["params"]
        return new

    def _checked_state(self, where: str, i: int, s: Any, p: Tensor) -> dict[str, Any]:
        if not isinstance(s, dict):
            raise ValueError(f"{where}: state[{i}] must be a dict, got {type(s).__name__}")
        present = [k for k in self._state_together if k in s]
        if present and len(present) != len(self._state_together):
            lacking = [k for k in self._state_together if k not in s]
            raise ValueError(f"{where}: state[{i}] has {present} but lacks {lacking}")
        entry = {}
        for k, v in s.items():
            kind = self._state_spec.get(k)
            if kind is None:
                raise ValueError(f"{where}: state[{i}] has an unexpected key {k!r} for {type(self).__name__} "
                                 f"(expected some of {sorted(self._state_spec)})")
            if kind == "count":
                try:
                    entry[k] = _checks.nonneg_int(f"{where}: state[{i}][{k!r}]", v)
                except TypeError as e:  # a bad file is a bad value, whatever the entry's type
                    raise ValueError(str(e)) from None
                continue
            if backend_of_array(v) is not None:
                v = host_array(v)
            if not isinstance(v, np.ndarray):
                raise ValueError(f"{where}: state[{i}][{k!r}] must be an array, got {type(v).__name__}")
            host = v
            if host.dtype.kind != "f":
                raise ValueError(f"{where}: state[{i}][{k!r}] has dtype {host.dtype}, expected a float array")
            if host.shape != p.shape:
                raise ValueError(f"state {k!r} of parameter {i} has shape {host.shape}, the parameter {p.shape}")
            if not np.all(np.isfinite(host)):
                raise ValueError(f"{where}: state[{i}][{k!r}] holds non-finite values")
            if kind == "nonneg" and np.any(host < 0):
                raise ValueError(f"{where}: state[{i}][{k!r}] holds negative values (it is a sum of squares)")
            entry[k] = p._be.from_host(np.array(host, dtype=p.dtype, order="C", copy=True))
        return entry

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines) + "\n)"


def _is_array(v: Any) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, (np.generic, int, float))


def _check_hyper(what: str, name: str, v: Any, check: Callable[[str, Any], Any] = _checks.nonneg_number) -> None:
    """``check`` a hyperparameter; the error keeps PyTorch's ``Invalid <what>: <value>`` head before the house wording."""
    try:
        check(name, v)
    except (TypeError, ValueError) as e:
        raise type(e)(f"Invalid {what}: {v!r} ({e})") from None


def _check_nonneg(group: dict[str, Any], key: str, what: str) -> None:
    _check_hyper(what, repr(key), group[key])


def _check_betas(betas: Any) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas!r} (expected a pair (beta1, beta2))")
    for i, b in enumerate(betas):
        _check_hyper(f"beta parameter at index {i}", f"'betas'[{i}]", b, _checks.probability)


# ---------------------------------------------------------------------------------------
# the algorithms


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum, as ``torch.optim.SGD``.

    >>> # opt = SGD(model.parameters(), lr=1.0)            # Zaremba et al.'s PTB LSTM
    """

    def __init__(self, params: ParamsT, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    _state_spec = {"momentum_buffer": "array"}
    _flags = ("nesterov",)

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        _check_nonneg(group, "momentum", "momentum value")
        _check_hyper("dampening value", "'dampening'", group["dampening"], _checks.finite_number)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"Nesterov momentum requires a momentum > 0 and zero dampening, "
                             f"got momentum={group['momentum']!r}, dampening={group['dampening']!r}")

    def _update(self, p, grad, state, group):
        momentum = group["momentum"]
        buf = state.get("momentum_buffer")
        first = buf is None
        if momentum != 0 and first:
            buf = state["momentum_buffer"] = self._zeros(p)
        p._be.sgd_step(p._data, grad, buf if momentum != 0 else None, lr=group["lr"], momentum=momentum,
                       dampening=group["dampening"], weight_decay=group["weight_decay"],
                       nesterov=group["nesterov"], first_step=first)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with PyTorch's bias correction and eps placement; ``amsgrad`` optional.

    ``weight_decay`` adds ``weight_decay * p`` to the gradient (L2); for decoupled decay use AdamW.
    """

    _decoupled = False

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad))

    _state_spec = {"step": "count", "exp_avg": "array", "exp_avg_sq": "nonneg", "max_exp_avg_sq": "nonneg"}
    _state_together = ("step", "exp_avg", "exp_avg_sq")
    _flags = ("amsgrad",)

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        _check_nonneg(group, "eps", "epsilon value")
        _check_betas(group["betas"])

    def _update(self, p, grad, state, group):
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = self._zeros(p)
            state["exp_avg_sq"] = self._zeros(p)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = self._zeros(p)
        state["step"] += 1
        t = state["step"]
        beta1, beta2 = group["betas"]
        lr, wd = float(group["lr"]), float(group["weight_decay"])
        # bias corrections as float64 host scalars: 1 - 0.999**t loses everything in float32 for small t
        step_size = lr / (1.0 - float(beta1) ** t)
        bc2_sqrt = math.sqrt(1.0 - float(beta2) ** t)
        p._be.adam_step(p._data, grad, state["exp_avg"], state["exp_avg_sq"],
                        state["max_exp_avg_sq"] if group["amsgrad"] else None,
                        beta1=beta1, beta2=beta2, eps=group["eps"],
                        weight_decay=0.0 if self._decoupled else wd,
                        decoupled_decay=lr * wd if self._decoupled else 0.0,
                        step_size=step_size, bias_correction2_sqrt=bc2_sqrt, amsgrad=group["amsgrad"])


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): ``p *= 1 - lr*weight_decay`` each step."""

    _decoupled = True

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


class RMSprop(Optimizer):
    """RMSprop (Tieleman & Hinton; ``centered`` as in Graves 2013), as ``torch.optim.RMSprop``."""

    def __init__(self, params: ParamsT, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    _state_spec = {"step": "count", "square_avg": "nonneg", "momentum_buffer": "array", "grad_avg": "array"}
    _state_together = ("step", "square_avg")
    _flags = ("centered",)

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        _check_nonneg(group, "eps", "epsilon value")
        _check_nonneg(group, "momentum", "momentum value")
        _check_nonneg(group, "alpha", "alpha value")

    def _update(self, p, grad, state, group):
        if "step" not in state:
            state["step"] = 0
            state["square_avg"] = self._zeros(p)
        if group["momentum"] > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = self._zeros(p)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = self._zeros(p)
        state["step"] += 1
        p._be.rmsprop_step(p._data, grad, state["square_avg"],
                           state["grad_avg"] if group["centered"] else None,
                           state["momentum_buffer"] if group["momentum"] > 0 else None,
                           lr=group["lr"], alpha=group["alpha"], eps=group["eps"], weight_decay=group["weight_decay"],
                           momentum=group["momentum"], centered=group["centered"])


class Adagrad(Optimizer):
    """Adagrad (Duchi et al. 2011), as ``torch.optim.Adagrad``: lr decays as lr / (1 + (t-1)*lr_decay)."""

    def __init__(self, params: ParamsT, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps))

    _state_spec = {"step": "count", "sum": "nonneg"}
    _state_together = ("step", "sum")

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        _check_nonneg(group, "lr_decay", "lr_decay value")
        _check_nonneg(group, "initial_accumulator_value", "initial_accumulator_value")
        _check_nonneg(group, "eps", "epsilon value")

    def _update(self, p, grad, state, group):
        if "step" not in state:
            state["step"] = 0
            state["sum"] = self._zeros(p, float(group["initial_accumulator_value"]))
        state["step"] += 1
        clr = float(group["lr"]) / (1.0 + (state["step"] - 1) * float(group["lr_decay"]))
        p._be.adagrad_step(p._data, grad, state["sum"], clr=clr, eps=group["eps"], weight_decay=group["weight_decay"])
