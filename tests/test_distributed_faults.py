"""The fault-injection matrix: one fault per ``mpiexec -n 2 python tests/mpi/faults.py CASE`` run.

Each case is time-limited (a hang fails the test, the job killed rank by rank) and ends either
with a non-zero exit and the message that names the rank and the mismatch, or, where the script
catches the error, with ``CAUGHT`` lines from *every* rank and a clean exit (the group survives).
``uneven_with_join`` must instead equal one process's training. Runs one job at a time: the two
ranks already use both cores of a small CI machine. Skipped, with the reason, only when mpi4py or
mpiexec is missing (``pip install -e '.[distributed]'``).
"""
from __future__ import annotations

import json
import time

import pytest
from _mpi import ROOT, needs_mpi, run  # noqa: E402, I001  (tests/ helper)

pytestmark = needs_mpi

WORKER = ROOT / "tests" / "mpi" / "faults.py"
LIMIT = 30.0  # seconds per job; each ends in about 1-3 s


def job(case: str) -> tuple[int, str, float]:
    t0 = time.monotonic()
    proc = run(2, WORKER, case, timeout=LIMIT, merge_stderr=True)
    return proc.returncode, proc.stdout, time.monotonic() - t0


def caught_on(out: str, rank: int) -> str:
    lines = [ln for ln in out.splitlines() if ln.startswith(f"CAUGHT rank {rank}: ")]
    assert len(lines) == 1, out
    return lines[0]


LEFT = "Rank(s) 1 left the job"

# case -> what the output must hold when the job is aborted (non-zero exit)
ABORTED = {
    "exception": ["[rank 1] ValueError: deliberate failure on rank 1", "[rank 1] raised: aborting all ranks"],
    "sys_exit": [LEFT, "rank 1: ('exit'", "rank 0: ('all_reduce'"],
    "normal_exit": ["END rank 1", LEFT, "rank 0: ('all_reduce'"],
    "unused_last_step": ["'step 3'", "rank 1: ('DistributedDataParallel gradient all-reduce'",
                         "'no gradient for b.bias, b.weight'", "find_unused_parameters=True"],
    "uneven_without_join": [LEFT, "'step 4'", "with ddp.join():"],
}

# case -> what every rank's CAUGHT line must hold (the error reached both ranks; both then ended cleanly)
CAUGHT = {
    "barrier_vs_all_reduce": ["ValueError", "rank 0: ('barrier',)", "rank 1: ('all_reduce', (3,)"],
    "unused_mid_with_logging": ["ValueError", "'step 2'", "rank 1: ('DistributedDataParallel gradient all-reduce'",
                                "'no gradient for b.bias'", "find_unused_parameters=True"],
    "skipped_backward": ["ValueError", "rank 0: ('DistributedDataParallel gradient all-reduce', 'model 0', 'step 2'",
                         "rank 1: ('DistributedDataParallel gradient all-reduce', 'model 0', 'step 3'",
                         "skipped a backward()"],
    "all_reduce_vs_pending_ddp": ["ValueError", "rank 0: ('DistributedDataParallel gradient all-reduce'",
                                  "rank 1: ('all_reduce', ()", "a collective was called on one rank only"],
    "join_one_rank_collective": ["ValueError", "rank 0: ('all_reduce', ()",
                                 "rank 1: ('DistributedDataParallel.join() round', 'model 0')",
                                 "only DDP's own all-reduces are matched"],
    "join_throw": ["RuntimeError", "1 rank(s) ran out of inputs (throw_on_early_termination=True)"],
}


@pytest.mark.parametrize("case", list(ABORTED))
def test_a_fault_ends_the_job_with_a_message_naming_the_rank(case):
    rc, out, seconds = job(case)
    assert rc != 0, out
    for fragment in ABORTED[case]:
        assert fragment in out, f"{fragment!r} missing:\n{out}"
    assert "aborting all ranks" in out, out
    assert "END rank 0" not in out, out  # rank 0 never got past the collective it was waiting in
    assert seconds < 20, f"{case} took {seconds:.1f} s"


@pytest.mark.parametrize("case", list(CAUGHT))
def test_a_mismatch_raises_the_same_error_on_every_rank(case):
    rc, out, seconds = job(case)
    assert rc == 0, out
    lines = [caught_on(out, r) for r in (0, 1)]
    for line in lines:
        for fragment in CAUGHT[case]:
            assert fragment in line, f"{fragment!r} missing from {line}"
    assert "END rank 0" in out and "END rank 1" in out, out
    assert seconds < 20, f"{case} took {seconds:.1f} s"


def test_uneven_inputs_with_join_equal_one_process():
    rc, out, seconds = job("uneven_with_join")
    assert rc == 0, out
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, out
    result = json.loads(lines[0][len("RESULT "):])
    assert len(result) == 3, result
    for name, r in result.items():
        assert r["moved"] > 1e-2, (name, r)  # training changed the parameters: the comparison is not trivially true
        assert r["max_err"] <= 1e-12, (name, r)  # equals one process summing the active ranks' losses / W (or / active)
        assert r["rank_spread"] == 0.0, (name, r)  # the rank that ran out first ends with the final model too
    by_world, by_active = result["divide=True,find_unused=False"], result["divide=False,find_unused=False"]
    assert abs(by_world["moved"] - by_active["moved"]) > 1e-3  # the divisor option matters
    assert seconds < 20, f"took {seconds:.1f} s"


def test_random_pairs_of_calls_agree_or_raise_on_both_ranks():
    # the class of the barrier-vs-all_reduce bug: 300 random pairs of collectives (and DDP steps) from one seed
    rc, out, seconds = job("random_pairs")
    assert rc == 0, out
    counts = []
    for r in (0, 1):
        lines = [ln for ln in out.splitlines() if ln.startswith(f"RANDOM OK rank {r} ")]
        assert len(lines) == 1, out
        counts.append(json.loads(lines[0][len(f"RANDOM OK rank {r} "):]))
    assert counts[0] == counts[1], counts
    c = counts[0]
    assert c["agreed"] > 50 and c["refused"] > 50 and c["ddp_agreed"] > 0 and c["ddp_steps_differ"] > 0, c
    assert seconds < 20, f"took {seconds:.1f} s"


# -- join() in one process (a world of one): the API ---------------------------------------------------




def test_join_in_one_process_trains_as_without_it_and_checks_its_arguments(group):
    import numpy as np

    import tinygrad_rnn as tr
    from tinygrad_rnn import nn
    from tinygrad_rnn.nn.parallel import DistributedDataParallel

    x = tr.tensor(np.ones((2, 3)))
    plain, wrapped = nn.Linear(3, 2, seed=0, dtype=tr.float64), nn.Linear(3, 2, seed=0, dtype=tr.float64)
    ddp = DistributedDataParallel(wrapped)
    plain(x).pow(2).sum().backward()
    with ddp.join():
        ddp(x).pow(2).sum().backward()
        with pytest.raises(RuntimeError, match="already active"):
            with ddp.join():
                pass
    assert all(np.array_equal(a.grad.numpy(), b.grad.numpy()) for a, b in zip(plain.parameters(), wrapped.parameters()))
    with ddp.join(enable=False):
        pass
    with pytest.raises(TypeError, match="divide_by_initial_world_size"):
        with ddp.join(divide_by_initial_world_size=1):
            pass
    with ddp.join():  # usable again after the checks above
        pass
