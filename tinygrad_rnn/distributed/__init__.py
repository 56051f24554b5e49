"""Data-parallel training over MPI, with ``torch.distributed``'s names.

Launch one process per rank (``mpiexec -n 2 python train.py``; a plain ``python train.py`` is a
world of size 1) and call :func:`init_process_group` first. Collectives work in place on
tensors: NumPy buffers travel through MPI's buffer interface (never pickled), CuPy buffers
through NCCL. Importing this package does not import MPI; ``mpi4py`` is the ``distributed`` extra.

    >>> import tinygrad_rnn as tr
    >>> tr.distributed.is_initialized()
    False
"""
from .core import (
                   ReduceOp,
                   Work,
                   all_gather,
                   all_reduce,
                   barrier,
                   broadcast,
                   destroy_process_group,
                   get_local_rank,
                   get_local_world_size,
                   get_rank,
                   get_world_size,
                   init_process_group,
                   is_available,
                   is_initialized,
)
from .shard import gather_along, shard_along

__all__ = ["ReduceOp", "Work", "init_process_group", "destroy_process_group", "is_available", "is_initialized",
           "get_rank", "get_world_size", "get_local_rank", "get_local_world_size", "barrier", "all_reduce", "broadcast",
           "all_gather", "gather_along", "shard_along"]
