"""Fork safety (issue 18): every lock the library holds is new in a forked child.

A thread that runs backward holds the leaf-accumulation lock for a moment in every step; a ``fork``
(multiprocessing's default on Linux) in that moment copies the lock *held* into a child that has no
thread to release it, and the child's first backward waited forever. Tested as it was found: a
thread trains while the main thread forks many times, and every child must train a step and exit.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import warnings

import numpy as np
import pytest

import tinygrad_rnn as tr
from tinygrad_rnn.backend import threads

backend = sys.modules["tinygrad_rnn.backend"]
tensor = sys.modules["tinygrad_rnn.tensor"]  # the module: ``tr.tensor`` is the factory function

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")

FORKS = 40
CHILD_TIMEOUT_S = 20.0


def _model():
    # large parameters: accumulating into an existing .grad is a long in-place add that releases the GIL
    # while the lock is held, so a fork from the main thread often lands inside one
    layers = [tr.nn.Linear(512, 512, seed=i) for i in range(4)]
    return tr.nn.Sequential(*[m for lin in layers for m in (lin, tr.nn.Tanh())])


def _step(model, x, zero=True):
    if zero:
        model.zero_grad()
    model(x).sum().backward()
    return all(p.grad is not None and np.all(np.isfinite(p.grad.numpy())) for p in model.parameters())


def _wait(pid: int, timeout: float) -> int | None:
    """The child's exit status, or None if it is still running after ``timeout`` seconds (then killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def test_fork_while_another_thread_runs_backward_never_deadlocks_the_child():
    model, x = _model(), tr.randn(2, 512, seed=0)
    _step(model, x)  # compile and warm up before the thread starts
    stop, steps = threading.Event(), [0]

    def train():
        while not stop.is_set():
            _step(model, x, zero=False)  # accumulate: every leaf's update is an add under the lock
            steps[0] += 1

    worker = threading.Thread(target=train, daemon=True)
    worker.start()
    outcomes = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: "multi-threaded, use of fork() may deadlock"
            for i in range(FORKS):
                time.sleep(0.001 * (i % 7))  # spread the forks over the phases of a step
                pid = os.fork()
                if pid == 0:  # the child: one whole step of its own, then leave without pytest's cleanup
                    code = 1
                    try:
                        code = 0 if _step(model, x) else 2
                    finally:
                        os._exit(code)
                outcomes.append(_wait(pid, CHILD_TIMEOUT_S))
                if outcomes[-1] is None:
                    break
    finally:
        stop.set()
        worker.join()
    assert steps[0] > 0, "the training thread never ran a step"
    hung = [i for i, c in enumerate(outcomes) if c is None]
    assert not hung, f"fork {hung[0]} of {len(outcomes)}: the child hung in its first backward (a lock held at the fork)"
    assert outcomes == [0] * FORKS, f"children's exit codes: {outcomes}"


@pytest.mark.parametrize("owner, name", [(tensor, "_accumulate_lock"), (backend, "_BACKENDS_LOCK"), (threads, "_POOL_LOCK")])
def test_every_library_lock_is_new_and_free_in_a_forked_child(owner, name):
    """Each lock held by the parent at the fork is a fresh, free one in the child (by name, so that a new
    lock added without an at-fork reset is caught by the scan below)."""
    lock = getattr(owner, name)
    r, w = os.pipe()
    with lock:
        pid = os.fork()
        if pid == 0:
            ok = False
            try:
                new = getattr(owner, name)
                ok = new is not lock and new.acquire(timeout=2)
            finally:
                os.write(w, b"1" if ok else b"0")
                os._exit(0)
    os.close(w)
    assert _wait(pid, CHILD_TIMEOUT_S) == 0
    assert os.read(r, 1) == b"1", f"{owner.__name__}.{name} is still the parent's (held) lock in a forked child"
    os.close(r)


def test_no_lock_in_the_library_without_an_at_fork_reset():
    """A scan of the source: every module that creates a lock also registers an at-fork reset."""
    root = os.path.dirname(tr.__file__)
    missing = []
    for folder, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".py"):
                continue
            text = open(os.path.join(folder, f), encoding="utf-8").read()
            makes_lock = any(s in text for s in ("threading.Lock(", "threading.RLock(", "threading.Condition(",
                                                 "threading.Semaphore(", "threading.Event("))
            if makes_lock and "register_at_fork" not in text and "renew_in_child(" not in text:
                missing.append(os.path.relpath(os.path.join(folder, f), root))
    assert not missing, f"modules that create a lock but never reset it after fork: {missing}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
