"""On a GPU machine (world size 1, or ``mpiexec -n G`` with G GPUs): the NCCL path of the collectives and
of DistributedDataParallel, against the CPU. Run by bench/gpu_check.sh; prints ``NCCL OK`` or fails.

    python tests/mpi/gpu_nccl.py
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tinygrad_rnn as tr  # noqa: E402

if importlib.util.find_spec("mpi4py") is None:
    print("NCCL check SKIPPED: mpi4py is not installed (pip install -e '.[distributed]')")
    sys.exit(0)
if not tr.cuda.is_available():
    print(f"NCCL check SKIPPED: no GPU ({tr.cuda.unavailable_reason()})")
    sys.exit(0)

from _lm import TinyLM, flat_params, lm_loss, token_stream  # noqa: E402

import tinygrad_rnn.distributed as dist  # noqa: E402
from tinygrad_rnn import optim  # noqa: E402
from tinygrad_rnn.data import distributed_batchify  # noqa: E402
from tinygrad_rnn.distributed import ReduceOp  # noqa: E402
from tinygrad_rnn.nn.parallel import DistributedDataParallel  # noqa: E402

dist.init_process_group()
rank, world = dist.get_rank(), dist.get_world_size()
vals = np.arange(1, world + 1, dtype=np.float64)

t = tr.tensor(np.array([rank + 1.0, 2.0]), device="cuda")
dist.all_reduce(t)
assert t.device == "cuda" and t.tolist() == [vals.sum(), 2.0 * world], t
dist.all_reduce(t, op=ReduceOp.AVG)
assert t.tolist() == [vals.sum(), 2.0 * world], t
for op, expect in ((ReduceOp.MAX, world), (ReduceOp.MIN, 1), (ReduceOp.PRODUCT, int(np.prod(vals)))):
    i = tr.tensor(np.array([rank + 1], dtype=np.int64), device="cuda")
    dist.all_reduce(i, op=op)
    assert i.tolist() == [expect], (op, i)
b = tr.tensor(np.array([rank == 0, False]), device="cuda")
dist.all_reduce(b)
assert b.tolist() == [True, False], b
view = tr.tensor(np.arange(6.0).reshape(2, 3) * (rank + 1)).to("cuda").transpose(0, 1)
dist.all_reduce(view)
assert np.array_equal(view.numpy(), (np.arange(6.0).reshape(2, 3) * vals.sum()).T)
c = tr.tensor(np.full(4, float(rank)), device="cuda")
dist.broadcast(c, src=0)
assert c.tolist() == [0.0] * 4
out = [tr.zeros(3, device="cuda") for _ in range(world)]
dist.all_gather(out, tr.tensor(np.full(3, float(rank), dtype=np.float32), device="cuda"))
assert [o.tolist()[0] for o in out] == list(range(world))

# DDP on the GPU: a few SGD steps equal the CPU model's (float64), with one bucket and with one per parameter
ids = token_stream()
for cap in (1e-6, 25):
    gpu, cpu = TinyLM(seed=100).to("cuda"), TinyLM(seed=100)
    ddp = DistributedDataParallel(gpu, bucket_cap_mb=cap)
    data = distributed_batchify(ids, 3)
    for model, fwd in ((gpu, ddp), (cpu, cpu)):
        opt = optim.SGD(model.parameters(), lr=0.5)
        state = None
        for k in range(3):
            x, y = data[:, 5 * k:5 * k + 5], data[:, 5 * k + 1:5 * k + 6]
            opt.zero_grad()
            loss, state = lm_loss(fwd, x, y, state)
            loss.backward()
            opt.step()
    if world == 1:
        g, c_ = flat_params(gpu), flat_params(cpu)
        rel = np.max(np.abs(g - c_)) / np.max(np.abs(c_))
        assert rel < 1e-9, (cap, rel)
dist.destroy_process_group()
if rank == 0:
    print(f"NCCL OK world_size={world}")
