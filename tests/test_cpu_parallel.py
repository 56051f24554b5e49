"""Work the CPU backend splits over threads with oneMKL's provider (backend/cpu.py ``_split``):
cross-entropy rows, optimizer steps and squared norms give the same results split as whole."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

import tinygrad_rnn as tr
from tinygrad_rnn import optim
from tinygrad_rnn.backend import blas, threads

BE = tr.get_backend("cpu")


@contextlib.contextmanager
def split_into(parts: int):
    """Make every _split call use ``parts`` threads (down to one element each)."""
    saved_min, saved_threads = BE.PARALLEL_MIN_ELEMENTS, tr.get_num_threads()
    BE.PARALLEL_MIN_ELEMENTS = 1
    tr.set_num_threads(parts)
    if "mkl" in blas.PROVIDERS:  # the step's provider decides splitting: MKL's, whatever calibration picked
        BE.STEP_PROVIDER = "mkl"
    try:
        yield
    finally:
        BE.PARALLEL_MIN_ELEMENTS = saved_min
        tr.set_num_threads(saved_threads)
        BE.__dict__.pop("STEP_PROVIDER", None)


def test_split_really_splits_with_mkl():
    seen = []
    with split_into(3):
        BE._split(lambda a, b: seen.append((a, b)), 10)
        split = blas.row_parallel(BE.STEP_PROVIDER)
    if split:
        assert sorted(seen) == [(0, 3), (3, 6), (6, 10)]
    else:  # NumPy's OpenBLAS: no splitting (its spinning threads would compete)
        assert seen == [(0, 10)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_rows_split_equal_whole(dtype):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((37, 700)) * 4).astype(dtype)
    targets = rng.integers(0, 700, 37)
    targets[5] = -100
    g = rng.uniform(-1, 1, 37)
    whole = BE.softmax_xent(logits, targets, -100)
    whole_grad = BE.softmax_xent_backward(logits, whole[1], whole[2], targets, -100, g)
    with split_into(3):
        parts = BE.softmax_xent(logits, targets, -100)
        parts_grad = BE.softmax_xent_backward(logits, parts[1], parts[2], targets, -100, g)
    for a, b in zip(whole, parts):
        np.testing.assert_array_equal(a, b)  # rows are computed the same way whichever thread takes them
    np.testing.assert_array_equal(whole_grad, parts_grad)


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
                                  lambda ps: optim.Adam(ps, lr=1e-2, amsgrad=True, weight_decay=1e-3),
                                  lambda ps: optim.AdamW(ps, lr=1e-2),
                                  lambda ps: optim.RMSprop(ps, lr=1e-2, momentum=0.5, centered=True),
                                  lambda ps: optim.Adagrad(ps, lr=1e-2)],
                         ids=["sgd", "adam-amsgrad", "adamw", "rmsprop", "adagrad"])
def test_optimizer_steps_split_equal_whole(make):
    rng = np.random.default_rng(1)
    init = [rng.standard_normal((41, 13)).astype(np.float32), rng.standard_normal(7).astype(np.float32)]
    grads = [[rng.standard_normal(a.shape).astype(np.float32) for a in init] for _ in range(3)]

    def run(split: bool) -> list[np.ndarray]:
        ps = [tr.tensor(a.copy(), requires_grad=True) for a in init]
        opt = make(ps)
        with split_into(4) if split else contextlib.nullcontext():
            for gs in grads:
                for p, g in zip(ps, gs):
                    p.grad = tr.tensor(g)
                opt.step()
        return [p.numpy() for p in ps]

    for a, b in zip(run(False), run(True)):
        np.testing.assert_array_equal(a, b)  # elementwise updates: the same bits in any split


def test_clip_grad_norm_split_matches_whole():
    rng = np.random.default_rng(2)
    ps = [tr.tensor(np.zeros((300, 70), np.float32), requires_grad=True)]
    ps[0].grad = tr.tensor(rng.standard_normal((300, 70)).astype(np.float32))
    whole = BE.sum_squares(ps[0].grad.numpy())
    with split_into(3):
        parts = BE.sum_squares(ps[0].grad.numpy())
        total = tr.nn.utils.clip_grad_norm_(ps, 1.0)
    np.testing.assert_allclose(parts, whole, rtol=1e-13)  # float64 partial sums, added in another order
    np.testing.assert_allclose(float(total), np.sqrt(whole), rtol=1e-6)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork (POSIX)")
def test_a_forked_child_gets_its_own_pool():
    """After fork the parent's pool threads are gone: a split GEMM in the child must still run
    (it would wait forever on a queue nobody serves) -- checked in a child with a deadline."""
    import os
    import signal

    with split_into(2):
        threads.run_parallel([lambda: None, lambda: None])  # the parent's pool now exists
        pid = os.fork()
        if pid == 0:  # child: exit 0 only if the parallel work completes
            try:
                signal.alarm(60)
                done = []
                threads.run_parallel([lambda: done.append(1), lambda: done.append(2)])
                a = np.ones((300, 300), np.float32)
                out = BE.mm(a, a)
                os._exit(0 if sorted(done) == [1, 2] and out[0, 0] == 300 else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
