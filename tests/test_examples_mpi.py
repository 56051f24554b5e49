"""The examples under ``mpiexec -n 2``: data-parallel training equals one process on the whole batch.

N ranks with batch B read exactly the streams one process reads with batch N*B and average their
gradients, so the runs differ only by float32 rounding: the gradient is the mean of the ranks' means
(summed by MPI) instead of one mean over the whole batch, which changes the last bits, and the
differences grow a little over the steps. Hence the 1e-5 relative tolerance; a wrong stream split or
an un-averaged gradient is off by orders of magnitude more. Skipped, with the reason, only when
mpi4py or mpiexec is missing (``pip install -e '.[distributed]'``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _examples import EXAMPLES, ROOT, results  # noqa: E402, I001  (tests/ helper)
from _mpi import mpi_env, needs_mpi, run, start  # noqa: E402, I001  (tests/ helper)

import tinygrad_rnn as tr

pytestmark = needs_mpi


def mpi_example(script: str, *args: str, n: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    """``mpiexec -n n python examples/<script> args``, time-limited."""
    return run(n, EXAMPLES / script, *args, timeout=timeout)


def one_process(script: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=ROOT, env=mpi_env(), capture_output=True,
                          text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


CHAR = ["--max-chars", "2000", "--steps", "0", "--epochs", "2", "--eval-every", "5", "--hidden", "24", "--emb", "8",
        "--seq", "16", "--prime", "a", "--length", "20", "--save-every", "4"]


@pytest.fixture(scope="module")
def char_runs(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("char_mpi")
    two = mpi_example("char_lm.py", *CHAR, "--batch", "4", "--out", str(base / "two"))
    one = one_process("char_lm.py", *CHAR, "--batch", "8", "--out", str(base / "one"))
    return {"base": base, "two": ok(two), "one": ok(one)}


def test_char_lm_two_ranks_equal_one_process_with_twice_the_batch(char_runs):
    base = char_runs["base"]
    r2, r1 = results(base / "two"), results(base / "one")
    assert r2["ranks"] == 2 and r1["ranks"] == 1 and r2["steps"] == r1["steps"] == 28  # 2 epochs of 14 windows
    assert len(r2["losses"]) == 28 and rel(r2["losses"], r1["losses"]) < 1e-5
    assert abs(r2["val_bpc"] - r1["val_bpc"]) <= 1e-5 * r1["val_bpc"]
    assert abs(r2["test_bpc"] - r1["test_bpc"]) <= 1e-5 * r1["test_bpc"]
    s2, s1 = tr.load(base / "two" / "train_state.npz"), tr.load(base / "one" / "train_state.npz")
    for k, v in s1["model"].items():
        assert rel(s2["model"][k], v) < 1e-5, k
    # the saved carried state holds all 8 streams, in the single process's row order
    for h2, h1 in zip(s2["hidden"], s1["hidden"], strict=True):
        assert h2.shape == h1.shape == (1, 8, 24) and rel(h2.numpy(), h1.numpy()) < 1e-5


def test_char_lm_training_moved_the_weights(char_runs):
    """A negative control: the equality above is not that of two untrained models."""
    base = char_runs["base"]
    r = results(base / "one")
    assert r["history"][-1]["val_bpc"] < r["history"][0]["val_bpc"] - 0.05


def test_only_rank_0_prints_and_writes(char_runs):
    out = char_runs["two"].stdout
    assert out.count("Tiny Shakespeare:") == 1 and out.count("results (bits per character") == 1
    assert "batch 4 on each of 2 ranks (8 streams in all)" in out
    header = next(line for line in out.splitlines() if line.startswith("model "))
    row = out.splitlines()[out.splitlines().index(header) + 2].split()
    assert header.split()[6] == "ranks" and row[6] == "2"
    assert out.count("step    10  train") == 1  # the progress lines once, not once per rank
    names = sorted(os.listdir(char_runs["base"] / "two"))
    assert names == ["loss.png", "model.npz", "results.json", "samples.txt", "train_state.npz"]


def test_char_lm_resume_under_two_ranks_is_bit_exact(char_runs, tmp_path):
    """Rank 0 writes the state; on resume every rank reads it and takes its own rows of the carried state."""
    out = tmp_path / "pieces"
    first = ok(mpi_example("char_lm.py", *CHAR, "--batch", "4", "--stop-after", "11", "--out", str(out)))
    assert first.stderr.count("resume with: mpiexec -n 2 python ") == 1, first.stderr
    assert tr.load(out / "train_state.npz")["ranks"] == 2
    ok(mpi_example("char_lm.py", *CHAR, "--batch", "4", "--out", str(out), "--resume", str(out / "train_state.npz")))
    straight = results(char_runs["base"] / "two")
    resumed = results(out)
    assert resumed["losses"] == straight["losses"] and resumed["val_bpc"] == straight["val_bpc"]
    # the same state in one process: refused, naming the rank count
    proc = one_process("char_lm.py", *CHAR, "--batch", "4", "--out", str(tmp_path / "x"), "--resume",
                       str(out / "train_state.npz"))
    assert proc.returncode == 2 and "saved by 2 rank(s), this run has 1" in proc.stderr.splitlines()[-1], proc.stderr


def test_word_lm_lstm_two_ranks_equal_one_process(tmp_path):
    flags = ["--model", "lstm", "--limit-tokens", "3000", "--max-steps", "4", "--epochs", "2", "--evals-per-epoch", "2",
             "--hidden", "16", "--quiet"]
    ok(mpi_example("word_lm.py", *flags, "--batch-size", "4", "--out", str(tmp_path / "two")))
    ok(one_process("word_lm.py", *flags, "--batch-size", "8", "--out", str(tmp_path / "one")))
    r2, r1 = results(tmp_path / "two"), results(tmp_path / "one")
    assert r2["ranks"] == 2
    m2, m1 = r2["models"]["lstm"], r1["models"]["lstm"]
    assert len(m2["losses"]) == 8 and rel(m2["losses"], m1["losses"]) < 1e-5
    assert abs(m2["test_ppl"] - m1["test_ppl"]) <= 1e-5 * m1["test_ppl"]
    assert m1["history"][-1]["valid_ppl"] < m1["history"][0]["valid_ppl"]  # it trained


def test_sentiment_under_two_ranks(tmp_path):
    """Each rank its DistributedSampler shard; one rank evaluates, prints and writes."""
    flags = ["--limit", "400", "--epochs", "1", "--emb", "16", "--hidden", "8", "--batch-size", "25",
             "--evals-per-epoch", "2", "--quiet"]
    proc = ok(mpi_example("sentiment.py", *flags, "--out", str(tmp_path)))
    assert proc.stdout.count("SST-2 binary sentence classification") == 1
    r = results(tmp_path)
    assert r["ranks"] == 2 and len(r["lstm"]["losses"]) == 8  # 400 examples / 2 ranks / 25 per batch
    assert 0.0 <= r["lstm"]["test_acc"] <= 1.0 and len(r["lstm"]["history"]) == 2


def _rank_pid(marker: str, rank: int) -> int | None:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in cmd and f"PMI_RANK={rank}".encode() in env and str(EXAMPLES / "char_lm.py").encode() in cmd:
            return int(pid)
    return None


def _start_endless_char_lm(out) -> subprocess.Popen:
    """A 2-rank char_lm that would train for hours, returned once its training loop has started."""
    flags = ["--max-chars", "30000", "--steps", "100000", "--eval-every", "100000", "--hidden", "16", "--emb", "8",
             "--seq", "16", "--batch", "4", "--out", str(out)]
    proc = start(2, EXAMPLES / "char_lm.py", *flags)
    for line in proc.stdout:
        if line.startswith("'train' ="):
            break
    return proc


def test_a_rank_that_dies_ends_the_job_non_zero(tmp_path):
    out = tmp_path / "dies"
    proc = _start_endless_char_lm(out)
    try:
        pid = _rank_pid(str(out), 1)
        assert pid is not None, "rank 1 not found"
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
        proc.communicate(timeout=30)
        assert proc.returncode != 0
        assert time.monotonic() - t0 < 30
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail("the job went on after rank 1 died")
    assert not (out / "results.json").exists()


def test_ctrl_c_under_mpi_stops_every_rank_at_the_same_step(tmp_path):
    out = tmp_path / "ctrl_c"
    proc = _start_endless_char_lm(out)
    try:
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)  # mpiexec passes it on to every rank
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, err
    assert err.count("resume with: mpiexec -n 2 python") == 1, err
    state = tr.load(out / "train_state.npz")
    assert state["ranks"] == 2 and state["step"] == len(state["losses"]) > 0
    assert json.dumps(state["args"]["batch"]) == "4"


def test_an_example_without_data_parallelism_refuses_several_ranks(tmp_path):
    proc = mpi_example("adding_problem.py", "--out", str(tmp_path), timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert errors == ["adding_problem.py: error: adding_problem.py does not train data-parallel: run it without mpiexec "
                      "(or with -n 1)"], proc.stderr  # one rank says it, once
    assert not (tmp_path / "results.json").exists()
