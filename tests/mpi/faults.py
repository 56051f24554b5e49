"""Run under ``mpiexec -n 2 python tests/mpi/faults.py CASE``: one injected fault per run.

Each case either ends the job (non-zero exit, a message naming the rank / the mismatch) or
catches the error on every rank, prints ``CAUGHT rank r: <message>`` and ends cleanly, which
shows that every rank got it and the group still works. ``tests/test_distributed_faults.py``
launches every case time-limited and checks the outcome.
"""
from __future__ import annotations

import json
import sys

import numpy as np

import tinygrad_rnn as tr
import tinygrad_rnn.distributed as dist
from tinygrad_rnn import nn, optim
from tinygrad_rnn.nn.parallel import DistributedDataParallel


class TwoHeads(nn.Module):
    """A body and two heads; ``use_b=False`` leaves head b without gradient."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(3, 4, seed=1, dtype=tr.float64)
        self.a = nn.Linear(4, 1, seed=2, dtype=tr.float64)
        self.b = nn.Linear(4, 1, seed=3, dtype=tr.float64)

    def forward(self, x, use_b: bool = True):
        h = self.body(x).tanh()
        return self.a(h) + self.b(h) if use_b else self.a(h)


def batch(rank: int, step: int) -> tr.Tensor:
    return tr.tensor(np.random.default_rng(100 * rank + step).standard_normal((4, 3)))


def say(text: str) -> None:
    """One write, starting on a new line: the other rank's output may be mid-line (mpiexec merges them)."""
    sys.stdout.write("\n" + text + "\n")
    sys.stdout.flush()


REPORT: list[str] = []  # this rank's result lines, printed by rank 0 in rank order (mpiexec may split lines)


def caught(rank: int, e: BaseException) -> None:
    REPORT.append(f"CAUGHT rank {rank}: {type(e).__name__}: {e}")


def print_reports() -> None:
    """Rank 0 prints every rank's REPORT lines: two ranks printing at once interleave mid-line."""
    text = np.frombuffer("\n".join(REPORT).encode().ljust(16384), dtype=np.uint8).astype(np.int64)
    out = [tr.zeros(text.size, dtype=tr.int64) for _ in range(dist.get_world_size())]
    dist.all_gather(out, tr.tensor(text))
    if dist.get_rank() == 0:
        say("\n".join(bytes(o.numpy().astype(np.uint8)).decode().rstrip() for o in out))


def train(rank: int, steps: int, use_b=lambda step: True, skip_backward=lambda step: False, log_loss: bool = False,
          log_before_backward=lambda step: False, cap: float = 25) -> None:
    """A few SGD steps of DDP; the lambdas inject the fault on chosen (rank, step)s."""
    model = TwoHeads()
    ddp = DistributedDataParallel(model, bucket_cap_mb=cap)
    opt = optim.SGD(model.parameters(), lr=0.1)
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss = ddp(batch(rank, step), use_b(step)).pow(2).mean()
        if log_before_backward(step):
            dist.all_reduce(loss.detach())
        if not skip_backward(step):
            loss.backward()
        if log_loss:
            dist.all_reduce(loss.detach())
        opt.step()


def case(name: str, rank: int) -> None:
    if name == "exception":  # rank 1 raises while rank 0 waits in a collective
        if rank == 1:
            raise ValueError("deliberate failure on rank 1")
        dist.all_reduce(tr.zeros(3))
    elif name == "sys_exit":  # SystemExit never reaches sys.excepthook: the exit hook must end the job
        if rank == 1:
            sys.exit(3)
        dist.all_reduce(tr.zeros(3))
    elif name == "normal_exit":  # rank 1 reaches the end of the script; rank 0 still calls a collective
        if rank == 0:
            dist.all_reduce(tr.zeros(3))
    elif name == "barrier_vs_all_reduce":
        try:
            dist.barrier() if rank == 0 else dist.all_reduce(tr.zeros(3))
        except ValueError as e:
            caught(rank, e)
        t = tr.tensor([1.0])  # the group still works
        dist.all_reduce(t)
        assert t.item() == 2.0
    elif name == "unused_last_step":  # rank 1 leaves head b out of the last step, then ends
        train(rank, 3, use_b=lambda step: not (rank == 1 and step == 3))
    elif name == "unused_mid_with_logging":  # ... in step 2, with a per-step all_reduce(loss) for logging
        try:
            train(rank, 4, use_b=lambda step: not (rank == 1 and step == 2), log_loss=True, cap=1e-9)
        except (ValueError, RuntimeError) as e:
            caught(rank, e)
    elif name == "skipped_backward":  # rank 1 skips the backward of step 2 ("a bad batch")
        try:
            train(rank, 4, skip_backward=lambda step: rank == 1 and step == 2)
        except ValueError as e:
            caught(rank, e)
    elif name == "all_reduce_vs_pending_ddp":  # rank 1 logs before backward, rank 0 after
        try:
            train(rank, 2, log_before_backward=lambda step: rank == 1, log_loss=rank == 0)
        except ValueError as e:
            caught(rank, e)
    elif name == "uneven_without_join":  # rank 1 has one batch less and ends
        train(rank, 4 - rank)
    elif name == "uneven_with_join":
        uneven_with_join(rank)
    elif name == "random_pairs":
        random_pairs(rank)
    elif name in ("join_one_rank_collective", "join_throw"):  # rank 0 has 3 batches, rank 1 one
        model = TwoHeads()
        ddp = DistributedDataParallel(model)
        try:
            with ddp.join(throw_on_early_termination=name == "join_throw"):
                for step in range(1, 4 - 2 * rank):
                    loss = ddp(batch(rank, step)).pow(2).mean()
                    loss.backward()
                    if name == "join_one_rank_collective":  # logging: rank 1, out of inputs, cannot match it
                        dist.all_reduce(loss.detach())
        except (ValueError, RuntimeError) as e:
            caught(rank, e)
    else:
        raise SystemExit(f"unknown case {name!r}")


def uneven_with_join(rank: int) -> None:
    """Rank 0 has 5 batches, rank 1 has 2; with join() both end equal to one process's reference
    (for both divisors, and with find_unused_parameters, whose extra vote the finished rank matches)."""
    counts = [5, 2]
    world = dist.get_world_size()
    result = {}
    for divide_by_world, find_unused in ((True, False), (False, False), (False, True)):
        model = TwoHeads()
        ddp = DistributedDataParallel(model, find_unused_parameters=find_unused)  # True: its vote is shadowed too
        opt = optim.SGD(model.parameters(), lr=0.1)
        with ddp.join(divide_by_initial_world_size=divide_by_world):
            for step in range(1, counts[rank] + 1):
                opt.zero_grad()
                ddp(batch(rank, step)).pow(2).mean().backward()
                opt.step()
        mine = np.concatenate([p.numpy().ravel() for p in model.parameters()])
        gathered = [tr.zeros(mine.size, dtype=tr.float64) for _ in range(world)]
        dist.all_gather(gathered, tr.tensor(mine))
        # one process: each step's gradient is the sum over the ranks that still have data, divided by
        # the world size (PyTorch's default) or by how many ranks still have data (their batches joined)
        ref = TwoHeads()
        ropt = optim.SGD(ref.parameters(), lr=0.1)
        for step in range(1, max(counts) + 1):
            ropt.zero_grad()
            active = [r for r in range(world) if counts[r] >= step]
            total = sum(ref(batch(r, step)).pow(2).mean() for r in active)
            (total / (world if divide_by_world else len(active))).backward()
            ropt.step()
        expect = np.concatenate([p.numpy().ravel() for p in ref.parameters()])
        result[f"divide={divide_by_world},find_unused={find_unused}"] = {
            "max_err": float(np.max(np.abs(mine - expect))),
            "rank_spread": max(float(np.max(np.abs(g.numpy() - mine))) for g in gathered),
            "moved": float(np.max(np.abs(expect - np.concatenate([p.numpy().ravel() for p in TwoHeads().parameters()])))),
        }
    if rank == 0:
        say("RESULT " + json.dumps(result))


def random_pairs(rank: int, rounds: int = 300) -> None:
    """The class, not the example: random pairs of calls, one per rank, from the same seed on both.

    Each rank knows the whole schedule, so it knows whether the pair agrees; it must then either
    complete with the right value or raise the agreement's ValueError -- on both ranks alike."""
    ddp = DistributedDataParallel(TwoHeads())
    calls = {
        "barrier": lambda: dist.barrier(),
        "sum3": lambda: dist.all_reduce(tr.tensor(np.full(3, rank + 1.0))),
        "max3": lambda: dist.all_reduce(tr.tensor(np.full(3, rank + 1.0)), op=dist.ReduceOp.MAX),
        "sum2": lambda: dist.all_reduce(tr.tensor(np.full(2, rank + 1.0))),
        "sum3_f32": lambda: dist.all_reduce(tr.tensor(np.full(3, rank + 1.0, dtype=np.float32))),
        "bcast0": lambda: dist.broadcast(tr.tensor(np.full(3, rank + 1.0)), src=0),
        "bcast1": lambda: dist.broadcast(tr.tensor(np.full(3, rank + 1.0)), src=1),
        "gather": lambda: dist.all_gather([tr.zeros(3, dtype=tr.float64) for _ in range(2)], tr.tensor(np.ones(3))),
        "ddp": lambda: ddp(batch(rank, 0)).pow(2).mean().backward(),
    }
    names = sorted(calls)
    rng = np.random.default_rng(2026)
    steps = [0, 0]  # DDP forwards per rank: the step in DDP's agreement message
    counts = {"agreed": 0, "refused": 0, "ddp_agreed": 0, "ddp_steps_differ": 0}
    for i in range(rounds):
        first = names[rng.integers(len(names))]
        pair = [first, first if rng.random() < 0.5 else names[rng.integers(len(names))]]  # half agree by construction
        for r in (0, 1):
            steps[r] += pair[r] == "ddp"
        agree = pair[0] == pair[1] and (pair[0] != "ddp" or steps[0] == steps[1])
        try:
            calls[pair[rank]]()
            got = True
        except ValueError as e:
            got = False
            assert "rank 0:" in str(e) and "rank 1:" in str(e), e
        assert got == agree, f"round {i}: {pair} steps {steps}: expected {'success' if agree else 'ValueError'}"
        counts["agreed" if agree else "refused"] += 1
        if pair == ["ddp", "ddp"]:
            counts["ddp_agreed" if agree else "ddp_steps_differ"] += 1
    t = tr.tensor([1.0])  # still in step after all of them
    dist.all_reduce(t)
    assert t.item() == 2.0
    REPORT.append(f"RANDOM OK rank {rank} " + json.dumps(counts))


REPORTING = {"barrier_vs_all_reduce", "unused_mid_with_logging", "skipped_backward", "all_reduce_vs_pending_ddp",
             "join_one_rank_collective", "join_throw", "random_pairs"}


def main() -> None:
    dist.init_process_group("mpi")
    rank = dist.get_rank()
    case(sys.argv[1], rank)
    if sys.argv[1] in REPORTING:
        print_reports()
    say(f"END rank {rank}")


if __name__ == "__main__":
    main()
