"""Batching for language models (contiguous streams) and classifiers (padded buckets)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinygrad_rnn._checks import integer as _check_int
from tinygrad_rnn._checks import positive_int as _check_positive_int


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


class BPTTBatches:
    """An iterator over truncated-BPTT windows that knows its position (see :func:`bptt_batches`).

    ``state_dict()`` / ``load_state_dict()`` save and restore that position, so a resumed epoch
    continues with the next window; ``len()`` is the number of windows in the whole pass.

    Example: ``it = bptt_batches(data, 35); next(it); state = it.state_dict()``
    """

    def __init__(self, data: np.ndarray, seq_len: int, drop_last: bool = False):
        arr = _as_int_array("data", data, 2)
        seq_len = _check_positive_int("seq_len", seq_len)
        predictable = arr.shape[1] - 1  # the last column has no next token to predict
        if predictable < 1:
            raise ValueError(f"data of shape {arr.shape} has fewer than 2 steps per row; nothing to predict")
        if seq_len > predictable:
            raise ValueError(
                f"seq_len={seq_len} is larger than the {predictable} predictable steps per row of data with shape {arr.shape}"
            )
        self.data, self.seq_len, self.drop_last = arr, seq_len, bool(drop_last)
        self._predictable = predictable
        self._stop = predictable - predictable % seq_len if drop_last else predictable
        self.position = 0  # windows already given out

    def __len__(self) -> int:
        return -(-self._stop // self.seq_len)

    def __iter__(self) -> BPTTBatches:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        i = self.position * self.seq_len
        if i >= self._stop:
            raise StopIteration
        self.position += 1
        n = min(self.seq_len, self._predictable - i)
        return np.ascontiguousarray(self.data[:, i : i + n]), np.ascontiguousarray(self.data[:, i + 1 : i + 1 + n])

    def state_dict(self) -> dict[str, object]:
        """Where this pass stands: ``{"position", "seq_len", "drop_last", "shape"}`` (ints, bools, lists)."""
        return {"position": self.position, "seq_len": self.seq_len, "drop_last": self.drop_last,
                "shape": list(self.data.shape)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Continue at a saved position; refuses (ValueError) a state of other data, seq_len or drop_last."""
        _check_state_keys("BPTTBatches", state, {"position", "seq_len", "drop_last", "shape"})
        mine = self.state_dict()
        for k in ("seq_len", "drop_last", "shape"):
            if _plain(state[k]) != mine[k]:
                raise ValueError(f"BPTTBatches.load_state_dict: saved {k}={state[k]!r} but this batcher has {mine[k]!r}")
        self.position = _check_position("BPTTBatches", state["position"], len(self))


def bptt_batches(data: np.ndarray, seq_len: int, *, drop_last: bool = False) -> BPTTBatches:
    """Truncated-BPTT windows ``(x, y)`` over batchified data, y = x shifted by one.

    Windows start at columns 0, seq_len, 2*seq_len, ...; ``x`` is
    ``data[:, i:i+L]`` and ``y`` is ``data[:, i+1:i+1+L]``, both (batch, L)
    contiguous int64 copies. Every column except the first is a target exactly
    once. The last window is shorter when ``steps - 1`` is not a multiple of
    ``seq_len``; ``drop_last=True`` skips it (Zaremba's ``ptb_iterator``), which
    keeps shapes fixed but leaves those targets out of the loss/perplexity.
    There are ``ceil((steps-1)/seq_len)`` windows, or the floor with drop_last.
    Arguments are checked when called, not on the first ``next()``. The result
    is a :class:`BPTTBatches` iterator whose position can be saved and restored.

    Example: ``x, y = next(bptt_batches(batchify(ids, 20), 35))``  # x.shape == (20, 35)
    """
    return BPTTBatches(data, seq_len, drop_last)


def _plain(v: object) -> object:
    # a saved state comes back from tr.load with lists/tuples as saved; compare as lists
    return list(v) if isinstance(v, (list, tuple)) else v


def _check_state_keys(name: str, state: object, keys: set[str]) -> None:
    if not isinstance(state, dict):
        raise TypeError(f"{name}.load_state_dict: expected the dict from state_dict(), got {type(state).__name__}")
    if set(state) != keys:
        raise ValueError(f"{name}.load_state_dict: keys {sorted(map(str, state))}, expected {sorted(keys)}")


def _check_position(name: str, position: object, total: int) -> int:
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or not 0 <= position <= total:
        raise ValueError(f"{name}.load_state_dict: position {position!r} is not in [0, {total}]")
    return int(position)


def pad_batch(seqs: Sequence[Sequence[int] | np.ndarray], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad variable-length id sequences: ``(ids (B, Tmax), lengths (B,))``, both int64.

    Empty sequences are allowed and give an all-padding row of length 0.

    Example: ``pad_batch([[5, 6, 7], [8]])`` -> ``([[5, 6, 7], [8, 0, 0]], [3, 1])``.
    """
    _check_int("pad_id", pad_id)
    if len(seqs) == 0:
        raise ValueError("pad_batch needs at least one sequence, got an empty batch")
    arrays = [_as_int_array(f"seqs[{i}]", s, 1) for i, s in enumerate(seqs)]
    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    ids = np.full((len(arrays), int(lengths.max())), pad_id, dtype=np.int64)
    for row, a in zip(ids, arrays, strict=True):
        row[: a.size] = a
    return ids, lengths


class BucketBatches:
    """An iterator over padded length-bucketed batches that knows its order and position.

    ``state_dict()`` holds the batch order this pass drew and how many batches were given out, so a
    resumed epoch yields exactly the batches the interrupted one had left (see :func:`bucket_batches`).

    Example: ``it = bucket_batches(seqs, labels, 32, seed=0); state = it.state_dict()``
    """

    def __init__(self, seqs: Sequence[Sequence[int] | np.ndarray], labels: Sequence[int] | np.ndarray,
                 batch_size: int, *, shuffle: bool = True, seed: object = None, pad_id: int = 0,
                 drop_last: bool = False):
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
        # a tinygrad_rnn.Generator is accepted too (duck-typed: data/ does not import the engine)
        rng = seed.rng if isinstance(getattr(seed, "rng", None), np.random.Generator) else np.random.default_rng(seed)
        order = rng.permutation(n) if shuffle else np.arange(n)
        order = order[np.argsort(lengths[order], kind="stable")]
        batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
        if drop_last and len(batches[-1]) < batch_size:
            batches.pop()
        if shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        self.seqs, self.labels, self.batch_size, self.pad_id = seqs, label_arr, batch_size, pad_id
        self.batches = batches
        self.position = 0  # batches already given out

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> BucketBatches:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.position >= len(self.batches):
            raise StopIteration
        idx = self.batches[self.position]
        self.position += 1
        ids, lens = pad_batch([self.seqs[i] for i in idx], pad_id=self.pad_id)
        return ids, lens, self.labels[idx]

    def state_dict(self) -> dict[str, object]:
        """``{"position", "num_examples", "batch_size", "order" (all batches' indices, int64), "sizes"}``."""
        return {"position": self.position, "num_examples": len(self.seqs), "batch_size": self.batch_size,
                "order": np.concatenate(self.batches).astype(np.int64),
                "sizes": np.array([len(b) for b in self.batches], dtype=np.int64)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Take over a saved pass (its order and position); refuses (ValueError) one of other data."""
        name = "BucketBatches"
        _check_state_keys(name, state, {"position", "num_examples", "batch_size", "order", "sizes"})
        n = len(self.seqs)
        if state["num_examples"] != n or state["batch_size"] != self.batch_size:
            raise ValueError(f"{name}.load_state_dict: saved for {state['num_examples']!r} examples in batches of "
                             f"{state['batch_size']!r}, this one has {n} in batches of {self.batch_size}")
        order, sizes = np.asarray(state["order"]), np.asarray(state["sizes"])
        if order.ndim != 1 or sizes.ndim != 1 or order.dtype.kind not in "iu" or sizes.dtype.kind not in "iu":
            raise ValueError(f"{name}.load_state_dict: 'order' and 'sizes' must be 1-D integer arrays")
        if (sizes.size == 0 or np.any(sizes < 1) or np.any(sizes > self.batch_size) or int(sizes.sum()) != order.size
                or order.size > n or np.any(order < 0) or np.any(order >= n) or np.unique(order).size != order.size):
            raise ValueError(f"{name}.load_state_dict: 'order'/'sizes' are not a split of distinct example indices "
                             f"(0..{n - 1}) into batches of at most {self.batch_size}")
        position = _check_position(name, state["position"], sizes.size)
        self.batches = np.split(order.astype(np.int64), np.cumsum(sizes)[:-1])
        self.position = position


def bucket_batches(
    seqs: Sequence[Sequence[int] | np.ndarray],
    labels: Sequence[int] | np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: object = None,
    pad_id: int = 0,
    drop_last: bool = False,
) -> BucketBatches:
    """Padded minibatches of similar-length sequences: yields ``(ids, lengths, labels)``.

    Examples are sorted by length so each batch needs little padding. With
    ``shuffle`` the ties between equal lengths are broken at random and the
    batch order is shuffled, so batches differ from epoch to epoch when
    ``seed`` is a Generator (NumPy's or tinygrad_rnn's; an int seed repeats the
    same order each call).
    Without ``shuffle`` batches come in increasing length, deterministically.
    Every example appears exactly once per pass; ``drop_last`` drops the one
    smaller batch. ``ids``/``lengths`` are as in :func:`pad_batch`, ``labels``
    is ``np.asarray(labels)[batch_indices]``. The result is a
    :class:`BucketBatches` iterator whose order and position can be saved.

    Example: ``for ids, lengths, y in bucket_batches(encoded, labels, 32, seed=rng): ...``
    """
    return BucketBatches(seqs, labels, batch_size, shuffle=shuffle, seed=seed, pad_id=pad_id, drop_last=drop_last)
