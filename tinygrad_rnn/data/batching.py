"""Batching for language models (contiguous streams) and classifiers (padded buckets)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def _as_int_array(name: str, values: object, ndim: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer ids (use Vocab.encode first), got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def batchify(ids: Sequence[int] | np.ndarray, batch_size: int) -> np.ndarray:
    """Cut one token stream into ``batch_size`` contiguous rows: shape (batch, steps).

    As in Zaremba's PTB reader: row ``b`` is ``ids[b*steps:(b+1)*steps]`` with
    ``steps = len(ids) // batch_size``; the last ``len(ids) % batch_size``
    tokens are dropped. Carrying the hidden state from one window to the next
    is then correct, because every row continues where it left off.

    Example: ``batchify(np.arange(10), 3)`` -> ``[[0, 1, 2], [3, 4, 5], [6, 7, 8]]``.
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    arr = _as_int_array("ids", ids, 1)
    if arr.size < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} tokens, got {arr.size}")
    steps = arr.size // batch_size
    return arr[: batch_size * steps].reshape(batch_size, steps).copy()


def bptt_batches(data: np.ndarray, seq_len: int, *, drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Truncated-BPTT windows ``(x, y)`` over batchified data, y = x shifted by one.

    Windows start at columns 0, seq_len, 2*seq_len, ...; ``x`` is
    ``data[:, i:i+L]`` and ``y`` is ``data[:, i+1:i+1+L]``, both (batch, L)
    contiguous int64 copies. Every column except the first is a target exactly
    once. The last window is shorter when ``steps - 1`` is not a multiple of
    ``seq_len``; ``drop_last=True`` skips it (Zaremba's ``ptb_iterator``), which
    keeps shapes fixed but leaves those targets out of the loss/perplexity.
    There are ``ceil((steps-1)/seq_len)`` windows, or the floor with drop_last.
    Arguments are checked when called, not on the first ``next()``.

    Example: ``x, y = next(bptt_batches(batchify(ids, 20), 35))``  # x.shape == (20, 35)
    """
    arr = _as_int_array("data", data, 2)
    seq_len = _check_positive_int("seq_len", seq_len)
    predictable = arr.shape[1] - 1  # the last column has no next token to predict
    if predictable < 1:
        raise ValueError(f"data of shape {arr.shape} has fewer than 2 steps per row; nothing to predict")
    if seq_len > predictable:
        raise ValueError(
            f"seq_len={seq_len} is larger than the {predictable} predictable steps per row of data with shape {arr.shape}"
        )
    stop = predictable - predictable % seq_len if drop_last else predictable

    def windows() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(0, stop, seq_len):
            n = min(seq_len, predictable - i)
            yield np.ascontiguousarray(arr[:, i : i + n]), np.ascontiguousarray(arr[:, i + 1 : i + 1 + n])

    return windows()


def pad_batch(seqs: Sequence[Sequence[int] | np.ndarray], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad variable-length id sequences: ``(ids (B, Tmax), lengths (B,))``, both int64.

    Empty sequences are allowed and give an all-padding row of length 0.

    Example: ``pad_batch([[5, 6, 7], [8]])`` -> ``([[5, 6, 7], [8, 0, 0]], [3, 1])``.
    """
    if isinstance(pad_id, bool) or not isinstance(pad_id, (int, np.integer)):
        raise TypeError(f"pad_id must be an int, got {type(pad_id).__name__} {pad_id!r}")
    if len(seqs) == 0:
        raise ValueError("pad_batch needs at least one sequence, got an empty batch")
    arrays = [_as_int_array(f"seqs[{i}]", s, 1) for i, s in enumerate(seqs)]
    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    ids = np.full((len(arrays), int(lengths.max())), pad_id, dtype=np.int64)
    for row, a in zip(ids, arrays, strict=True):
        row[: a.size] = a
    return ids, lengths


def bucket_batches(
    seqs: Sequence[Sequence[int] | np.ndarray],
    labels: Sequence[int] | np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int | np.random.Generator | None = None,
    pad_id: int = 0,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Padded minibatches of similar-length sequences: yields ``(ids, lengths, labels)``.

    Examples are sorted by length so each batch needs little padding. With
    ``shuffle`` the ties between equal lengths are broken at random and the
    batch order is shuffled, so batches differ from epoch to epoch when
    ``seed`` is a Generator (an int seed repeats the same order each call).
    Without ``shuffle`` batches come in increasing length, deterministically.
    Every example appears exactly once per pass; ``drop_last`` drops the one
    smaller batch. ``ids``/``lengths`` are as in :func:`pad_batch`, ``labels``
    is ``np.asarray(labels)[batch_indices]``.

    Example: ``for ids, lengths, y in bucket_batches(encoded, labels, 32, seed=rng): ...``
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    n = len(seqs)
    if n == 0:
        raise ValueError("bucket_batches needs at least one sequence, got none")
    label_arr = np.asarray(labels)
    if label_arr.ndim == 0 or len(label_arr) != n:
        raise ValueError(f"got {n} sequences but labels of shape {label_arr.shape}")
    if drop_last and n < batch_size:
        raise ValueError(f"drop_last=True with {n} sequences < batch_size={batch_size} yields no batch")
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n) if shuffle else np.arange(n)
    order = order[np.argsort(lengths[order], kind="stable")]
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if drop_last and len(batches[-1]) < batch_size:
        batches.pop()
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for idx in batches:
            ids, lens = pad_batch([seqs[i] for i in idx], pad_id=pad_id)
            yield ids, lens, label_arr[idx]

    return generate()
