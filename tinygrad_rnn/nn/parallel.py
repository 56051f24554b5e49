"""``DistributedDataParallel``: every rank trains a replica; gradients are averaged during backward.

How it works (PyTorch's design, on the engine's post-accumulate-grad hooks):

* At construction the ranks check that they hold the same parameters (names, shapes, dtypes,
  devices) and copy rank 0's values into every replica, so ranks may start from different seeds.
* The trainable parameters are packed, in **reverse** registration order (the order in which
  backward usually finishes them), into buckets of at most ``bucket_cap_mb`` MiB of one dtype and
  device, each with one flat, contiguous buffer.
* When a parameter's ``.grad`` is final for the pass its hook copies it into its bucket; when a
  bucket is full its non-blocking all-reduce (``MPI Iallreduce``, or NCCL on the GPU) starts at
  once, while backward goes on computing the other gradients. Buckets start strictly in bucket
  order on every rank, as MPI requires of collectives.
* When the last bucket has started, the hook waits for all of them and writes the averages back
  into the parameters' ``.grad`` — so when ``loss.backward()`` returns, every rank holds the same,
  averaged gradients and the optimizer needs no change.
* Every bucket's all-reduce is preceded by the process group's agreement check, whose message
  holds the step (forwards with grad enabled so far) and which parameters got gradients: a rank
  that skipped a backward, or one whose backward left a parameter without gradient, meets the
  others' check with a different message and every rank raises a ValueError naming each rank's
  step and parameters -- instead of averaging gradients of different steps, or hanging.
* Parameters that get no gradient in a pass would leave their bucket waiting forever. With
  ``find_unused_parameters=True`` the forward pass walks the graph from the outputs (the engine's
  own topological walk, the one backward takes) and marks the parameters it cannot reach as ready
  (their slot holds zeros). Without it, a pass that left buckets unfinished is reported on every
  rank at this rank's next forward, next collective or exit, whichever comes first.
* ``join()`` (PyTorch's name and meaning) lets ranks run different numbers of steps: a rank out of
  inputs shadows the others' gradient all-reduces with zeros until every rank has joined.

``state_dict()`` of the wrapper has PyTorch's ``"module."`` prefix (the wrapped model is its
child ``module``); save ``ddp.module.state_dict()`` to get the plain keys that load into an
unwrapped model. This library's modules have no buffers (no running statistics): all state is
parameters.

    >>> import tinygrad_rnn as tr; tr.distributed.init_process_group()
    >>> model = tr.nn.parallel.DistributedDataParallel(tr.nn.Linear(4, 2))
    >>> model(tr.randn(3, 4)).sum().backward()  # .grad now averaged over all ranks
"""
from __future__ import annotations

import contextlib
import time
import weakref
from typing import Any, Iterator

import numpy as np

from .. import _checks
from .. import distributed as dist
from ..distributed import core as _core
from ..tensor import Tensor, _topological_order, is_grad_enabled
from .module import Module

__all__ = ["DistributedDataParallel"]


class _Bucket:
    """Parameters whose gradients travel in one all-reduce, and their flat buffer."""

    def __init__(self, index: int, params: list[Tensor], names: list[str]):
        self.index = index
        self.params = params
        self.names = names
        self.offsets: list[int] = []
        n = 0
        for p in params:
            self.offsets.append(n)
            n += p.numel()
        self.numel = n
        self.nbytes = n * params[0].dtype.itemsize
        self.be = params[0]._be
        self.flat = params[0]._be.xp.empty(n, dtype=params[0].dtype)
        self.ready: set[int] = set()  # indices of the parameters whose slot holds this pass's gradient
        self.request: Any = None

    @property
    def full(self) -> bool:
        return len(self.ready) == len(self.params)

    def slot(self, i: int) -> Any:
        p = self.params[i]
        return self.flat[self.offsets[i]:self.offsets[i] + p.numel()]


class DistributedDataParallel(Module):
    """Wrap ``module`` so that ``loss.backward()`` leaves gradients averaged over all ranks.

    Arguments are PyTorch's: ``bucket_cap_mb`` (bucket size in MiB), ``find_unused_parameters``
    (allow parameters that get no gradient in some passes); ``device_ids`` and ``broadcast_buffers``
    are accepted and unused (the GPU is chosen per rank by ``init_process_group``; there are no
    buffers). Call ``tr.distributed.init_process_group()`` first. ``forward`` delegates to
    the module; ``no_sync()`` accumulates gradients locally (e.g. over micro-batches) and the next
    synchronised backward averages the sum; ``join()`` lets ranks run different numbers of steps.
    A rank that skipped a backward, or whose backward left a parameter without gradient, makes every
    rank raise a ValueError naming each rank's step and parameters (forwards with grad enabled count
    as steps: evaluate under ``tr.no_grad()`` or through ``ddp.module``).

        >>> ddp = DistributedDataParallel(tr.nn.LSTM(8, 16), bucket_cap_mb=25)
        >>> out, _ = ddp(tr.randn(5, 2, 8)); out.sum().backward()
    """

    def __init__(self, module: Module, device_ids: Any = None, bucket_cap_mb: float = 25,
                 find_unused_parameters: bool = False, broadcast_buffers: bool = True):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps an nn.Module, got {type(module).__name__}")
        _checks.positive_number("bucket_cap_mb", bucket_cap_mb)
        if not dist.is_initialized():
            raise RuntimeError("DistributedDataParallel needs the process group: call "
                               "tinygrad_rnn.distributed.init_process_group() first")
        self.module = module
        group = _core._get_group()
        object.__setattr__(self, "_group", group)
        named = list(module.named_parameters())
        _core._same_on_all_ranks(group, "DistributedDataParallel (the replicas' parameters)",
                                 tuple((n, p.shape, str(p.dtype), p.device) for n, p in named))
        self._broadcast_parameters([p for _, p in named])
        trainable = [(n, p) for n, p in named if p.requires_grad]
        if not trainable:
            raise ValueError("DistributedDataParallel: the module has no parameter that requires grad")
        object.__setattr__(self, "bucket_cap_mb", bucket_cap_mb)
        object.__setattr__(self, "find_unused_parameters", bool(find_unused_parameters))
        object.__setattr__(self, "_buckets", self._make_buckets(trainable, int(bucket_cap_mb * 1024 * 1024)))
        object.__setattr__(self, "_where", {id(p): (b, i) for b in self._buckets for i, p in enumerate(b.params)})
        object.__setattr__(self, "_names", {id(p): n for n, p in trainable})
        object.__setattr__(self, "_handles", [p.register_post_accumulate_grad_hook(self._grad_ready)
                                              for _, p in trainable])
        object.__setattr__(self, "_sync", True)  # False inside no_sync()
        object.__setattr__(self, "_armed", False)  # a synchronised backward is expected
        object.__setattr__(self, "_locally_unused", set())
        object.__setattr__(self, "_unused_pending", False)
        object.__setattr__(self, "_next_launch", 0)
        object.__setattr__(self, "_step", 0)  # forwards that armed a synchronised backward (the agreement's step)
        object.__setattr__(self, "_join", None)  # join()'s options while inside it
        object.__setattr__(self, "_n_active", group.size)  # ranks not yet joined, in this pass
        object.__setattr__(self, "_tag", group.models)  # which wrapper: the same on every rank (construction is collective)
        group.models += 1
        group.ddps.append(weakref.ref(self))
        object.__setattr__(self, "comm_wait_seconds", 0.0)  # time spent blocked in Wait (for benchmarks)
        object.__setattr__(self, "events", None)  # set to a list to record ("ready", name)/("launch", i)

    # -- construction ---------------------------------------------------------------------------
    def _broadcast_parameters(self, params: list[Tensor]) -> None:
        if self._group.size == 1:
            return
        for p in params:  # rank 0's values everywhere: replicas may have been initialised from other seeds
            dist.broadcast(p, src=0)

    @staticmethod
    def _make_buckets(trainable: list[tuple[str, Tensor]], cap_bytes: int) -> list[_Bucket]:
        buckets: list[_Bucket] = []
        cur: list[tuple[str, Tensor]] = []
        size = 0
        for name, p in reversed(trainable):  # reverse order: the last layers' gradients are final first
            nbytes = p.numel() * p.dtype.itemsize
            if cur and (size + nbytes > cap_bytes or p.dtype != cur[0][1].dtype or p._be is not cur[0][1]._be):
                buckets.append(_Bucket(len(buckets), [q for _, q in cur], [n for n, _ in cur]))
                cur, size = [], 0
            cur.append((name, p))
            size += nbytes
        buckets.append(_Bucket(len(buckets), [q for _, q in cur], [n for n, _ in cur]))
        return buckets

    @property
    def bucket_names(self) -> list[list[str]]:
        """Parameter names per bucket, in the order the buckets are reduced."""
        return [list(b.names) for b in self._buckets]

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self._flush_incomplete("the next forward")
        if not (is_grad_enabled() and self._sync):
            object.__setattr__(self, "_armed", False)
            return self.module(*args, **kwargs)
        self._reset()
        object.__setattr__(self, "_armed", True)
        object.__setattr__(self, "_step", self._step + 1)
        out = self.module(*args, **kwargs)
        if self.find_unused_parameters:
            reached = _reachable_leaves(out)
            object.__setattr__(self, "_locally_unused", {k for k in self._where if k not in reached})
            object.__setattr__(self, "_unused_pending", bool(self._locally_unused))
        return out

    def _bucket_desc(self, k: int, missing: list[str], step: int | None = None) -> tuple:
        """The agreement message of bucket ``k``'s all-reduce: model, step, bucket, which parameters got gradients."""
        got = ("all parameters have gradients" if not missing else
               f"no gradient for {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}")
        return (_core._DDP_KIND, f"model {self._tag}", f"step {self._step if step is None else step}",
                f"bucket {k + 1} of {len(self._buckets)}", got)

    def _agree(self, desc: tuple) -> None:
        """The group's agreement check; on a disagreement this pass is abandoned cleanly on every rank."""
        try:
            _core._same_on_all_ranks(self._group, desc[0], desc)
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        self._reset()
        object.__setattr__(self, "_armed", False)

    def _flush_incomplete(self, why: str) -> None:
        """This rank's last backward left parameters without gradient (buckets unfinished): tell every rank.

        The first unfinished bucket's agreement goes out naming the parameters that got no gradient; a rank
        waiting in that bucket's all-reduce (its backward had them all) then raises the same ValueError. When
        every rank misses the same ones, each raises the RuntimeError below (PyTorch's advice)."""
        done = sum(len(b.ready) for b in self._buckets)
        if not (self._armed and 0 < done < len(self._where)):
            return
        missing = [self._names[id(p)] for b in self._buckets for i, p in enumerate(b.params) if i not in b.ready]
        if self._group.size > 1:
            k = self._next_launch  # the first bucket not launched: where the other ranks may be waiting
            b = self._buckets[k]
            self._agree(self._bucket_desc(k, [b.names[i] for i in range(len(b.params)) if i not in b.ready]))
        self._abandon()
        raise RuntimeError(
            "DistributedDataParallel: the previous backward pass did not produce gradients for "
            f"{len(missing)} parameter(s) ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}), so their "
            "gradients were not averaged across ranks. Pass find_unused_parameters=True if some parameters "
            f"legitimately take no part in the loss, or make sure every output of forward() feeds the loss "
            f"(found when {why}, on rank {self._group.rank}).")

    def _reset(self) -> None:
        for b in self._buckets:
            if b.request is not None:  # a launched but never finished bucket (an aborted pass): drain it
                b.request.Wait()
            b.ready.clear()
            b.request = None
        object.__setattr__(self, "_locally_unused", set())
        object.__setattr__(self, "_unused_pending", False)
        object.__setattr__(self, "_next_launch", 0)

    # -- gradient accumulation without synchronising ----------------------------------------------------
    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward passes inside accumulate ``.grad`` locally; the first synchronised one averages the sum.

            >>> with ddp.no_sync(): loss_fn(ddp(x0)).backward()
            >>> loss_fn(ddp(x1)).backward()  # .grad = average over ranks of (g0 + g1)
        """
        prev = self._sync
        object.__setattr__(self, "_sync", False)
        try:
            yield
        finally:
            object.__setattr__(self, "_sync", prev)

    # -- the hook ------------------------------------------------------------------------------------
    def _grad_ready(self, p: Tensor) -> None:
        if not self._armed:
            return
        key = id(p)
        b, i = self._where[key]
        if i in b.ready:
            raise RuntimeError(
                f"DistributedDataParallel: parameter {self._names[key]} got its gradient twice in one iteration "
                "(a second backward() through the same forward?). Run one backward per forward, or use no_sync() "
                "for all but the last")
        if self._unused_pending:  # the first gradient of the pass: the unreachable parameters are ready now
            object.__setattr__(self, "_unused_pending", False)
            for k in self._locally_unused:
                ub, ui = self._where[k]
                self._mark_ready(k, ub, ui, ub.params[ui].grad)
        self._mark_ready(key, b, i, p.grad)

    def _mark_ready(self, key: int, b: _Bucket, i: int, grad: Tensor | None) -> None:
        if self.events is not None:
            self.events.append(("ready", self._names[key]))
        slot = b.slot(i)
        if grad is None:
            slot[...] = 0
        else:
            slot[...] = grad._data.reshape(-1)
        b.ready.add(i)
        if b.full:
            self._launch_ready_buckets()
        elif self._group.size > 1 and not b.be.is_device:
            self._progress()

    def _progress(self) -> None:
        # MPI progresses a non-blocking collective only inside MPI calls: poke the ones in flight
        reqs = [b.request for b in self._buckets[:self._next_launch] if b.request is not None]
        if reqs:
            self._group.MPI.Request.Testall(reqs)

    def _launch_ready_buckets(self) -> None:
        g = self._group
        while self._next_launch < len(self._buckets) and self._buckets[self._next_launch].full:
            b = self._buckets[self._next_launch]
            if g.size > 1:
                if b.index == 0 and self._join is not None:
                    self._active_join_round()
                self._agree(self._bucket_desc(b.index, []))
            if self.events is not None:
                self.events.append(("launch", b.index))
            if b.be.is_device:
                from ..backend.nccl import nccl_all_reduce

                nccl_all_reduce(g, b.flat, dist.ReduceOp.SUM)  # queued on the stream: already asynchronous
                b.request = None
            elif g.size > 1:
                b.request = g.comm.Iallreduce(g.MPI.IN_PLACE, b.flat, op=g.MPI.SUM)
            object.__setattr__(self, "_next_launch", self._next_launch + 1)
        if self._next_launch == len(self._buckets):
            self._finish()

    def _finish(self) -> None:
        """Wait for every bucket and write the averaged gradients back into ``.grad``."""
        g = self._group
        t0 = time.perf_counter()
        reqs = [b.request for b in self._buckets if b.request is not None]
        if reqs:
            g.MPI.Request.Waitall(reqs)
        used = None
        if self.find_unused_parameters and g.size > 1:
            # a parameter unused on every rank keeps .grad None (as in PyTorch); one used anywhere gets the average
            used = np.array([k not in self._locally_unused or self._where[k][0].params[self._where[k][1]].grad is not None
                             for k in self._where], dtype=np.int32)
            g.comm.Allreduce(g.MPI.IN_PLACE, used, op=g.MPI.MAX)
        object.__setattr__(self, "comm_wait_seconds", self.comm_wait_seconds + time.perf_counter() - t0)
        position = {k: j for j, k in enumerate(self._where)}
        for b in self._buckets:
            b.request = None
            if g.size > 1:
                # join(): the ranks out of inputs sent zeros; PyTorch divides by the initial world size by default
                b.flat /= g.size if self._join is None or self._join["divide_by_initial_world_size"] else self._n_active
            for i, p in enumerate(b.params):
                k = id(p)
                if p.grad is None:
                    if used is None or not used[position[k]]:
                        continue
                    p.grad = Tensor._make(b.slot(i).reshape(p.shape).copy(), p._be, False, None, 0)
                    continue
                if g.size > 1:
                    p.grad._data[...] = b.slot(i).reshape(p.shape)
                    p.grad._bump_version()
        # the buckets stay full until the next forward: another backward through this forward's graph
        # would add gradients nobody averages, so its first hook raises instead

    # -- uneven inputs ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def join(self, divide_by_initial_world_size: bool = True, enable: bool = True,
             throw_on_early_termination: bool = False) -> Iterator[None]:
        """Train on uneven inputs: a rank whose loop ends first keeps matching the others' gradient
        all-reduces (with zeros) until every rank has left the block (PyTorch's ``DDP.join``).

        Then the parameters of the rank that ran the most steps are copied to every rank, so all end
        equal. Each step's averaged gradient is the sum over the ranks still training divided by the
        world size (``divide_by_initial_world_size=True``, PyTorch's default) or by the number of ranks
        still training (``False``: the step then equals one process on those ranks' batches together).
        ``throw_on_early_termination=True`` raises a RuntimeError on every rank as soon as one runs out.
        Inside, no other collective may be called on one rank only (the ranks out of inputs match DDP's
        all-reduces and nothing else): that is the agreement check's ValueError on every rank.

            >>> with ddp.join():
            ...     for x, y in my_share_of_batches:  # may be shorter on some ranks
            ...         loss_fn(ddp(x), y).backward(); opt.step(); opt.zero_grad()
        """
        for name, v in (("divide_by_initial_world_size", divide_by_initial_world_size), ("enable", enable),
                        ("throw_on_early_termination", throw_on_early_termination)):
            if not isinstance(v, bool):
                raise TypeError(f"join(): {name} must be a bool, got {type(v).__name__}")
        if not enable:
            yield
            return
        if self._join is not None:
            raise RuntimeError("DistributedDataParallel.join() is already active on this model")
        object.__setattr__(self, "_join", {"divide_by_initial_world_size": divide_by_initial_world_size,
                                           "throw": throw_on_early_termination})
        try:
            yield
            self._flush_incomplete("leaving join()")
            self._shadow_until_all_joined()
        finally:
            object.__setattr__(self, "_join", None)

    def _join_round(self, active: bool) -> tuple[int, int]:
        """One round: how many ranks are still training, and their step (the shadows need it for the checks)."""
        g = self._group
        _core._same_on_all_ranks(g, _core._JOIN_KIND, (_core._JOIN_KIND, f"model {self._tag}"))
        counts = np.array([int(active), self._step if active else 0], dtype=np.int64)
        g.comm.Allreduce(g.MPI.IN_PLACE, counts, op=g.MPI.SUM)
        n_active = int(counts[0])
        if self._join["throw"] and 0 < n_active < g.size:
            raise RuntimeError(f"DistributedDataParallel.join(): {g.size - n_active} rank(s) ran out of inputs "
                               f"(throw_on_early_termination=True); raised on rank {g.rank}")
        return n_active, int(counts[1]) // max(n_active, 1)

    def _active_join_round(self) -> None:
        try:
            n_active, _ = self._join_round(True)
        except BaseException:
            self._abandon()
            raise
        object.__setattr__(self, "_n_active", n_active)

    def _shadow_until_all_joined(self) -> None:
        """This rank is out of inputs: match every gradient all-reduce of the others with zeros."""
        g = self._group
        if g.size == 1:
            return
        while True:
            n_active, step = self._join_round(False)
            if n_active == 0:  # every rank has joined, all see it in the same round
                break
            for b in self._buckets:
                _core._same_on_all_ranks(g, _core._DDP_KIND, self._bucket_desc(b.index, [], step))
                b.flat[...] = 0
                if b.be.is_device:
                    from ..backend.nccl import nccl_all_reduce

                    nccl_all_reduce(g, b.flat, dist.ReduceOp.SUM)
                else:
                    g.comm.Iallreduce(g.MPI.IN_PLACE, b.flat, op=g.MPI.SUM).Wait()  # must match the others' Iallreduce
            if self.find_unused_parameters:  # the others' "used anywhere" vote in _finish
                g.comm.Allreduce(g.MPI.IN_PLACE, np.zeros(len(self._where), dtype=np.int32), op=g.MPI.MAX)
        # the rank that trained longest holds the final model: every rank gets its parameters
        last = np.array([self._step * g.size + g.rank], dtype=np.int64)
        g.comm.Allreduce(g.MPI.IN_PLACE, last, op=g.MPI.MAX)
        for p in self.module.parameters():
            dist.broadcast(p, src=int(last[0] % g.size))

    def extra_repr(self) -> str:
        return f"world_size={self._group.size}, buckets={len(self._buckets)}, bucket_cap_mb={self.bucket_cap_mb}"


def _reachable_leaves(out: Any) -> set[int]:
    """ids of the leaf tensors wanting a gradient that the graph of ``out`` (tensors in any nesting of
    tuples/lists/dicts) reaches: the engine's own walk, the one backward will take."""
    stack: list[Any] = [out]
    leaves: set[int] = set()
    seen: set[int] = set()
    while stack:
        o = stack.pop()
        if isinstance(o, Tensor):
            if o._ctx is None:
                leaves.add(id(o))
            elif id(o._ctx) not in seen:
                seen.add(id(o._ctx))
                try:
                    leaves.update(_topological_order(o._ctx)[1])
                except RuntimeError:  # an output whose graph an earlier backward freed: no backward reaches through it
                    pass
        elif isinstance(o, (tuple, list)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
    return leaves
