"""CPU backend: NumPy arrays, BLAS for matrix products, Numba for the fused kernels."""
from __future__ import annotations

from typing import Any

import numpy as np

from . import Backend, cpu_kernels as K

__all__ = ["CPUBackend"]


class CPUBackend(Backend):
    name = "cpu"
    xp = np

    def to_host(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def from_host(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a)

    # -- fused kernels -------------------------------------------------------------------
    def softmax_xent(self, logits: np.ndarray, targets: np.ndarray, ignore_index: int):
        """Rows of (loss, logsumexp) for 2-D logits and int64 targets."""
        logits = np.ascontiguousarray(logits)
        n = logits.shape[0]
        loss = np.empty(n, dtype=logits.dtype)
        lse = np.empty(n, dtype=np.float64)
        K.softmax_xent_forward(logits, np.ascontiguousarray(targets, dtype=np.int64), int(ignore_index), loss, lse)
        return loss, lse

    def softmax_xent_backward(self, logits, lse, targets, ignore_index, grad_rows):
        logits = np.ascontiguousarray(logits)
        out = np.empty_like(logits)
        g = np.ascontiguousarray(np.broadcast_to(grad_rows, (logits.shape[0],)), dtype=np.float64)
        K.softmax_xent_backward(logits, lse, np.ascontiguousarray(targets, dtype=np.int64), int(ignore_index), g, out)
        return out

    def scatter_add_rows(self, num_rows: int, idx: np.ndarray, src: np.ndarray) -> np.ndarray:
        """zeros((num_rows, D)) with src's rows added at idx (duplicates accumulate)."""
        src = np.ascontiguousarray(src)
        out = np.zeros((num_rows, src.shape[1]), dtype=src.dtype)
        K.scatter_add_rows(out, np.ascontiguousarray(idx, dtype=np.int64), src)
        return out

    def index_add(self, out: np.ndarray, index: Any, src: np.ndarray) -> None:
        """out[index] += src with repeated indices accumulating (general advanced indexing)."""
        np.add.at(out, index, src)
