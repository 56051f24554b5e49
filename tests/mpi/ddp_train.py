"""Run under ``mpiexec -n N``: DDP training of a 2-layer LSTM LM equals one process on the whole batch.

For each bucket size (and once with no_sync gradient accumulation) every rank builds the model
from its own seed, wraps it in DistributedDataParallel (which copies rank 0's values), and trains
a few SGD steps of truncated BPTT on its rows of the token streams. Rank 0 then trains the same
model (rank 0's seed) alone on all N*B rows and prints one ``RESULT {json}`` line comparing them.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lm import TinyLM, flat_params, lm_loss, token_stream  # noqa: E402

import tinygrad_rnn as tr  # noqa: E402
import tinygrad_rnn.distributed as dist  # noqa: E402
from tinygrad_rnn import optim  # noqa: E402
from tinygrad_rnn.data import batchify, bptt_batches, distributed_batchify  # noqa: E402
from tinygrad_rnn.nn.parallel import DistributedDataParallel  # noqa: E402

B, T, STEPS, LR = 3, 5, 4, 0.5


def train(model, data: np.ndarray, accumulate: int, ddp=None) -> None:
    opt = optim.SGD(model.parameters(), lr=LR)
    windows = list(bptt_batches(data, T))
    state, k = None, 0
    for _ in range(STEPS):
        opt.zero_grad()
        for micro in range(accumulate):
            x, y = windows[k]
            k += 1
            quiet = ddp is not None and micro < accumulate - 1
            with ddp.no_sync() if quiet else contextlib.nullcontext():
                loss, state = lm_loss(model, x, y, state)
                loss.backward()
        opt.step()


def main() -> None:
    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    ids = token_stream()
    configs = [("tiny", 1e-6, 1), ("mid", 600 / 2**20, 1), ("default", 25, 1), ("huge", 1e6, 1), ("no_sync", 25, 2)]
    results = {"world_size": world}
    for name, cap, accumulate in configs:
        model = TinyLM(seed=100 + 7 * rank)  # different on every rank: DDP must copy rank 0's values
        ddp = DistributedDataParallel(model, bucket_cap_mb=cap)
        ddp.events = []
        start = flat_params(model)
        train(ddp, distributed_batchify(ids, B), accumulate, ddp)
        mine = flat_params(model)
        gathered = [tr.zeros(mine.size, dtype=tr.float64) for _ in range(world)]
        dist.all_gather(gathered, tr.tensor(mine))
        spread = max(float(np.max(np.abs(g.numpy() - mine))) for g in gathered)
        # the first iteration's events: up to the launch of the last bucket
        first_iter = ddp.events[: ddp.events.index(("launch", len(ddp.bucket_names) - 1)) + 1]
        first_launch = next(i for i, e in enumerate(first_iter) if e[0] == "launch")
        last_ready = max(i for i, e in enumerate(first_iter) if e[0] == "ready")
        if rank == 0:
            ref = TinyLM(seed=100)
            assert np.array_equal(flat_params(ref), start)
            train(ref, batchify(ids, B * world), accumulate)
            expect = flat_params(ref)
            results[name] = {
                "buckets": len(ddp.bucket_names),
                "rel_err": float(np.max(np.abs(mine - expect)) / np.max(np.abs(expect))),
                "moved": float(np.max(np.abs(mine - start))),
                "rank_spread": spread,
                "launch_before_last_ready": first_launch < last_ready,
                "launches": sum(e[0] == "launch" for e in ddp.events),
                "comm_wait_seconds": ddp.comm_wait_seconds,
            }
    if rank == 0:
        print("RESULT " + json.dumps(results), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
