"""Compile a user-written recurrent cell, forward and backpropagation through time, into one kernel.

``nn.Recurrent`` and ``tr.scan`` use it; the pieces, in the order data flows:

  * ``trace.py``     one step of the cell -> its op graph (or a ``CompileError`` naming op and line)
  * ``ops_table.py`` each op's per-row forward and derivative (the one place naming the op classes)
  * ``codegen.py``   the graph -> storage, stages and the per-row code of one step
  * ``loop.py``      the time loop around the step (products through BLAS, padding, carries)
  * ``cache.py``     generated modules on disk, Numba's machine code cached next to them
  * ``function.py``  the whole sequence through the kernels, as one ``functions.CompiledRecurrence`` node

    >>> import tinygrad_rnn as tr
    >>> w = tr.randn(4, 4, requires_grad=True)
    >>> h, ys = tr.scan(lambda h, x: ((h @ w + x).tanh(),) * 2, tr.zeros(2, 4), tr.randn(3, 2, 4), compile=True)
    >>> ys.shape
    (3, 2, 4)
"""
from ..functions import CompiledRecurrence
from .cache import cache_dir
from .function import compile_stats
from .trace import CompileError

__all__ = ["CompileError", "CompiledRecurrence", "cache_dir", "compile_stats"]
