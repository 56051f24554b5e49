"""Optimizers and learning-rate schedules, with PyTorch's names, arguments and update rules.

    >>> import tinygrad_rnn as tr
    >>> from tinygrad_rnn import optim
    >>> w = tr.tensor([3.0], requires_grad=True)
    >>> opt = optim.Adam([w], lr=0.1)
    >>> for _ in range(3):
    ...     opt.zero_grad(); (w * w).sum().backward(); _ = opt.step()
    >>> round(w.item(), 4)
    2.7004
"""
from . import lr_scheduler
from .lbfgs import LBFGS
from .optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "LBFGS", "lr_scheduler"]
