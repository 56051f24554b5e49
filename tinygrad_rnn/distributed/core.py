"""The process group and the collectives: MPI for host arrays, NCCL (``backend/nccl.py``) for GPU arrays.

One process group, the MPI world (``MPI.COMM_WORLD``, duplicated so that our messages never mix
with a user's own MPI traffic). Every collective on it -- the public ones, ``barrier`` included,
each gradient bucket of ``DistributedDataParallel`` (with its step counter and which parameters
got gradients), ``join()``'s rounds, and a rank's exit -- first checks, with one tiny all-reduce,
that all ranks are doing the same thing: a mismatch raises the same ValueError on every rank
instead of corrupting memory or hanging. Since every data transfer follows a matched check, a
rank that reaches a different collective (or leaves) is always met by a check, never by data.

A rank that leaves the job ends it, whatever the way out: an uncaught exception aborts at once
(the excepthook); ``sys.exit`` or the end of the script run an exit hook that aborts when this
rank still has DDP work pending, and otherwise takes part in an "exit" check, so a rank still
calling collectives gets the error instead of waiting for ever.

    >>> import tinygrad_rnn as tr
    >>> tr.distributed.ReduceOp.SUM.name
    'SUM'
"""
from __future__ import annotations

import atexit
import enum
import sys
import time
import traceback
import weakref
import zlib
from typing import Any, Callable

import numpy as np

from .. import _checks
from ..tensor import Tensor

__all__ = ["ReduceOp", "Work", "init_process_group", "destroy_process_group", "is_available", "is_initialized",
           "get_rank", "get_world_size", "get_local_rank", "get_local_world_size", "barrier", "all_reduce", "broadcast",
           "all_gather"]

_INSTALL_HINT = "pip install -e '.[distributed]' (from a checkout) or pip install 'tinygrad_rnn[distributed]'"
_NOT_INIT = ("Default process group has not been initialized, please make sure to call init_process_group "
             "(tinygrad_rnn.distributed.init_process_group())")


class ReduceOp(enum.Enum):
    """How :func:`all_reduce` combines the ranks' values (``ReduceOp.SUM`` is the default)."""

    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"


class _Group:
    """The state of the one process group: the communicator, rank, size and the NCCL clique."""

    def __init__(self, mpi: Any, comm: Any):
        self.MPI = mpi
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        # the ranks that share this node (and its cores and GPUs): one split, at init, on every rank
        local = comm.Split_type(mpi.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self.nccl: Any = None  # created on the first collective on a GPU tensor
        self.prev_excepthook: Callable | None = None
        self.ddps: list[weakref.ref] = []  # the DistributedDataParallel wrappers: their pending work, at exit
        self.models = 0  # how many DDP wrappers were built (construction is collective: the same on all ranks)

    def live_ddps(self) -> list[Any]:
        alive = [m for m in (r() for r in self.ddps) if m is not None]
        self.ddps = [weakref.ref(m) for m in alive]
        return alive


_group: _Group | None = None


def _import_mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as e:  # no mpi4py, or mpi4py without an MPI library under it
        raise ImportError(
            f"tinygrad_rnn.distributed needs mpi4py and an MPI library ({e}); install the extra: {_INSTALL_HINT}") from e
    return MPI


def is_available() -> bool:
    """True when mpi4py can be imported (does not initialise MPI if it is not yet)."""
    import importlib.util

    return importlib.util.find_spec("mpi4py") is not None


def is_initialized() -> bool:
    """True between :func:`init_process_group` and :func:`destroy_process_group`."""
    return _group is not None


def _get_group() -> _Group:
    if _group is None:
        raise RuntimeError(_NOT_INIT)
    return _group


def _comm() -> Any:
    """The communicator of the process group (for ``nn.parallel``; users call the collectives)."""
    return _get_group().comm


def init_process_group(backend: str = "mpi", *, world_size: int = -1, rank: int = -1, **unused: Any) -> None:
    """Join the world of processes that ``mpiexec``/``srun`` started (size 1 under plain ``python``).

    Installs an excepthook: an uncaught exception on any rank prints its traceback, every line
    prefixed ``[rank r]``, then aborts the whole job (``MPI.COMM_WORLD.Abort``) so that no other
    rank waits forever in a collective. GPU tensors are reduced through NCCL, one GPU per rank
    (the rank's index among the ranks on its node picks the GPU).

        >>> import tinygrad_rnn.distributed as dist
        >>> dist.init_process_group("mpi"); dist.get_world_size() >= 1
        True
    """
    global _group
    if backend != "mpi":
        raise ValueError(f"backend {backend!r} is not supported: use backend='mpi' (GPU tensors use NCCL automatically)")
    if unused.get("init_method") not in (None, "env://"):
        raise ValueError("init_method is not used: mpiexec/srun tell each process its rank; leave it out")
    if _group is not None:
        raise RuntimeError("trying to initialize the default process group twice!")
    MPI = _import_mpi()
    group = _Group(MPI, MPI.COMM_WORLD.Dup())
    for name, given, actual in (("world_size", world_size, group.size), ("rank", rank, group.rank)):
        if given not in (-1, None) and given != actual:
            group.comm.Free()
            raise ValueError(f"{name}={given} was given but MPI started this process with {name}={actual}; "
                             "launch with mpiexec -n N (or leave the argument out)")
    group.prev_excepthook = sys.excepthook
    sys.excepthook = _abort_on_uncaught
    atexit.register(_leave_at_exit)  # runs before mpi4py's MPI_Finalize (registered earlier, atexit is LIFO)
    _group = group
    _pick_gpu(group)


def destroy_process_group() -> None:
    """Leave the process group (MPI itself stays initialised until exit, so you may init again).

    A collective, like the exit it stands for: every rank calls it, and a rank still calling other
    collectives gets a ValueError naming this one instead of waiting for ever.
    """
    global _group
    group = _get_group()
    _check_pending_work(group)
    _leave(group)
    if sys.excepthook is _abort_on_uncaught:
        sys.excepthook = group.prev_excepthook or sys.__excepthook__
    atexit.unregister(_leave_at_exit)
    group.comm.Free()
    _group = None


_EXIT = ("exit", "this rank has left (end of the script, sys.exit or destroy_process_group)")


def _leave(group: _Group) -> None:
    """The "exit" agreement: matches the other ranks' exits, and meets a rank still in a collective
    with the error. Polled with sleeps, not spun: a rank that finished first waits idle for the others."""
    _same_on_all_ranks(group, "exit", _EXIT, poll=True)


def _check_pending_work(group: _Group) -> None:
    """Raise when this rank leaves with a DistributedDataParallel gradient all-reduce unfinished."""
    for ddp in group.live_ddps():
        ddp._flush_incomplete("leaving the job")


def _leave_at_exit() -> None:
    """atexit: a rank that ends (normally or by sys.exit) without destroy_process_group() checks out
    with the others; pending work or a rank still calling collectives aborts the whole job."""
    group = _group
    if group is None or group.size == 1 or group.MPI.Is_finalized():  # the user finalised MPI: nothing to match
        return
    try:
        _check_pending_work(group)
        _leave(group)
    except BaseException as e:  # noqa: BLE001 - at exit the only safe reaction is to end every rank
        _report_and_abort(group, f"{type(e).__name__}: {e}\n", "left the job with collectives pending")


def _abort_on_uncaught(exc_type: Any, exc: BaseException, tb: Any) -> None:
    """sys.excepthook: print the error with the rank first, then end every rank of the job."""
    group = _group
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    _report_and_abort(group, text, "raised")


def _report_and_abort(group: _Group | None, text: str, why: str) -> None:
    rank = group.rank if group is not None else "?"
    sys.stderr.write("".join(f"[rank {rank}] {line}\n" for line in text.rstrip("\n").split("\n")))
    sys.stderr.write(f"[rank {rank}] {why}: aborting all ranks (MPI.COMM_WORLD.Abort)\n")
    sys.stderr.flush()
    if group is not None:
        # Abort tears the job down at once: give mpiexec a moment to forward what this rank just wrote
        # (and the other ranks theirs), or the message that explains the abort can be lost
        time.sleep(0.3)
        group.MPI.COMM_WORLD.Abort(1)


def _pick_gpu(group: _Group) -> None:
    """One GPU per rank: the i-th rank on a node takes GPU i (mod the count), before any GPU use."""
    from ..backend.cuda import gpu_count, use_gpu

    n = gpu_count()
    if n:  # without a GPU the CPU path needs nothing here
        use_gpu(group.local_rank % n, f"this rank (local rank {group.local_rank})")


def get_rank() -> int:
    """This process's rank, 0 .. world_size - 1."""
    return _get_group().rank


def get_world_size() -> int:
    """How many processes take part."""
    return _get_group().size


def get_local_rank() -> int:
    """This process's index among the ranks on its node (picks its GPU; 0 in a single process)."""
    return _get_group().local_rank


def get_local_world_size() -> int:
    """How many ranks run on this process's node (they share its cores: divide the threads by this)."""
    return _get_group().local_size


def barrier() -> None:
    """Wait until every rank has called ``barrier()`` (a rank in another collective: ValueError on all)."""
    g = _get_group()
    _before_collective(g)
    _same_on_all_ranks(g, "barrier", ("barrier",))  # an all-reduce: every rank has arrived when it returns


class Work:
    """Handle of an ``async_op=True`` collective: ``wait()`` finishes it (the tensor is then final)."""

    def __init__(self, request: Any = None, finish: Callable[[], None] | None = None):
        self._request = request
        self._finish = finish
        self._done = False

    def wait(self) -> bool:
        if not self._done:
            if self._request is not None:
                self._request.Wait()
            if self._finish is not None:
                self._finish()
            self._done = True
        return True

    def is_completed(self) -> bool:
        return self._done


# -- argument checks -----------------------------------------------------------------------------------


def _check_tensor(name: str, t: Any) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tinygrad_rnn Tensor, got {type(t).__name__}")
    return t


def _check_group_arg(group: Any) -> None:
    if group is not None:
        raise ValueError("only the default process group (group=None) is supported")


def _same_on_all_ranks(g: _Group, what: str, desc: tuple, poll: bool = False) -> None:
    """Raise the same ValueError on every rank unless all ranks passed the same ``desc``.

    ``desc[0]`` names the collective. ``poll`` waits with short sleeps instead of MPI's busy wait."""
    if g.size == 1:
        return
    h = zlib.crc32(repr(desc).encode())
    sig = np.array([h, -h], dtype=np.int64)
    # [max, -min] in one message; always non-blocking, as MPI never matches a blocking collective with
    # a non-blocking one (the polled exit check must meet the others' checks)
    req = g.comm.Iallreduce(g.MPI.IN_PLACE, sig, op=g.MPI.MAX)
    if poll:
        while not req.Test():
            time.sleep(0.002)
    else:
        req.Wait()
    if sig[0] == h and -sig[1] == h:
        return
    every = g.comm.allgather(desc)  # small metadata only, to name the culprit
    lines = "; ".join(f"rank {r}: {d}" for r, d in enumerate(every))
    hint = _mismatch_hint(every)
    raise ValueError(f"{what} on rank {g.rank}: the ranks called different collectives or gave different arguments "
                     f"(collective, shape, dtype, device, op/root): "
                     f"{lines}{hint}")


def _mismatch_hint(every: list[tuple]) -> str:
    """What usually causes the disagreement seen, in one sentence."""
    kinds = {d[0] for d in every}
    ddp = [d for d in every if d[0] == _DDP_KIND]
    left = [r for r, d in enumerate(every) if d[0] == "exit"]
    if left:
        who = ", ".join(str(r) for r in left)
        more = " With uneven inputs wrap the training loop in `with ddp.join():`." if ddp or _JOIN_KIND in kinds else ""
        return (f". Rank(s) {who} left the job (end of script, sys.exit or destroy_process_group) while the others "
                f"still called a collective: every rank must make the same collective calls.{more}")
    if len(ddp) == len(every) and len({d[2] for d in ddp}) > 1:
        return (". The ranks are at different DistributedDataParallel steps: a rank skipped a backward() after a "
                "forward (or ran an extra forward with grad enabled: evaluate under tr.no_grad() or through "
                "ddp.module). Skip a batch on every rank or on none.")
    if len(ddp) == len(every) and len({d[4] for d in ddp}) > 1:
        return (". Some parameters got no gradient on some ranks in this backward: pass find_unused_parameters=True "
                "to DistributedDataParallel if parameters legitimately take no part in some passes.")
    if ddp or _JOIN_KIND in kinds:
        return (". A rank called another collective while the others averaged DistributedDataParallel gradients: "
                "a backward() (or one parameter's gradient) is missing on some rank, or a collective was called on "
                "one rank only (inside join(), only DDP's own all-reduces are matched for ranks out of inputs).")
    return ""


_DDP_KIND = "DistributedDataParallel gradient all-reduce"
_JOIN_KIND = "DistributedDataParallel.join() round"


def _before_collective(g: _Group) -> None:
    """A DDP backward left unfinished on this rank (a parameter without gradient) would meet this
    collective's check with its own: say so on every rank first, naming the parameters."""
    if g.size > 1:
        for ddp in g.live_ddps():
            ddp._flush_incomplete("a collective was called")


def _describe(kind: str, t: Tensor, extra: Any) -> tuple:
    return (kind, tuple(t.shape), str(t.dtype), t.device, extra)


def _host_buffer(t: Tensor) -> tuple[np.ndarray, bool]:
    """A C-contiguous array over the tensor's values and whether it must be copied back."""
    a = t._data
    if not isinstance(a, np.ndarray):  # a 0-d result held as a NumPy scalar (a reduction's loss): immutable
        return np.array(a), True
    if a.flags.c_contiguous and a.flags.writeable:
        return a, False
    return np.ascontiguousarray(a), True


def _write_back(t: Tensor, buf: np.ndarray) -> None:
    if isinstance(t._data, np.ndarray):
        t._data[...] = buf
    else:
        t._data = buf.reshape(())


def _mpi_op(g: _Group, op: ReduceOp, dtype: np.dtype) -> Any:
    M = g.MPI
    if dtype == np.bool_:  # MPI reduces booleans only logically: sum/max = any, product/min = all
        return M.LOR if op in (ReduceOp.SUM, ReduceOp.MAX) else M.LAND
    return {ReduceOp.SUM: M.SUM, ReduceOp.AVG: M.SUM, ReduceOp.PRODUCT: M.PROD, ReduceOp.MIN: M.MIN,
            ReduceOp.MAX: M.MAX}[op]


def _check_op(op: Any, t: Tensor) -> ReduceOp:
    if not isinstance(op, ReduceOp):
        raise TypeError(f"op must be a tinygrad_rnn.distributed.ReduceOp (e.g. ReduceOp.SUM), got {op!r}")
    if op is ReduceOp.AVG and t.dtype.kind != "f":
        raise TypeError(f"ReduceOp.AVG needs a float tensor, got dtype {t.dtype}")
    return op


# -- collectives -------------------------------------------------------------------------------------


def all_reduce(tensor: Tensor, op: ReduceOp = ReduceOp.SUM, group: Any = None, async_op: bool = False) -> Work | None:
    """Combine ``tensor`` over all ranks, in place: every rank ends with the same result.

        >>> t = tr.tensor([1.0, 2.0]); dist.all_reduce(t, op=dist.ReduceOp.SUM)  # [W, 2W] on W ranks
    """
    _check_group_arg(group)
    t = _check_tensor("all_reduce: tensor", tensor)
    op = _check_op(op, t)
    g = _get_group()
    _before_collective(g)
    _same_on_all_ranks(g, "all_reduce", _describe("all_reduce", t, op.name))
    if t._be.is_device:
        from ..backend.nccl import nccl_all_reduce

        nccl_all_reduce(g, t._data, op)
        if op is ReduceOp.AVG:
            t._data /= g.size
        t._bump_version()
        return Work() if async_op else None
    buf, copy_back = _host_buffer(t)

    def finish() -> None:
        if op is ReduceOp.AVG:
            np.divide(buf, g.size, out=buf)
        if copy_back:
            _write_back(t, buf)
        t._bump_version()

    mop = _mpi_op(g, op, t.dtype)
    if async_op:
        return Work(g.comm.Iallreduce(g.MPI.IN_PLACE, buf, op=mop), finish)
    g.comm.Allreduce(g.MPI.IN_PLACE, buf, op=mop)
    finish()
    return None


def _check_src(src: Any, g: _Group) -> int:
    _checks.integer("broadcast: src", src)
    if not 0 <= src < g.size:
        raise ValueError(f"broadcast: src={src} is not a rank of this world of size {g.size} (ranks 0..{g.size - 1})")
    return int(src)


def broadcast(tensor: Tensor, src: int, group: Any = None, async_op: bool = False) -> Work | None:
    """Copy rank ``src``'s values into ``tensor`` on every rank, in place.

        >>> w = tr.randn(3); dist.broadcast(w, src=0)  # now equal everywhere
    """
    _check_group_arg(group)
    t = _check_tensor("broadcast: tensor", tensor)
    g = _get_group()
    src = _check_src(src, g)
    _before_collective(g)
    _same_on_all_ranks(g, "broadcast", _describe("broadcast", t, src))
    if t._be.is_device:
        from ..backend.nccl import nccl_broadcast

        nccl_broadcast(g, t._data, src)
        t._bump_version()
        return Work() if async_op else None
    buf, copy_back = _host_buffer(t)

    def finish() -> None:
        if copy_back:
            _write_back(t, buf)
        t._bump_version()

    if async_op:
        return Work(g.comm.Ibcast(buf, root=src), finish)
    g.comm.Bcast(buf, root=src)
    finish()
    return None


def all_gather(tensor_list: list[Tensor], tensor: Tensor, group: Any = None, async_op: bool = False) -> Work | None:
    """Fill ``tensor_list[r]`` with rank r's ``tensor`` on every rank (PyTorch's argument order).

        >>> out = [tr.zeros(2) for _ in range(dist.get_world_size())]; dist.all_gather(out, tr.ones(2))
    """
    _check_group_arg(group)
    t = _check_tensor("all_gather: tensor", tensor)
    g = _get_group()
    if not isinstance(tensor_list, (list, tuple)) or len(tensor_list) != g.size:
        n = len(tensor_list) if isinstance(tensor_list, (list, tuple)) else type(tensor_list).__name__
        raise ValueError(f"all_gather: tensor_list must be a list of world_size={g.size} tensors, got {n}")
    for i, o in enumerate(tensor_list):
        _check_tensor(f"all_gather: tensor_list[{i}]", o)
        if o.shape != t.shape or o.dtype != t.dtype or o.device != t.device:
            raise ValueError(f"all_gather: tensor_list[{i}] is {o.shape} {o.dtype} on {o.device} but tensor is "
                             f"{t.shape} {t.dtype} on {t.device}; every entry must match it")
    _before_collective(g)
    _same_on_all_ranks(g, "all_gather", _describe("all_gather", t, None))
    if t._be.is_device:
        from ..backend.nccl import nccl_all_gather

        gathered = nccl_all_gather(g, t._data)
        for i, o in enumerate(tensor_list):
            o._data[...] = gathered[i]
            o._bump_version()
        return Work() if async_op else None
    send = np.ascontiguousarray(t._data)
    recv = np.empty((g.size, *t.shape), dtype=t.dtype)

    def finish() -> None:
        for i, o in enumerate(tensor_list):
            o._data[...] = recv[i]
            o._bump_version()

    if async_op:
        return Work(g.comm.Iallgather(send, recv), finish)
    g.comm.Allgather(send, recv)
    finish()
    return None

