"""Variable-length batches as ``torch.nn.utils.rnn``: padding, packing, and ``PackedSequence``.

A ``PackedSequence`` holds the batch's valid steps only, time-major and sorted by decreasing
length (``data`` (sum of lengths, *), ``batch_sizes`` (T,) int64). ``RNN/LSTM/GRU`` accept one and
return one: internally it becomes the padded batch plus the layers' ``lengths=`` mask, so padding
never touches the states or any gradient. Every conversion here is one differentiable row gather.

    >>> import tinygrad_rnn as tr
    >>> from tinygrad_rnn.nn.utils.rnn import pack_sequence, pad_packed_sequence
    >>> p = pack_sequence([tr.ones(3, 2), tr.ones(1, 2)])
    >>> p.batch_sizes.tolist(), pad_packed_sequence(p)[0].shape
    ([2, 1, 1], (3, 2, 2))
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from ...ops import cat, stack
from ...tensor import Tensor, full

__all__ = ["PackedSequence", "pad_sequence", "pack_padded_sequence", "pad_packed_sequence", "pack_sequence",
           "unpad_sequence", "unpack_sequence"]


class PackedSequence(NamedTuple):
    """``(data, batch_sizes, sorted_indices, unsorted_indices)``, as PyTorch's.

    ``batch_sizes[t]`` is how many sequences are longer than ``t``; ``sorted_indices[j]`` is the
    original batch index of the j-th longest sequence (None when the batch came sorted) and
    ``unsorted_indices`` its inverse.
    """

    data: Tensor
    batch_sizes: Tensor
    sorted_indices: Tensor | None = None
    unsorted_indices: Tensor | None = None

    def to(self, *args: Any, **kwargs: Any) -> PackedSequence:
        """The same packing with ``data`` converted by ``Tensor.to`` (indices stay int64)."""
        return self._replace(data=self.data.to(*args, **kwargs))

    def float(self) -> PackedSequence:
        return self._replace(data=self.data.float())

    def double(self) -> PackedSequence:
        return self._replace(data=self.data.double())

    @property
    def is_cuda(self) -> bool:
        return self.data.device != "cpu"


def _int_array(v: Any, what: str) -> np.ndarray:
    arr = v.numpy() if isinstance(v, Tensor) else np.asarray(v)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D (one per sequence), got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{what} must hold integers, got {arr.dtype}")
    return arr.astype(np.int64)


def _rows(x: Tensor, idx: np.ndarray) -> Tensor:
    """``x`` flattened over its first two axes, rows ``idx`` gathered (one node, scatter-add backward)."""
    flat = x.reshape(x.shape[0] * x.shape[1], -1) if x.ndim > 2 else x.reshape(x.shape[0] * x.shape[1], 1)
    out = flat[idx]
    return out.reshape((len(idx),) + x.shape[2:])


def pad_sequence(sequences: Sequence[Tensor], batch_first: bool = False, padding_value: float = 0.0,
                 padding_side: str = "right") -> Tensor:
    """Stack tensors of shapes (L_i, *) into (T, B, *) (``batch_first``: (B, T, *)), T = max L_i.

    >>> import tinygrad_rnn as tr
    >>> pad_sequence([tr.ones(2), tr.ones(1)], batch_first=True, padding_value=-1).tolist()
    [[1.0, 1.0], [1.0, -1.0]]
    """
    if isinstance(sequences, Tensor):
        sequences = [sequences[i] for i in range(sequences.shape[0])]
    seqs = list(sequences)
    if not seqs:
        raise ValueError("pad_sequence: received an empty list of sequences")
    if padding_side not in ("left", "right"):
        raise ValueError(f"pad_sequence: padding_side must be 'left' or 'right', got {padding_side!r}")
    for i, s in enumerate(seqs):
        if not isinstance(s, Tensor):
            raise TypeError(f"pad_sequence: expected Tensors, got {type(s).__name__} at position {i}")
        if s.ndim == 0:
            raise ValueError(f"pad_sequence: sequence {i} is 0-d; each needs a length dimension")
        if s.shape[1:] != seqs[0].shape[1:]:
            raise ValueError(f"pad_sequence: trailing shapes differ: {seqs[0].shape} (sequence 0) and {s.shape} "
                             f"(sequence {i})")
    t = max(s.shape[0] for s in seqs)
    out = []
    for s in seqs:
        n = t - s.shape[0]
        if n:
            pad = full((n,) + s.shape[1:], padding_value, dtype=s.dtype, device=s.device)
            s = cat([s, pad] if padding_side == "right" else [pad, s], dim=0)
        out.append(s)
    return stack(out, 0 if batch_first else 1)


def pack_padded_sequence(input: Tensor, lengths: Any, batch_first: bool = False,
                         enforce_sorted: bool = True) -> PackedSequence:
    """Pack a padded batch (T, B, *) (``batch_first``: (B, T, *)) of sequences with ``lengths`` (B,).

    With ``enforce_sorted`` the lengths must be decreasing (the ONNX-exportable layout, as PyTorch);
    otherwise the batch is sorted here and ``sorted_indices`` records the order.
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"pack_padded_sequence: input must be a Tensor, got {type(input).__name__}")
    if input.ndim < 2:
        raise ValueError(f"pack_padded_sequence: input must be at least 2-D (T, B, *), got shape {input.shape}")
    x = input.transpose(0, 1) if batch_first else input
    t_, b_ = x.shape[0], x.shape[1]
    lens = _int_array(lengths, "pack_padded_sequence: lengths")
    if lens.shape != (b_,):
        raise ValueError(f"pack_padded_sequence: expected {b_} lengths (the batch size of input {input.shape}), "
                         f"got {lens.shape[0]}")
    if b_ and lens.min() <= 0:
        raise ValueError("pack_padded_sequence: Length of all samples has to be greater than 0, but found an element "
                         "in 'lengths' that is <= 0")
    if b_ and lens.max() > t_:
        raise ValueError(f"pack_padded_sequence: a length {lens.max()} exceeds the padded length {t_}")
    if enforce_sorted:
        if np.any(np.diff(lens) > 0):
            raise ValueError("pack_padded_sequence: `lengths` array must be sorted in decreasing order when "
                             "`enforce_sorted` is True. You can pass `enforce_sorted=False` to pack_padded_sequence "
                             "and/or pack_sequence to sidestep this requirement if you do not need ONNX exportability.")
        order = None
    else:
        order = np.argsort(-lens, kind="stable")
        lens = lens[order]
    perm = np.arange(b_) if order is None else order
    batch_sizes = (lens[None, :] > np.arange(lens[0] if b_ else 0)[:, None]).sum(axis=1).astype(np.int64)
    idx = np.concatenate([t * b_ + perm[:bs] for t, bs in enumerate(batch_sizes)]) if b_ else np.zeros(0, np.int64)
    data = _rows(x, idx.astype(np.int64))
    if order is None:
        return PackedSequence(data, Tensor(batch_sizes), None, None)
    inv = np.empty_like(order)
    inv[order] = np.arange(b_)
    return PackedSequence(data, Tensor(batch_sizes), Tensor(order.astype(np.int64)), Tensor(inv.astype(np.int64)))


def _check_packed(sequence: Any, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    if not isinstance(sequence, PackedSequence):
        raise TypeError(f"{what}: expected a PackedSequence, got {type(sequence).__name__}")
    bs = _int_array(sequence.batch_sizes, f"{what}: batch_sizes")
    if bs.size == 0 or bs.min() < 1 or np.any(np.diff(bs) > 0) or int(bs.sum()) != sequence.data.shape[0]:
        raise ValueError(f"{what}: batch_sizes {bs.tolist()} do not describe data with {sequence.data.shape[0]} rows "
                         "(they must be positive, non-increasing, and sum to the rows)")
    unsorted = None if sequence.unsorted_indices is None else _int_array(sequence.unsorted_indices, f"{what}: unsorted_indices")
    return bs, unsorted


def _pad_index(bs: np.ndarray, total: int, perm: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """For the padded (total, B) grid: each cell's row in ``data`` (``len(data)`` for padding), and lengths."""
    b_ = int(bs[0])
    offsets = np.concatenate([[0], np.cumsum(bs)[:-1]])
    j = np.arange(b_) if perm is None else perm  # sorted position of each output column
    tt = np.arange(total)[:, None]
    valid = np.zeros((total, b_), dtype=bool)
    valid[: len(bs)] = j[None, :] < bs[:, None]
    src = np.where(valid, np.concatenate([offsets, np.zeros(total - len(bs), np.int64)])[tt] + j[None, :],
                   int(bs.sum()))
    lengths_sorted = (bs[None, :] > np.arange(b_)[:, None]).sum(axis=1)
    return src.reshape(-1).astype(np.int64), lengths_sorted[j].astype(np.int64)


def pad_packed_sequence(sequence: PackedSequence, batch_first: bool = False, padding_value: float = 0.0,
                        total_length: int | None = None) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`pack_padded_sequence`: ``(padded, lengths)``, batch in its original order."""
    bs, unsorted = _check_packed(sequence, "pad_packed_sequence")
    t_ = len(bs)
    if total_length is not None:
        if total_length < t_:
            raise ValueError(f"pad_packed_sequence: Expected total_length to be at least the length of the longest "
                             f"sequence ({t_}), but got total_length={total_length}")
        t_ = int(total_length)
    data = sequence.data
    src, lengths = _pad_index(bs, t_, unsorted)
    pad = full((1,) + data.shape[1:], padding_value, dtype=data.dtype, device=data.device)
    rows = cat([data, pad], dim=0)
    b_ = int(bs[0])
    flat = rows.reshape(rows.shape[0], -1)[src]
    padded = flat.reshape((t_, b_) + data.shape[1:])
    if batch_first:
        padded = padded.transpose(0, 1)
    return padded, Tensor(lengths)


def pack_sequence(sequences: Sequence[Tensor], enforce_sorted: bool = True) -> PackedSequence:
    """Pack a list of (L_i, *) tensors (decreasing lengths unless ``enforce_sorted=False``)."""
    seqs = list(sequences)
    lengths = [s.shape[0] if isinstance(s, Tensor) and s.ndim else 0 for s in seqs]
    return pack_padded_sequence(pad_sequence(seqs), lengths, enforce_sorted=enforce_sorted)


def unpad_sequence(padded_sequences: Tensor, lengths: Any, batch_first: bool = False) -> list[Tensor]:
    """The list of (L_i, *) tensors of a padded batch."""
    x = padded_sequences if batch_first else padded_sequences.transpose(0, 1)
    lens = _int_array(lengths, "unpad_sequence: lengths")
    return [x[i, : int(n)] for i, n in enumerate(lens)]


def unpack_sequence(packed_sequences: PackedSequence) -> list[Tensor]:
    """The list of (L_i, *) tensors of a packed batch, in its original order."""
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)


def packed_forward(layer: Any, packed: PackedSequence, hx: Any) -> tuple[PackedSequence, Any]:
    """``RNN/LSTM/GRU`` on a ``PackedSequence``: the padded batch plus the layer's ``lengths`` mask.

    The batch stays in sorted order inside (``hx`` is permuted in, ``h_n`` back out, as PyTorch),
    and the output keeps the input's packing.
    """
    bs, unsorted = _check_packed(packed, type(layer).__name__)
    t_, b_ = len(bs), int(bs[0])
    src, lengths = _pad_index(bs, t_, None)  # sorted order: the packing's own
    data = packed.data
    if data.ndim != 2:
        raise ValueError(f"{type(layer).__name__}: a PackedSequence's data must be 2-D (steps, features), got {data.shape}")
    zero = full((1, data.shape[1]), 0.0, dtype=data.dtype, device=data.device)
    x = cat([data, zero], dim=0)[src].reshape(t_, b_, data.shape[1])
    order = None if packed.sorted_indices is None else _int_array(packed.sorted_indices, "sorted_indices")

    def permute(h: Tensor, idx: np.ndarray | None) -> Tensor:
        return h if idx is None else h[:, idx]

    if hx is not None:
        hx = tuple(permute(h, order) for h in hx) if isinstance(hx, (tuple, list)) else permute(hx, order)
    if layer.batch_first:
        x = x.transpose(0, 1)
    out, h_n = layer(x, hx, lengths=lengths)
    if layer.batch_first:
        out = out.transpose(0, 1)
    idx = np.concatenate([t * b_ + np.arange(n) for t, n in enumerate(bs)]).astype(np.int64)
    out_packed = PackedSequence(_rows(out, idx), packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
    h_n = tuple(permute(h, unsorted) for h in h_n) if isinstance(h_n, tuple) else permute(h_n, unsorted)
    return out_packed, h_n
