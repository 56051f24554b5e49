"""Weight initialisation, in place, with PyTorch's names, fan computation and gains, plus the
recurrent-matrix schemes of the RNN literature (orthogonal, IRNN identity, np-RNN).

Every function overwrites ``t`` and returns it. Random values are drawn on the host in float64
from ``seed=``/``generator=`` (or the global generator, see ``tr.manual_seed``), then cast to
``t``'s dtype and copied to its device, so a seed gives the same weights everywhere.

    >>> import numpy as np, tinygrad_rnn as tr
    >>> from tinygrad_rnn.nn import init
    >>> w = init.orthogonal_(tr.zeros(3, 3), seed=0).numpy()
    >>> bool(np.allclose(w @ w.T, np.eye(3), atol=1e-6))
    True
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from ..tensor import Generator, Tensor, _rng, no_grad

__all__ = [
    "calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_", "eye_", "xavier_uniform_",
    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "identity_", "np_rnn_",
]


def _write(t: Tensor, values: Any) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"expected a Tensor, got {type(t).__name__}")
    with no_grad():
        t.copy_(np.asarray(values, dtype=t.dtype).reshape(t.shape))
    return t


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """PyTorch's recommended gain: 1 for linear/sigmoid, 5/3 for tanh, sqrt(2) for relu, ...

    >>> calculate_gain("tanh")
    1.6666666666666667
    """
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
    if nonlinearity in linear or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity!r}")


def _fans(t: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) as PyTorch: dim 1 and dim 0, times the receptive field of dims 2+."""
    if t.ndim < 2:
        raise ValueError(f"fan in and fan out can not be computed for a tensor with fewer than 2 dimensions, got shape {t.shape}")
    receptive = math.prod(t.shape[2:])
    return t.shape[1] * receptive, t.shape[0] * receptive


def _fan(t: Tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode!r} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _fans(t)
    return fan_in if mode == "fan_in" else fan_out


def _empty(t: Tensor, name: str) -> bool:
    if t.numel() == 0:
        warnings.warn(f"{name}: initializing a zero-element tensor is a no-op", stacklevel=3)
        return True
    return False


# -- plain distributions ---------------------------------------------------------------------------


def uniform_(t: Tensor, a: float = 0.0, b: float = 1.0, *, seed: int | None = None,
             generator: Generator | None = None) -> Tensor:
    """Fill with U(a, b)."""
    return _write(t, _rng(seed, generator).uniform(a, b, size=t.shape))


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0, *, seed: int | None = None,
            generator: Generator | None = None) -> Tensor:
    """Fill with N(mean, std²)."""
    return _write(t, _rng(seed, generator).normal(mean, std, size=t.shape))


def constant_(t: Tensor, val: float) -> Tensor:
    """Fill with ``val`` (e.g. an LSTM forget-gate bias of 1, Jozefowicz et al. 2015)."""
    return _write(t, np.full(t.shape, val))


def zeros_(t: Tensor) -> Tensor:
    return constant_(t, 0.0)


def ones_(t: Tensor) -> Tensor:
    return constant_(t, 1.0)


def eye_(t: Tensor) -> Tensor:
    """The (possibly rectangular) 2-D identity, as ``torch.nn.init.eye_``."""
    if t.ndim != 2:
        raise ValueError(f"eye_ needs a 2-D tensor, got shape {t.shape}")
    return _write(t, np.eye(*t.shape))


# -- fan-scaled (Glorot & Bengio 2010; He et al. 2015) --------------------------------------------


def xavier_uniform_(t: Tensor, gain: float = 1.0, *, seed: int | None = None, generator: Generator | None = None) -> Tensor:
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(t)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out)) if fan_in + fan_out else 0.0
    return uniform_(t, -a, a, seed=seed, generator=generator)


def xavier_normal_(t: Tensor, gain: float = 1.0, *, seed: int | None = None, generator: Generator | None = None) -> Tensor:
    """N(0, std²) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(t)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out)) if fan_in + fan_out else 0.0
    return normal_(t, 0.0, std, seed=seed, generator=generator)


def kaiming_uniform_(t: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", *,
                     seed: int | None = None, generator: Generator | None = None) -> Tensor:
    """U(-b, b) with b = gain * sqrt(3 / fan). PyTorch's Linear default is ``a=math.sqrt(5)``,
    which gives b = 1/sqrt(fan_in)."""
    if _empty(t, "kaiming_uniform_"):
        return t
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(t, mode))
    return uniform_(t, -bound, bound, seed=seed, generator=generator)


def kaiming_normal_(t: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", *,
                    seed: int | None = None, generator: Generator | None = None) -> Tensor:
    """N(0, std²) with std = gain / sqrt(fan)."""
    if _empty(t, "kaiming_normal_"):
        return t
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(t, mode))
    return normal_(t, 0.0, std, seed=seed, generator=generator)


# -- recurrent matrices ---------------------------------------------------------------------------------


def orthogonal_(t: Tensor, gain: float = 1.0, *, seed: int | None = None, generator: Generator | None = None) -> Tensor:
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al. 2014), as PyTorch: the Q of the QR of a
    standard-normal matrix, column signs fixed by diag(R) so Q is Haar-distributed. Dims past the
    first are flattened; rows are orthonormal when there are fewer rows than columns, else columns."""
    if t.ndim < 2:
        raise ValueError(f"orthogonal_ needs a tensor with 2 or more dimensions, got shape {t.shape}")
    if t.numel() == 0:
        return t
    rows = t.shape[0]
    cols = t.numel() // rows
    a = _rng(seed, generator).standard_normal((rows, cols))
    if rows < cols:
        a = a.T
    q, r = np.linalg.qr(a)
    d = np.sign(np.diag(r))
    d[d == 0] = 1.0  # a zero pivot (probability 0) must not zero a column
    q = q * d
    if rows < cols:
        q = q.T
    return _write(t, gain * q)


def identity_(t: Tensor, scale: float = 1.0) -> Tensor:
    """``scale`` times the identity: the IRNN's recurrent matrix (Le, Jaitly & Hinton 2015).

    Square 2-D only; a stacked gate matrix (k*H, H) needs one call per H x H block."""
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ValueError(f"identity_ needs a square 2-D tensor, got shape {t.shape}")
    return _write(t, scale * np.eye(t.shape[0]))


def np_rnn_(t: Tensor, *, seed: int | None = None, generator: Generator | None = None) -> Tensor:
    """The np-RNN recurrent matrix (Talathi & Vartak 2015): W = A / lambda_max(A), A = R Rᵀ/N + I,
    R an N x N standard-normal matrix. W is symmetric positive definite with largest eigenvalue 1
    and the others in (0, 1)."""
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ValueError(f"np_rnn_ needs a square 2-D tensor, got shape {t.shape}")
    n = t.shape[0]
    if n == 0:
        return t
    r = _rng(seed, generator).standard_normal((n, n))
    a = r @ r.T / n + np.eye(n)
    a = (a + a.T) / 2  # exactly symmetric (float addition commutes), whatever BLAS rounded
    return _write(t, a / np.linalg.eigvalsh(a)[-1])
