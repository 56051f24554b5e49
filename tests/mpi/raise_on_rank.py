"""Run under ``mpiexec -n 2``: rank 1 raises while rank 0 waits in a collective; the job must end.

Without the abort excepthook rank 0 would wait in ``all_reduce`` for ever.
"""
from __future__ import annotations

import tinygrad_rnn as tr
import tinygrad_rnn.distributed as dist

dist.init_process_group("mpi")
dist.barrier()
if dist.get_rank() == 1:
    raise ValueError("deliberate failure on rank 1 of the fault test")
dist.all_reduce(tr.zeros(3))  # rank 1 never joins
print("rank 0 left the collective: the abort did not happen", flush=True)
