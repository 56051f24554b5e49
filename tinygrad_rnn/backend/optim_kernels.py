"""Numba kernels for the optimizer steps (one per algorithm), and the backend contract they serve.

Each kernel updates a parameter and its state **in place**, one element at a time, on flat
(1-D, C-contiguous) arrays of one float dtype. Scalars arrive as Python floats, so the
arithmetic inside runs in float64 whatever the storage dtype (float32 parameters are rounded
once, when stored). Plain top-level functions with ``cache=True``: compiled once per dtype and
reused across processes.

The optimizers (``tinygrad_rnn/optim``) never import this file: they call these methods on the
parameter's backend (``p._be``), which a GPU backend must provide with the same signatures.
Every array argument has the parameter's shape and dtype and lives on that backend; a state
array the options do not use is passed as ``None``; all keyword arguments are Python
``float``/``bool``; everything is updated in place and nothing is returned::

    be.sgd_step(param, grad, momentum_buf, *, lr, momentum, dampening, weight_decay, nesterov, first_step)
        d = grad + weight_decay*param
        if momentum != 0:                       (momentum_buf is None when momentum == 0)
            buf = d if first_step else momentum*buf + (1-dampening)*d
            d = d + momentum*buf if nesterov else buf
        param -= lr*d

    be.adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, beta1, beta2, eps, weight_decay,
                 decoupled_decay, step_size, bias_correction2_sqrt, amsgrad)
        param *= 1 - decoupled_decay            (AdamW: decoupled_decay = lr*weight_decay, else 0)
        g = grad + weight_decay*param           (Adam's coupled L2 term; 0 for AdamW)
        m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g*g
        vhat = max(vmax, v) stored in vmax if amsgrad else v      (max_exp_avg_sq None unless amsgrad)
        param -= step_size * m / (sqrt(vhat)/bias_correction2_sqrt + eps)
        where step_size = lr/(1-beta1**t) and bias_correction2_sqrt = sqrt(1-beta2**t), in float64 on the host

    be.rmsprop_step(param, grad, square_avg, grad_avg, momentum_buf, *, lr, alpha, eps, weight_decay,
                    momentum, centered)
        g = grad + weight_decay*param;  sq = alpha*sq + (1-alpha)*g*g
        if centered: ga = alpha*ga + (1-alpha)*g; avg = sqrt(max(sq - ga*ga, 0)) + eps   (grad_avg None unless centered)
        else: avg = sqrt(sq) + eps
        if momentum > 0: buf = momentum*buf + g/avg; param -= lr*buf     (momentum_buf None unless momentum > 0)
        else: param -= lr*g/avg

    be.adagrad_step(param, grad, state_sum, *, clr, eps, weight_decay)
        g = grad + weight_decay*param;  sum += g*g;  param -= clr*g/(sqrt(sum) + eps)
        where clr = lr/(1 + (t-1)*lr_decay)

These are exactly the update rules of ``torch.optim`` (SGD, Adam/AdamW, RMSprop, Adagrad).

The kernels compile with ``error_model="numpy"``: a division by zero gives inf/nan, as in
PyTorch, instead of a per-element ZeroDivisionError check, whose branch kept LLVM from
vectorising the loops (Adam on 1M float32 parameters: 13 ms -> 6.4 ms, plain NumPy 8-11 ms, on a loaded machine).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import numba
import numpy as np

__all__ = ["sgd_step", "adam_step", "rmsprop_step", "adagrad_step", "flat", "flat_state", "flat_param"]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def sgd_step(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first_step):  # pragma: no cover - jit
    """SGD with optional (Nesterov) momentum and L2 weight decay; ``buf`` unused when momentum == 0."""
    for i in range(param.size):
        d = grad[i] + weight_decay * param[i]
        if momentum != 0.0:
            if first_step:
                b = d  # PyTorch: the first buffer is the gradient itself, undampened
            else:
                b = momentum * buf[i] + (1.0 - dampening) * d
            buf[i] = b
            if nesterov:
                d = d + momentum * b
            else:
                d = b
        param[i] = param[i] - lr * d


@numba.njit(cache=True, nogil=True, error_model="numpy")
def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps, weight_decay,
              decoupled_decay, step_size, bias_correction2_sqrt, amsgrad):  # pragma: no cover - jit
    """Adam / AdamW / AMSGrad; bias corrections are precomputed float64 scalars."""
    for i in range(param.size):
        p = param[i] * (1.0 - decoupled_decay)
        g = grad[i] + weight_decay * p
        m = beta1 * exp_avg[i] + (1.0 - beta1) * g
        v = beta2 * exp_avg_sq[i] + (1.0 - beta2) * (g * g)
        exp_avg[i] = m
        exp_avg_sq[i] = v
        if amsgrad:
            if max_exp_avg_sq[i] > v:
                v = max_exp_avg_sq[i]
            max_exp_avg_sq[i] = v
        denom = math.sqrt(v) / bias_correction2_sqrt + eps
        param[i] = p - step_size * (m / denom)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def rmsprop_step(param, grad, square_avg, grad_avg, buf, lr, alpha, eps, weight_decay, momentum,
                 centered):  # pragma: no cover - jit
    """RMSprop (optionally centered, optionally with momentum); unused state arrays may be empty."""
    for i in range(param.size):
        g = grad[i] + weight_decay * param[i]
        sq = alpha * square_avg[i] + (1.0 - alpha) * (g * g)
        square_avg[i] = sq
        if centered:
            ga = alpha * grad_avg[i] + (1.0 - alpha) * g
            grad_avg[i] = ga
            # E[g^2] >= E[g]^2 holds exactly; clamp so rounding cannot produce sqrt(-0.0...1) = nan
            var = sq - ga * ga
            avg = math.sqrt(var if var > 0.0 else 0.0) + eps
        else:
            avg = math.sqrt(sq) + eps
        if momentum > 0.0:
            b = momentum * buf[i] + g / avg
            buf[i] = b
            param[i] = param[i] - lr * b
        else:
            param[i] = param[i] - lr * (g / avg)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def adagrad_step(param, grad, state_sum, clr, eps, weight_decay):  # pragma: no cover - jit
    """Adagrad with the already-decayed learning rate ``clr``."""
    for i in range(param.size):
        g = grad[i] + weight_decay * param[i]
        s = state_sum[i] + g * g
        state_sum[i] = s
        param[i] = param[i] - clr * (g / (math.sqrt(s) + eps))


# ---------------------------------------------------------------------------------------
# host-side helpers used by CPUBackend's *_step methods (not jitted)


def flat(a: np.ndarray, dtype: Any = None) -> np.ndarray:
    """A 1-D C-contiguous view of a gradient (a copy only when it is strided or of another dtype)."""
    return np.ascontiguousarray(a, dtype=dtype).reshape(-1)


def flat_state(a: np.ndarray | None, dtype: Any) -> np.ndarray:
    """A state array as a 1-D view the kernel writes through; an empty placeholder when it is None."""
    if a is None:
        return np.empty(0, dtype=dtype)
    if not a.flags.c_contiguous or a.dtype != dtype:
        # a copy would swallow the kernel's writes: the optimizer allocates C-contiguous state
        raise ValueError(f"optimizer state must be C-contiguous {np.dtype(dtype)}, got {a.dtype} with strides {a.strides}")
    return a.reshape(-1)


@contextlib.contextmanager
def flat_param(param: np.ndarray) -> Iterator[np.ndarray]:
    """Yield a flat array the kernel may write; a strided ``param`` gets the result copied back."""
    if param.flags.c_contiguous:
        yield param.reshape(-1)
    else:
        work = np.ascontiguousarray(param).reshape(-1)
        yield work
        param[...] = work.reshape(param.shape)
