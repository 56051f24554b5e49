"""Collectives on GPU (CuPy) arrays through NCCL, set up over MPI as ChainerMN does.

Rank 0 asks NCCL for a unique id, MPI broadcasts it (a few bytes of metadata), and every rank
joins the NCCL clique with it: one GPU per rank, chosen by ``init_process_group``. NCCL calls
are enqueued on the current CUDA stream, so they are already asynchronous with respect to the
host; a caller that needs the result on the host synchronises the stream.

Example (inside ``all_reduce`` on a ``cuda`` tensor): ``nccl_all_reduce(group, t.data, ReduceOp.SUM)``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["nccl_dtype", "nccl_op", "clique", "nccl_all_reduce", "nccl_broadcast", "nccl_all_gather"]


def nccl_dtype(nccl: Any, dtype: np.dtype) -> int:
    """NCCL's datatype constant for a NumPy dtype (booleans travel as uint8)."""
    names = {"float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64", "int32": "NCCL_INT32", "int64": "NCCL_INT64",
             "bool": "NCCL_UINT8"}
    name = names.get(np.dtype(dtype).name)
    if name is None:
        raise TypeError(f"NCCL collectives support float32, float64, int32, int64 and bool tensors, got {dtype}")
    return getattr(nccl, name)


def nccl_op(nccl: Any, op: Any, dtype: np.dtype) -> int:
    """NCCL's reduction constant for a ``ReduceOp`` (AVG is a SUM the caller divides; bool is any/all)."""
    name = op.name
    if np.dtype(dtype) == np.bool_:  # 0/1 bytes: any == max, all == min
        return nccl.NCCL_MAX if name in ("SUM", "MAX") else nccl.NCCL_MIN
    return getattr(nccl, {"SUM": "NCCL_SUM", "AVG": "NCCL_SUM", "PRODUCT": "NCCL_PROD", "MIN": "NCCL_MIN",
                          "MAX": "NCCL_MAX"}[name])


def clique(g: Any, nccl: Any = None) -> tuple[Any, Any]:
    """``(nccl module, communicator)`` of the process group, created on first use by every rank."""
    if g.nccl is None:
        if nccl is None:
            try:
                from cupy.cuda import nccl
            except ImportError as e:
                raise RuntimeError(f"collectives on GPU tensors need CuPy built with NCCL ({e})") from e
        uid = nccl.get_unique_id() if g.rank == 0 else None
        uid = g.comm.bcast(uid, root=0)  # the id is a small tuple of ints: metadata, not an array
        g.nccl = (nccl, nccl.NcclCommunicator(g.size, uid, g.rank))
    return g.nccl


def _stream() -> Any:
    import cupy

    return cupy.cuda.get_current_stream()


def _contiguous(arr: Any) -> tuple[Any, bool]:
    if arr.flags.c_contiguous:
        return arr, False
    import cupy

    return cupy.ascontiguousarray(arr), True


def nccl_all_reduce(g: Any, arr: Any, op: Any) -> None:
    """In-place all-reduce of a CuPy array, enqueued on the current stream (AVG left as the SUM)."""
    nccl, comm = clique(g)
    buf, copy_back = _contiguous(arr)
    view = buf.view(np.uint8) if buf.dtype == np.bool_ else buf
    comm.allReduce(view.data.ptr, view.data.ptr, view.size, nccl_dtype(nccl, buf.dtype), nccl_op(nccl, op, buf.dtype),
                   _stream().ptr)
    if copy_back:
        arr[...] = buf


def nccl_broadcast(g: Any, arr: Any, src: int) -> None:
    """In-place broadcast of rank ``src``'s CuPy array."""
    nccl, comm = clique(g)
    buf, copy_back = _contiguous(arr)
    view = buf.view(np.uint8) if buf.dtype == np.bool_ else buf
    comm.bcast(view.data.ptr, view.size, nccl_dtype(nccl, buf.dtype), src, _stream().ptr)
    if copy_back:
        arr[...] = buf


def nccl_all_gather(g: Any, arr: Any) -> Any:
    """Every rank's CuPy array stacked along a new first axis, shape ``(world_size, *arr.shape)``."""
    import cupy

    nccl, comm = clique(g)
    send = cupy.ascontiguousarray(arr)
    recv = cupy.empty((g.size, *arr.shape), dtype=arr.dtype)
    sv = send.view(np.uint8) if send.dtype == np.bool_ else send
    rv = recv.view(np.uint8) if recv.dtype == np.bool_ else recv
    comm.allGather(sv.data.ptr, rv.data.ptr, sv.size, nccl_dtype(nccl, send.dtype), _stream().ptr)
    return recv
