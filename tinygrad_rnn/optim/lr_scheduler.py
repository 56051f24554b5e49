"""Learning-rate schedules with PyTorch's semantics: call ``scheduler.step()`` once per epoch,
after that epoch's ``optimizer.step()`` calls; ``get_last_lr()`` is what the next epoch uses.

Zaremba et al. (2014)'s PTB schedule (lr 1 for 4 epochs, then halved every epoch):

    >>> import tinygrad_rnn as tr
    >>> from tinygrad_rnn import optim
    >>> opt = optim.SGD([tr.zeros(1, requires_grad=True)], lr=1.0)
    >>> sched = optim.lr_scheduler.LambdaLR(opt, optim.lr_scheduler.decay_after(4, 0.5))
    >>> lrs = []
    >>> for epoch in range(7):
    ...     lrs.append(sched.get_last_lr()[0]); sched.step()
    >>> lrs
    [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125]
"""
from __future__ import annotations

import copy
import functools
import math
from bisect import bisect_right
from collections import Counter
from typing import Any, Callable, Iterable

import numpy as np

from .. import _checks
from .optimizers import Optimizer

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR", "LambdaLR", "ReduceLROnPlateau", "decay_after"]


def _check_epoch(v: Any, key: str, n: int, where: str) -> int:
    return _checks.int_at_least(f"{where}: {key!r}", v, -1)


def _check_lrs(v: Any, key: str, n: int, where: str) -> list[float]:
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise ValueError(f"{where}: {key!r} must be a list of {n} learning rates (one per parameter group), got {v!r}")
    for x in v:
        try:
            _checks.nonneg_number("a learning rate", x)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {key!r} holds {x!r}: {e}") from None
    return list(v)


def _check_gamma(v: Any, key: str, n: int, where: str) -> float:
    _checks.finite_number(f"{where}: {key!r}", v)
    return v


def _check_step_size(v: Any, key: str, n: int, where: str) -> int:
    return _checks.positive_int(f"{where}: {key!r}", v)


def _check_milestones(v: Any, key: str, n: int, where: str) -> Counter:
    if not isinstance(v, dict) or not all(isinstance(m, (int, np.integer)) and not isinstance(m, bool)
                                          and isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 1
                                          for m, c in v.items()):
        raise ValueError(f"{where}: {key!r} must map epochs (ints) to counts (ints >= 1), got {v!r}")
    return Counter({int(m): int(c) for m, c in v.items()})


_STATE_CHECKS: dict[str, Callable[[Any, str, int, str], Any]] = {
    "last_epoch": _check_epoch, "base_lrs": _check_lrs, "_last_lr": _check_lrs, "gamma": _check_gamma,
    "step_size": _check_step_size, "milestones": _check_milestones,
}


class LRScheduler:
    """Base class. Subclasses define ``get_lr()``: the lrs for epoch ``self.last_epoch``.

    Construction records each group's ``initial_lr`` and performs step 0 (lr = base lr), as PyTorch.
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        if last_epoch == -1:
            for g in optimizer.param_groups:
                g.setdefault("initial_lr", g["lr"])
        else:
            for i, g in enumerate(optimizer.param_groups):
                if "initial_lr" not in g:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when resuming an optimizer")
        self.base_lrs: list[float] = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and write the new lr into every parameter group."""
        self.last_epoch += 1
        for g, lr in zip(self.optimizer.param_groups, self.get_lr()):
            g["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The lr of each group as last set by this scheduler."""
        return list(self._last_lr)

    _not_state: tuple[str, ...] = ("optimizer",)

    def state_dict(self) -> dict[str, Any]:
        """Everything but the optimizer (and, for LambdaLR, the functions), as plain numbers and lists.

        >>> # tr.save({"sched": sched.state_dict()}, "ckpt.npz")
        """
        out = {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k not in self._not_state}
        if "milestones" in out:
            out["milestones"] = dict(out["milestones"])  # a Counter; plain dict so it saves as data
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output after checking every key (ValueError naming the key).

        The optimizer's lrs are not touched: they come back with ``optimizer.load_state_dict``, as in PyTorch.
        """
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict):
            raise TypeError(f"{where}: expected the dict from state_dict(), got {type(state_dict).__name__}")
        own = set(self.state_dict())
        missing, unexpected = sorted(own - set(state_dict)), sorted(map(str, set(state_dict) - own))
        if missing or unexpected:
            raise ValueError(f"{where}: missing keys {missing}, unexpected keys {unexpected} "
                             f"(a state dict of another scheduler than {type(self).__name__}?)")
        new = {}
        for k, v in state_dict.items():
            check = _STATE_CHECKS.get(k)
            try:
                new[k] = check(v, k, len(self.optimizer.param_groups), where) if check else copy.deepcopy(v)
            except TypeError as e:  # a bad state dict is a bad value, whatever the entry's type
                raise ValueError(str(e)) from None
        self.__dict__.update(new)

    def _group_lrs(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        self.step_size, self.gamma = _checks.positive_int("step_size", step_size), gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        # chainable, as PyTorch: scales the current lr, so it composes with other schedulers
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._group_lrs()
        return [lr * self.gamma for lr in self._group_lrs()]


class MultiStepLR(LRScheduler):
    """Multiply the lr by ``gamma`` at each epoch in ``milestones``."""

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1, last_epoch: int = -1):
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch not in self.milestones:
            return self._group_lrs()
        return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in self._group_lrs()]

    def closed_form(self, epoch: int) -> list[float]:
        """The lrs at ``epoch`` computed directly from the base lrs."""
        k = bisect_right(sorted(self.milestones.elements()), epoch)
        return [b * self.gamma ** k for b in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the lr by ``gamma`` every epoch."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return self._group_lrs()
        return [lr * self.gamma for lr in self._group_lrs()]


class LambdaLR(LRScheduler):
    """lr = base_lr * ``lr_lambda(epoch)``; one function, or one per parameter group."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float] | list[Callable[[int], float]],
                 last_epoch: int = -1):
        n = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"expected {n} lr_lambdas (one per parameter group), got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * n
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base * f(self.last_epoch) for base, f in zip(self.base_lrs, self.lr_lambdas)]

    _not_state = ("optimizer", "lr_lambdas")  # functions are not state; they are given again to the new scheduler


def _decay_after(num_epochs: int, factor: float, epoch: int) -> float:
    return factor ** max(0, epoch - num_epochs + 1)


def decay_after(num_epochs: int, factor: float) -> Callable[[int], float]:
    """A LambdaLR multiplier: 1 for the first ``num_epochs`` epochs, then ``factor`` more each epoch.

    Zaremba et al. 2014: small ``decay_after(4, 0.5)``, medium ``decay_after(6, 1/1.2)``,
    large ``decay_after(14, 1/1.15)``. Picklable (a ``functools.partial``).

    >>> [decay_after(2, 0.5)(e) for e in range(4)]
    [1.0, 1.0, 0.5, 0.25]
    """
    _checks.nonneg_int("num_epochs", num_epochs)
    return functools.partial(_decay_after, num_epochs, float(factor))


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lr by ``factor`` once a metric has stopped improving for ``patience`` epochs.

    ``step(metrics)`` once per epoch with the validation metric (as PyTorch). Improvement means
    ``a < best * (1 - threshold)`` (mode 'min', threshold_mode 'rel'), ``a < best - threshold`` ('abs'),
    and the mirror images for mode 'max'; after a reduction ``cooldown`` epochs pass before bad epochs
    count again; lrs never fall below ``min_lr`` and changes smaller than ``eps`` are skipped.

    >>> import tinygrad_rnn as tr
    >>> from tinygrad_rnn import optim
    >>> opt = optim.SGD([tr.zeros(1, requires_grad=True)], lr=1.0)
    >>> sched = optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1)
    >>> for loss in [3.0, 2.0, 2.0, 2.0, 2.0]:
    ...     sched.step(loss)
    >>> sched.get_last_lr()
    [0.1]
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: list[float] | float = 0, eps: float = 1e-8):
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.factor, self.optimizer = factor, optimizer
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise ValueError(f"expected {len(optimizer.param_groups)} min_lrs, got {len(min_lr)}")
            self.default_min_lr: float | None = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience, self.cooldown, self.eps = patience, cooldown, eps
        self.last_epoch = 0
        self._last_lr = self._group_lrs()
        self._init_is_better(mode, threshold, threshold_mode)
        self._reset()

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics: Any, epoch: int | None = None) -> None:  # type: ignore[override]
        """Record this epoch's metric and reduce the lrs if it has plateaued."""
        current = float(metrics)
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        if self._is_better(current, self.best):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._last_lr = self._group_lrs()

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(f"The number of param groups in the `optimizer` ({len(groups)}) differs from when "
                                   f"`ReduceLROnPlateau` was initialized ({len(self.min_lrs)}); set `min_lrs` to match")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for i, g in enumerate(groups):
            old = float(g["lr"])
            new = max(old * self.factor, self.min_lrs[i])
            if old - new > self.eps:
                g["lr"] = new

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            return a < best * (1.0 - self.threshold) if self.threshold_mode == "rel" else a < best - self.threshold
        return a > best * (self.threshold + 1.0) if self.threshold_mode == "rel" else a > best + self.threshold

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode} is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode} is unknown!")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode, self.threshold, self.threshold_mode = mode, threshold, threshold_mode

    def get_lr(self) -> list[float]:
        return self._group_lrs()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._init_is_better(self.mode, self.threshold, self.threshold_mode)
