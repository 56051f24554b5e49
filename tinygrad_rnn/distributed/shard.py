"""A per-rank state (the carried hidden state of each rank's batch rows) gathered for a checkpoint and split back.

A data-parallel language model carries a hidden state whose batch rows belong to its rank. A checkpoint holds
all N*B rows, in rank order, so that it is the same file whatever wrote it; on resume each rank takes its share.

    >>> import tinygrad_rnn as tr
    >>> tr.distributed.shard_along(tr.ones(4, 2), dim=0).shape  # one process: the whole tensor
    (4, 2)
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..tensor import Tensor, tensor, zeros
from .core import all_gather, get_rank, get_world_size, is_initialized

__all__ = ["gather_along", "shard_along"]

State = Any  # a Tensor, a tuple of Tensors (an LSTM's (h, c)) or None


def _world() -> tuple[int, int]:
    return (get_rank(), get_world_size()) if is_initialized() else (0, 1)


def _each(state: State, fn: Callable[[Tensor], Tensor]) -> State:
    if state is None:
        return None
    return tuple(fn(t) for t in state) if isinstance(state, tuple) else fn(state)


def gather_along(state: State, dim: int) -> State:
    """Every rank's ``state`` concatenated along ``dim`` in rank order, on the CPU (a collective: all ranks call it).

    In a single process ``state`` itself comes back.
    """
    rank, world = _world()
    if world == 1:
        return state

    def gather(t: Tensor) -> Tensor:
        parts = [zeros(*t.shape, dtype=t.dtype) for _ in range(world)]
        all_gather(parts, t.detach().to("cpu"))
        return tensor(np.concatenate([p.numpy() for p in parts], axis=dim))

    return _each(state, gather)


def shard_along(state: State, dim: int, device: str = "cpu") -> State:
    """This rank's equal share along ``dim`` of a state that :func:`gather_along` made, as new tensors on ``device``.

    No communication: every rank reads its own rows of the same saved state.
    """
    rank, world = _world()

    def mine(t: Tensor) -> Tensor:
        a = t.numpy()
        n = a.shape[dim] // world
        return tensor(np.ascontiguousarray(np.take(a, range(rank * n, (rank + 1) * n), axis=dim)), device=device)

    return _each(state, mine)
