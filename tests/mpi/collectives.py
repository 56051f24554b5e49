"""Run under ``mpiexec -n 2``: the collectives' results and errors, and DDP's unused-parameter handling.

Every check asserts; a failing one ends the job through the abort excepthook (non-zero exit).
Rank 0 prints ``ALL OK`` at the end.
"""
from __future__ import annotations

import numpy as np

import tinygrad_rnn as tr
import tinygrad_rnn.distributed as dist
from tinygrad_rnn import nn
from tinygrad_rnn.distributed import ReduceOp
from tinygrad_rnn.nn.parallel import DistributedDataParallel


def raises(exc: type, *fragments: str):
    """Context manager: the block must raise ``exc`` whose message holds every fragment."""

    class _Ctx:
        def __enter__(self):
            return self

        def __exit__(self, et, ev, tb):
            assert et is not None, f"expected {exc.__name__}, nothing was raised"
            assert issubclass(et, exc), f"expected {exc.__name__}, got {et.__name__}: {ev}"
            for f in fragments:
                assert f in str(ev), f"{f!r} not in message {ev}"
            return True

    return _Ctx()


def check_reductions(rank: int, world: int) -> None:
    vals = np.arange(1, world + 1, dtype=np.float64)  # rank r contributes r + 1
    t = tr.tensor(np.array([rank + 1.0, -(rank + 1.0)], dtype=np.float32))
    v0 = t._version
    dist.all_reduce(t)
    assert t.dtype == np.float32 and t.tolist() == [vals.sum(), -vals.sum()], t
    assert t._version > v0
    t = tr.tensor(np.array([rank + 1.0]))
    dist.all_reduce(t, op=ReduceOp.AVG)
    assert t.tolist() == [vals.mean()], t
    for op, expect in ((ReduceOp.MAX, world), (ReduceOp.MIN, 1), (ReduceOp.PRODUCT, int(np.prod(vals)))):
        t = tr.tensor(np.array([rank + 1, 7], dtype=np.int64))
        dist.all_reduce(t, op=op)
        assert t.tolist() == [expect, 7 if op is not ReduceOp.PRODUCT else 7**world], (op, t)
    b = tr.tensor(np.array([rank == 0, True, False]))
    dist.all_reduce(b)  # SUM of booleans is "any"
    assert b.tolist() == [True, True, False]
    b = tr.tensor(np.array([rank == 0, True, False]))
    dist.all_reduce(b, op=ReduceOp.PRODUCT)  # PRODUCT is "all"
    assert b.tolist() == [world == 1, True, False]
    # a non-contiguous view is reduced in place through a contiguous copy
    base = np.arange(6, dtype=np.float64).reshape(2, 3) * (rank + 1)
    t = tr.tensor(base.T)
    assert not t.numpy().flags.c_contiguous
    dist.all_reduce(t)
    assert np.array_equal(t.numpy(), (np.arange(6).reshape(2, 3) * vals.sum()).T)
    work = dist.all_reduce(tr.tensor([1.0]), async_op=True)
    assert work is not None and work.wait()
    t = tr.tensor(np.full(1000, rank + 1.0))
    work = dist.all_reduce(t, op=ReduceOp.AVG, async_op=True)
    work.wait()
    assert work.is_completed() and np.all(t.numpy() == vals.mean())


def check_broadcast_gather(rank: int, world: int) -> None:
    src = world - 1
    t = tr.tensor(np.full((2, 2), float(rank)))
    dist.broadcast(t, src=src)
    assert np.all(t.numpy() == src)
    t = tr.tensor(np.full(3, rank, dtype=np.int64))
    dist.broadcast(t, src=0, async_op=True).wait()
    assert t.tolist() == [0, 0, 0]
    out = [tr.zeros(2, 2, dtype=tr.int32) for _ in range(world)]
    dist.all_gather(out, tr.tensor(np.full((2, 2), rank, dtype=np.int32)))
    assert [o.numpy()[0, 0] for o in out] == list(range(world))
    dist.barrier()


def check_local_rank_and_shards(rank: int, world: int) -> None:
    # mpiexec -n 2 on one machine: both ranks share the node
    assert dist.get_local_world_size() == world and dist.get_local_rank() == rank
    h = tr.tensor(np.full((1, 2, 3), rank, dtype=np.float32))  # (layers, batch rows of this rank, hidden)
    full_h, full_c = dist.gather_along((h, h + 10), dim=1)
    want = np.concatenate([np.full((1, 2, 3), r, dtype=np.float32) for r in range(world)], axis=1)
    np.testing.assert_array_equal(full_h.numpy(), want)
    np.testing.assert_array_equal(full_c.numpy(), want + 10)
    mine = dist.shard_along(full_h, dim=1)  # the inverse: this rank's rows again
    np.testing.assert_array_equal(mine.numpy(), h.numpy())
    assert dist.gather_along(None, dim=1) is None


def check_errors(rank: int, world: int) -> None:
    with raises(ValueError, "src=5", "size"):
        dist.broadcast(tr.zeros(2), src=5)
    with raises(TypeError, "src"):
        dist.broadcast(tr.zeros(2), src="0")
    with raises(TypeError, "Tensor"):
        dist.all_reduce(np.zeros(2))
    with raises(TypeError, "ReduceOp"):
        dist.all_reduce(tr.zeros(2), op="sum")
    with raises(TypeError, "AVG", "int64"):
        dist.all_reduce(tr.tensor([1, 2]), op=ReduceOp.AVG)
    with raises(ValueError, "tensor_list"):
        dist.all_gather([tr.zeros(2)] * (world + 1), tr.zeros(2))
    with raises(ValueError, "tensor_list[0]"):
        dist.all_gather([tr.zeros(3) for _ in range(world)], tr.zeros(2))
    with raises(ValueError, "group=None"):
        dist.all_reduce(tr.zeros(2), group="world")
    with raises(RuntimeError, "twice"):
        dist.init_process_group()
    if world > 1:  # disagreements between ranks: the same clear error on every rank, no hang
        with raises(ValueError, "all_reduce", "rank 0", "rank 1", "(2,)", "(3,)"):
            dist.all_reduce(tr.zeros(2 if rank == 0 else 3))
        with raises(ValueError, "float32", "float64"):
            dist.all_reduce(tr.zeros(2, dtype=tr.float32 if rank == 0 else tr.float64))
        with raises(ValueError, "MAX", "SUM"):
            dist.all_reduce(tr.zeros(2), op=ReduceOp.MAX if rank == 0 else ReduceOp.SUM)
        with raises(ValueError, "broadcast"):
            dist.broadcast(tr.zeros(2), src=rank)
        with raises(ValueError, "DistributedDataParallel", "rank 1"):
            DistributedDataParallel(nn.Linear(3, 2 + rank))
        t = tr.tensor([1.0])  # and the group still works afterwards
        dist.all_reduce(t)
        assert t.item() == world


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(3, 4, seed=1, dtype=tr.float64)
        self.a = nn.Linear(4, 1, seed=2, dtype=tr.float64)
        self.b = nn.Linear(4, 1, seed=3, dtype=tr.float64)  # used on rank 0 only
        self.c = nn.Linear(4, 1, seed=4, dtype=tr.float64)  # never used

    def forward(self, x, use_b: bool):
        h = self.body(x).tanh()
        return self.a(h) + self.b(h) if use_b else self.a(h)


def check_unused(rank: int, world: int) -> None:
    x = tr.tensor(np.random.default_rng(rank).standard_normal((5, 3)))
    use_b = rank == 0
    # expected: each rank's own gradients, averaged with the plain collective
    plain = TwoHeads()
    plain(x, use_b).sum().backward()
    expect = {}
    for n, p in plain.named_parameters():
        g = tr.zeros(*p.shape, dtype=tr.float64) if p.grad is None else p.grad
        dist.all_reduce(g, op=ReduceOp.AVG)
        expect[n] = g.numpy()
    model = TwoHeads()
    ddp = DistributedDataParallel(model, bucket_cap_mb=1e-4, find_unused_parameters=True)
    for _ in range(2):  # twice: the second pass must not see the first one's state
        model.zero_grad()
        ddp(x, use_b).sum().backward()
        for n, p in model.named_parameters():
            if n.startswith("c."):
                assert p.grad is None, f"{n} is unused on every rank and must keep grad None"
            else:
                assert p.grad is not None and np.allclose(p.grad.numpy(), expect[n], rtol=1e-13, atol=0), n
    # without find_unused_parameters, a parameter left without gradient is a clear error at the next forward
    ddp = DistributedDataParallel(TwoHeads(), bucket_cap_mb=1e-4)
    ddp(x, False).sum().backward()
    with raises(RuntimeError, "find_unused_parameters=True", "b.weight"):
        ddp(x, False)
    # two backward passes through one forward
    ddp = DistributedDataParallel(nn.Linear(3, 1, dtype=tr.float64))
    out = ddp(x)
    out.sum().backward(retain_graph=True)
    with raises(RuntimeError, "twice"):
        out.sum().backward()


def main() -> None:
    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    check_reductions(rank, world)
    check_broadcast_gather(rank, world)
    check_local_rank_and_shards(rank, world)
    check_errors(rank, world)
    check_unused(rank, world)
    dist.barrier()
    if rank == 0:
        print(f"ALL OK world_size={world}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
