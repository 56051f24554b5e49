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

import functools
from bisect import bisect_right
from collections import Counter
from typing import Any, Callable, Iterable

from .optimizers import Optimizer

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR", "LambdaLR", "decay_after"]


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

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)

    def _group_lrs(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size must be a positive integer, got {step_size!r}")
        self.step_size, self.gamma = step_size, gamma
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

    def state_dict(self) -> dict[str, Any]:
        # functions are not state; they are given again to the new scheduler
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}


def _decay_after(num_epochs: int, factor: float, epoch: int) -> float:
    return factor ** max(0, epoch - num_epochs + 1)


def decay_after(num_epochs: int, factor: float) -> Callable[[int], float]:
    """A LambdaLR multiplier: 1 for the first ``num_epochs`` epochs, then ``factor`` more each epoch.

    Zaremba et al. 2014: small ``decay_after(4, 0.5)``, medium ``decay_after(6, 1/1.2)``,
    large ``decay_after(14, 1/1.15)``. Picklable (a ``functools.partial``).

    >>> [decay_after(2, 0.5)(e) for e in range(4)]
    [1.0, 1.0, 0.5, 0.25]
    """
    if not isinstance(num_epochs, int) or num_epochs < 0:
        raise ValueError(f"num_epochs must be a non-negative integer, got {num_epochs!r}")
    return functools.partial(_decay_after, num_epochs, float(factor))
