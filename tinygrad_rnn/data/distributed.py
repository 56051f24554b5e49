"""Sharding the data over ranks: a ``DistributedSampler`` for classifiers, per-rank BPTT streams for LMs.

NumPy only. ``num_replicas``/``rank`` default to the process group's world size and rank when
``tinygrad_rnn.distributed`` is initialised (and to 1 / 0 otherwise, so a script runs unchanged
in one process).

Example: ``train = distributed_batchify(ids, batch_size=32)``  # this rank's 32 rows of the N*32 streams
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from tinygrad_rnn import _checks
from tinygrad_rnn.data.batching import _check_positive_int, batchify, bucket_batches

__all__ = ["DistributedSampler", "distributed_batchify"]


def _world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    if num_replicas is None or rank is None:
        from tinygrad_rnn import distributed as dist  # only when asked for: the data package needs no engine

        initialised = dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if initialised else 1
        if rank is None:
            rank = dist.get_rank() if initialised else 0
    num_replicas = _check_positive_int("num_replicas", num_replicas)
    _checks.integer("rank", rank)
    if not 0 <= rank < num_replicas:
        raise ValueError(f"invalid rank {rank}: it should be in the interval [0, {num_replicas - 1}]")
    return num_replicas, int(rank)


class DistributedSampler:
    """This rank's share of ``range(len(dataset))``, as ``torch.utils.data.DistributedSampler``.

    Every epoch the indices are shuffled with ``seed + epoch`` (the same permutation on every
    rank: call :meth:`set_epoch` each epoch), then dealt round-robin: rank r takes positions
    r, r + N, r + 2N, ... Shards are disjoint and together cover the data. So that every rank
    takes the same number of steps, ``drop_last=False`` pads the permutation by repeating its
    start (a few examples are seen twice per epoch) and ``drop_last=True`` drops its tail.
    :meth:`bucket_batches` turns the shard into padded, length-bucketed minibatches; every rank
    gets the same number of them.

        >>> s = DistributedSampler(10, num_replicas=2, rank=1, shuffle=False); list(s)
        [1, 3, 5, 7, 9]
    """

    def __init__(self, dataset: Sequence | int, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        n = dataset if isinstance(dataset, (int, np.integer)) and not isinstance(dataset, bool) else None
        if n is None:
            try:
                n = len(dataset)  # type: ignore[arg-type]
            except TypeError as e:
                raise TypeError(f"dataset must be a sized sequence or an int length, got {type(dataset).__name__}") from e
        if n < 0:
            raise ValueError(f"dataset length must be non-negative, got {n}")
        self.num_replicas, self.rank = _world(num_replicas, rank)
        _checks.integer("seed", seed)
        self.dataset_len = int(n)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        if self.drop_last:
            self.num_samples = self.dataset_len // self.num_replicas
        else:
            self.num_samples = -(-self.dataset_len // self.num_replicas)
        if self.num_samples == 0:
            raise ValueError(f"a dataset of {self.dataset_len} examples gives rank {self.rank} of {self.num_replicas} "
                             "no example" + (" with drop_last=True" if self.drop_last else ""))
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Use a new shuffle for this epoch (the same on every rank that passes the same epoch)."""
        self.epoch = _checks.integer("epoch", epoch)

    def indices(self) -> np.ndarray:
        """This rank's example indices for the current epoch, as an int64 array of ``len(self)``."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.dataset_len)
        else:
            order = np.arange(self.dataset_len)
        if self.drop_last:
            order = order[: self.total_size]
        elif self.total_size > order.size:  # repeat from the start (more than once for a tiny dataset)
            order = np.resize(order, self.total_size)
        return order[self.rank :: self.num_replicas].astype(np.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def bucket_batches(self, seqs: Sequence[Sequence[int] | np.ndarray], labels: Sequence[int] | np.ndarray,
                       batch_size: int, *, pad_id: int = 0, drop_last: bool = False
                       ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """:func:`~tinygrad_rnn.data.bucket_batches` over this rank's shard: ``(ids, lengths, labels)``.

        The batches' order and tie-breaking follow the sampler (``shuffle``, ``seed``, ``epoch``),
        so they are deterministic per epoch. Every rank yields ``ceil(len(self) / batch_size)``
        batches (the floor with ``drop_last``).

        Example: ``sampler.set_epoch(e); for ids, lengths, y in sampler.bucket_batches(seqs, labels, 32): ...``
        """
        if len(seqs) != self.dataset_len:
            raise ValueError(f"the sampler was made for {self.dataset_len} examples but got {len(seqs)} sequences")
        label_arr = np.asarray(labels)
        if label_arr.ndim == 0 or len(label_arr) != self.dataset_len:
            raise ValueError(f"got {self.dataset_len} sequences but labels of shape {label_arr.shape}")
        idx = self.indices()
        return bucket_batches([seqs[i] for i in idx], label_arr[idx], batch_size, shuffle=self.shuffle,
                              seed=np.random.default_rng([self.seed, self.epoch, 1]), pad_id=pad_id, drop_last=drop_last)


def distributed_batchify(ids: Sequence[int] | np.ndarray, batch_size: int, num_replicas: int | None = None,
                         rank: int | None = None) -> np.ndarray:
    """This rank's ``batch_size`` rows of ``batchify(ids, num_replicas * batch_size)``: shape (batch, steps).

    Rank r takes rows ``r*batch_size .. (r+1)*batch_size - 1``, so N ranks with batch B together
    train on exactly the streams one process trains on with batch N*B (and every rank has the
    same number of steps, hence of BPTT windows).

    Example: ``x, y = next(bptt_batches(distributed_batchify(ids, 20, 2, rank), 35))``  # x: (20, 35)
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    num_replicas, rank = _world(num_replicas, rank)
    full = batchify(ids, batch_size * num_replicas)
    return full[rank * batch_size : (rank + 1) * batch_size].copy()
