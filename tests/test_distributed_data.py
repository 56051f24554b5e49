"""DistributedSampler and distributed_batchify: shards that are disjoint, covering, equal, deterministic."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_rnn.data import DistributedSampler, batchify, bptt_batches, bucket_batches, distributed_batchify


def shards(n: int, world: int, **kw) -> list[np.ndarray]:
    return [DistributedSampler(n, num_replicas=world, rank=r, **kw).indices() for r in range(world)]


@given(n=st.integers(1, 200), world=st.integers(1, 8), shuffle=st.booleans(), epoch=st.integers(0, 5))
def test_shards_cover_pad_and_have_equal_lengths(n, world, shuffle, epoch):
    parts = []
    for r in range(world):
        s = DistributedSampler(n, num_replicas=world, rank=r, shuffle=shuffle, seed=3)
        s.set_epoch(epoch)
        parts.append(s.indices())
        assert len(parts[-1]) == len(s) == -(-n // world)
    allidx = np.concatenate(parts)
    assert set(allidx.tolist()) == set(range(n))  # covering
    assert len(allidx) - n < world  # padding repeats fewer than world_size examples
    if n % world == 0:
        assert len(set(allidx.tolist())) == len(allidx)  # disjoint: nothing repeated


@given(n=st.integers(1, 200), world=st.integers(1, 8), epoch=st.integers(0, 5))
def test_drop_last_shards_are_disjoint(n, world, epoch):
    if n < world:
        with pytest.raises(ValueError, match="no example"):
            DistributedSampler(n, num_replicas=world, rank=0, drop_last=True)
        return
    parts = shards(n, world, drop_last=True)
    for p in parts:
        p_len = len(p)
        assert p_len == n // world
    allidx = np.concatenate(parts)
    assert len(set(allidx.tolist())) == len(allidx) == world * (n // world)


def test_deterministic_per_epoch_and_reshuffled_across_epochs():
    a, b = DistributedSampler(100, 2, 0, seed=7), DistributedSampler(100, 2, 0, seed=7)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(DistributedSampler(10, num_replicas=3, rank=2, shuffle=False)) == [2, 5, 8, 1]
    assert list(DistributedSampler(10, num_replicas=4, rank=3, shuffle=False)) == [3, 7, 1]  # padded from the start


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank 2"):
        DistributedSampler(10, num_replicas=2, rank=2)
    with pytest.raises(TypeError, match="rank"):
        DistributedSampler(10, num_replicas=2, rank=1.0)
    with pytest.raises(ValueError, match="num_replicas"):
        DistributedSampler(10, num_replicas=0, rank=0)
    with pytest.raises(TypeError, match="sized"):
        DistributedSampler(object(), 1, 0)
    with pytest.raises(TypeError, match="epoch"):
        DistributedSampler(10, 1, 0).set_epoch("1")
    s = DistributedSampler(4, 2, 0)
    with pytest.raises(ValueError, match="4 examples"):
        next(s.bucket_batches([[1]] * 5, [0] * 5, 2))
    with pytest.raises(ValueError, match="labels"):
        s.bucket_batches([[1]] * 4, [0] * 3, 2)
    with pytest.raises(ValueError, match="rank 1"):
        distributed_batchify(np.arange(10), 2, num_replicas=1, rank=1)


def test_defaults_without_a_process_group_are_one_rank():
    s = DistributedSampler(5, shuffle=False)
    assert (s.num_replicas, s.rank, list(s)) == (1, 0, [0, 1, 2, 3, 4])


def test_bucket_batches_per_rank_equal_count_and_cover_the_shard():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 9, size=rng.integers(0, 12)) for _ in range(23)]
    labels = np.arange(23)
    counts, seen = [], []
    for r in range(3):
        s = DistributedSampler(len(seqs), num_replicas=3, rank=r, seed=1)
        s.set_epoch(4)
        batches = list(s.bucket_batches(seqs, labels, batch_size=3))
        again = list(s.bucket_batches(seqs, labels, batch_size=3))
        assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[2], b[2]) for a, b in zip(batches, again))
        counts.append(len(batches))
        got = np.concatenate([y for _, _, y in batches])
        assert sorted(got.tolist()) == sorted(s.indices().tolist())  # labels follow their sequences
        for ids, lengths, y in batches:
            for row, length, label in zip(ids, lengths, y):
                assert np.array_equal(row[:length], seqs[label]) and np.all(row[length:] == 0)
        seen.extend(got.tolist())
    assert counts == [3, 3, 3]  # ceil(8 / 3) on every rank
    assert set(seen) == set(range(23))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_streams_are_the_rows_of_the_whole_batch(world):
    ids = np.arange(1000) % 37
    whole = batchify(ids, 4 * world)
    rows = [distributed_batchify(ids, 4, num_replicas=world, rank=r) for r in range(world)]
    assert np.array_equal(np.concatenate(rows), whole)
    # and the BPTT windows of the ranks stacked are the windows of the single process
    for windows in zip(*(bptt_batches(r, 7) for r in rows), bptt_batches(whole, 7)):
        *parts, single = windows
        assert np.array_equal(np.concatenate([x for x, _ in parts]), single[0])
        assert np.array_equal(np.concatenate([y for _, y in parts]), single[1])


def test_bucket_batches_unchanged_helper_is_used():
    # the sampler defers to data.bucket_batches: one rank of one is that function on the permuted data
    seqs = [[1, 2], [3], [4, 5, 6], [7]]
    s = DistributedSampler(4, 1, 0, shuffle=False)
    mine = list(s.bucket_batches(seqs, [0, 1, 2, 3], 2))
    theirs = list(bucket_batches(seqs, [0, 1, 2, 3], 2, shuffle=False))
    assert all(np.array_equal(a, b) for m, t in zip(mine, theirs) for a, b in zip(m, t))
