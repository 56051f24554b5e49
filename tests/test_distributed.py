"""tinygrad_rnn.distributed and DistributedDataParallel in one process (an MPI world of size 1).

The two-rank behaviour is tested in test_distributed_mpi.py; here: the API without MPI, errors,
bucketing, no_sync, state dicts, and the NCCL path's host-side logic with a stand-in for NCCL.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinygrad_rnn as tr
import tinygrad_rnn.distributed as dist
from tinygrad_rnn import nn, optim
from tinygrad_rnn.backend import nccl as tnccl
from tinygrad_rnn.distributed import ReduceOp
from tinygrad_rnn.nn.parallel import DistributedDataParallel

ROOT = Path(__file__).resolve().parents[1]
needs_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None,
                               reason="needs mpi4py: pip install -e '.[distributed]'")




def test_import_needs_no_mpi_and_init_names_the_extra():
    code = """
import sys
sys.modules["mpi4py"] = None  # as if mpi4py were not installed
import tinygrad_rnn as tr
assert "mpi4py.MPI" not in sys.modules
assert not tr.distributed.is_initialized()
try:
    tr.distributed.init_process_group()
except ImportError as e:
    print("ERR", e)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "pip install -e '.[distributed]'" in out.stdout, out.stdout


def test_local_rank_and_shards_in_one_process(group):
    assert dist.get_local_rank() == 0 and dist.get_local_world_size() == 1
    h, c = tr.randn(1, 4, 3), tr.randn(1, 4, 3)
    assert dist.gather_along((h, c), dim=1) == (h, c)  # nothing to gather: the state itself
    mh, mc = dist.shard_along((h, c), dim=1)
    assert mh is not h and np.array_equal(mh.numpy(), h.numpy()) and np.array_equal(mc.numpy(), c.numpy())


def test_shard_along_without_a_process_group_is_the_whole_state():
    assert not dist.is_initialized()
    s = tr.arange(6).reshape(2, 3)
    assert dist.shard_along(s, dim=0).tolist() == s.tolist() and dist.shard_along(None, dim=0) is None


def test_calls_before_init_raise_clearly():
    assert not dist.is_initialized()
    for call in (dist.get_rank, dist.get_world_size, dist.barrier, lambda: dist.all_reduce(tr.zeros(2)),
                 lambda: dist.broadcast(tr.zeros(2), 0), dist.destroy_process_group):
        with pytest.raises(RuntimeError, match="init_process_group"):
            call()
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedDataParallel(nn.Linear(2, 2))


@needs_mpi
def test_bad_init_arguments():
    with pytest.raises(ValueError, match="backend"):
        dist.init_process_group("gloo")
    with pytest.raises(ValueError, match="world_size=4"):
        dist.init_process_group(world_size=4)
    assert not dist.is_initialized()


@needs_mpi
def test_world_of_one_without_mpiexec(group):
    assert dist.is_initialized() and dist.get_rank() == 0 and dist.get_world_size() == 1
    t = tr.tensor([1.5, -2.0])
    for op in ReduceOp:
        dist.all_reduce(t, op=op)
        assert t.tolist() == [1.5, -2.0]
    dist.broadcast(t, src=0)
    out = [tr.zeros(2)]
    dist.all_gather(out, t)
    assert out[0].tolist() == [1.5, -2.0]
    with pytest.raises(ValueError, match="src=1"):
        dist.broadcast(t, src=1)
    with pytest.raises(RuntimeError, match="twice"):
        dist.init_process_group()
    dist.barrier()


@needs_mpi
def test_excepthook_installed_and_restored():
    before = sys.excepthook
    dist.init_process_group()
    try:
        assert sys.excepthook is not before
    finally:
        dist.destroy_process_group()
    assert sys.excepthook is before
    dist.init_process_group()  # a second init after destroy works (MPI stays initialised)
    dist.destroy_process_group()


def _mlp(seed: int = 0) -> nn.Module:
    return nn.Sequential(nn.Linear(3, 5, seed=seed, dtype=tr.float64), nn.Tanh(),
                         nn.Linear(5, 2, seed=seed + 1, dtype=tr.float64))


@needs_mpi
def test_buckets_reverse_order_and_cap(group):
    model = _mlp()
    ddp = DistributedDataParallel(model, bucket_cap_mb=1e-9)
    assert ddp.bucket_names == [["2.bias"], ["2.weight"], ["0.bias"], ["0.weight"]]
    # float64 bytes: 2.bias 16, 2.weight 80, 0.bias 40, 0.weight 120; filled greedily up to the cap
    ddp = DistributedDataParallel(_mlp(), bucket_cap_mb=136 / 2**20)
    assert ddp.bucket_names == [["2.bias", "2.weight", "0.bias"], ["0.weight"]]
    ddp = DistributedDataParallel(_mlp(), bucket_cap_mb=135 / 2**20)
    assert ddp.bucket_names == [["2.bias", "2.weight"], ["0.bias"], ["0.weight"]]
    assert DistributedDataParallel(_mlp()).bucket_names == [["2.bias", "2.weight", "0.bias", "0.weight"]]
    mixed = nn.Sequential(nn.Linear(3, 5, dtype=tr.float64), nn.Linear(5, 2, dtype=tr.float32))
    assert len(DistributedDataParallel(mixed).bucket_names) == 2  # one dtype per flat buffer
    frozen = _mlp()
    frozen[0].weight.requires_grad_(False)
    assert "0.weight" not in sum(DistributedDataParallel(frozen).bucket_names, [])
    for bad in (0, -1, "25", True):
        with pytest.raises((ValueError, TypeError), match="bucket_cap_mb"):
            DistributedDataParallel(_mlp(), bucket_cap_mb=bad)
    with pytest.raises(TypeError, match="nn.Module"):
        DistributedDataParallel(lambda x: x)


@needs_mpi
@pytest.mark.parametrize("cap", [1e-9, 25])
def test_ddp_of_one_rank_trains_like_the_plain_model(group, cap):
    rng = np.random.default_rng(0)
    xs = [tr.tensor(rng.standard_normal((4, 3))) for _ in range(3)]
    plain, wrapped = _mlp(), _mlp()
    ddp = DistributedDataParallel(wrapped, bucket_cap_mb=cap)
    for model, fwd in ((plain, plain), (wrapped, ddp)):
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for x in xs:
            opt.zero_grad()
            fwd(x).pow(2).sum().backward()
            opt.step()
    for a, b in zip(plain.parameters(), wrapped.parameters()):
        assert np.array_equal(a.numpy(), b.numpy())


@needs_mpi
def test_no_sync_accumulates_and_the_next_pass_reduces(group):
    x0, x1 = tr.tensor(np.ones((2, 3))), tr.tensor(np.full((2, 3), 2.0))
    ref = _mlp()
    ref(x0).sum().backward()
    ref(x1).sum().backward()
    model = _mlp()
    ddp = DistributedDataParallel(model)
    ddp.events = []
    with ddp.no_sync():
        ddp(x0).sum().backward()
    assert ddp.events == []  # nothing was sent for the accumulation pass
    ddp(x1).sum().backward()
    assert ("launch", 0) in ddp.events
    for a, b in zip(ref.parameters(), model.parameters()):
        assert np.allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-15, atol=0)


@needs_mpi
def test_state_dict_has_the_module_prefix_and_the_wrapped_module_stays_plain(group):
    model = _mlp()
    ddp = DistributedDataParallel(model)
    assert list(ddp.state_dict()) == ["module." + k for k in model.state_dict()]
    plain = _mlp(seed=5)
    plain.load_state_dict(ddp.module.state_dict())
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(plain.parameters(), model.parameters()))
    assert [p is q for p, q in zip(ddp.parameters(), model.parameters())] == [True] * 4


@needs_mpi
def test_unused_parameter_is_a_clear_error_or_handled(group):
    class Partly(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(3, 1, dtype=tr.float64)
            self.unused = nn.Linear(3, 1, dtype=tr.float64)

        def forward(self, x):
            return self.used(x)

    x = tr.tensor(np.ones((2, 3)))
    ddp = DistributedDataParallel(Partly(), bucket_cap_mb=1e-9)
    ddp(x).sum().backward()
    with pytest.raises(RuntimeError, match="find_unused_parameters=True"):
        ddp(x)
    model = Partly()
    ddp = DistributedDataParallel(model, bucket_cap_mb=1e-9, find_unused_parameters=True)
    for _ in range(2):
        model.zero_grad()
        ddp(x).sum().backward()
        assert model.used.weight.grad is not None and model.unused.weight.grad is None


@needs_mpi
def test_forward_without_grad_or_backward_arms_nothing(group):
    model = _mlp()
    ddp = DistributedDataParallel(model)
    with tr.no_grad():
        ddp(tr.tensor(np.ones((1, 3))))
    ddp(tr.tensor(np.ones((1, 3))))  # a forward whose graph is dropped: the next one is fine
    ddp(tr.tensor(np.ones((1, 3)))).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# -- the NCCL path's host-side logic, with a stand-in for cupy.cuda.nccl -------------------------------


class FakeNccl:
    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_INT32, NCCL_INT64, NCCL_UINT8 = 7, 8, 2, 4, 1
    NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN = 0, 1, 2, 3
    made: list = []

    @staticmethod
    def get_unique_id():
        return (1, 2, 3)

    class NcclCommunicator:
        def __init__(self, size, uid, rank):
            FakeNccl.made.append((size, uid, rank))


def test_nccl_dtype_and_op_mapping():
    assert tnccl.nccl_dtype(FakeNccl, np.dtype(np.float32)) == FakeNccl.NCCL_FLOAT32
    assert tnccl.nccl_dtype(FakeNccl, np.dtype(np.float64)) == FakeNccl.NCCL_FLOAT64
    assert tnccl.nccl_dtype(FakeNccl, np.dtype(np.int64)) == FakeNccl.NCCL_INT64
    assert tnccl.nccl_dtype(FakeNccl, np.dtype(np.bool_)) == FakeNccl.NCCL_UINT8
    with pytest.raises(TypeError, match="float16"):
        tnccl.nccl_dtype(FakeNccl, np.dtype(np.float16))
    f64 = np.dtype(np.float64)
    assert tnccl.nccl_op(FakeNccl, ReduceOp.SUM, f64) == FakeNccl.NCCL_SUM
    assert tnccl.nccl_op(FakeNccl, ReduceOp.AVG, f64) == FakeNccl.NCCL_SUM  # divided afterwards
    assert tnccl.nccl_op(FakeNccl, ReduceOp.PRODUCT, f64) == FakeNccl.NCCL_PROD
    assert tnccl.nccl_op(FakeNccl, ReduceOp.MIN, f64) == FakeNccl.NCCL_MIN
    assert tnccl.nccl_op(FakeNccl, ReduceOp.SUM, np.dtype(np.bool_)) == FakeNccl.NCCL_MAX  # any
    assert tnccl.nccl_op(FakeNccl, ReduceOp.PRODUCT, np.dtype(np.bool_)) == FakeNccl.NCCL_MIN  # all


@needs_mpi
def test_nccl_clique_gets_rank_0s_id_over_mpi_once(group):
    g = dist.core._get_group()
    FakeNccl.made = []
    mod, comm = tnccl.clique(g, FakeNccl)
    assert mod is FakeNccl and FakeNccl.made == [(1, (1, 2, 3), 0)]
    assert tnccl.clique(g, FakeNccl)[1] is comm and len(FakeNccl.made) == 1  # cached
    g.nccl = None


@needs_mpi
def test_second_backward_through_one_forward_raises(group):
    # regression: once the buckets were finished the hooks went quiet, so a second backward added
    # gradients that no rank averaged, silently
    ddp = DistributedDataParallel(_mlp())
    out = ddp(tr.tensor(np.ones((2, 3))))
    out.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        out.sum().backward()
    ddp(tr.tensor(np.ones((2, 3)))).sum().backward()  # the next iteration starts clean
