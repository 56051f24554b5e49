"""Two real ranks: the scripts under tests/mpi/ launched with ``mpiexec -n 2`` (time-limited).

Skipped, with the reason, only when mpi4py or mpiexec is missing (``pip install -e '.[test,distributed]'``
installs both; CI does).
"""
from __future__ import annotations

import json
import time

import pytest
from _mpi import ROOT, needs_mpi, run  # noqa: E402, I001  (tests/ helper)

SCRIPTS = ROOT / "tests" / "mpi"


pytestmark = needs_mpi


def mpirun(script: str, n: int = 2, timeout: float = 150) -> tuple[int, str, float]:
    """Run ``mpiexec -n n python tests/mpi/<script>``; returns (exit code, stdout+stderr, seconds)."""
    t0 = time.monotonic()
    proc = run(n, SCRIPTS / script, timeout=timeout, merge_stderr=True)
    return proc.returncode, proc.stdout, time.monotonic() - t0


def _result(out: str) -> dict:
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, out
    return json.loads(lines[0][len("RESULT "):])


@pytest.fixture(scope="module")
def ddp_run() -> dict:
    rc, out, _ = mpirun("ddp_train.py")
    assert rc == 0, out
    return _result(out)


@pytest.mark.parametrize("config", ["tiny", "mid", "default", "huge", "no_sync"])
def test_two_rank_ddp_equals_one_process_on_the_whole_batch(ddp_run, config):
    r = ddp_run[config]
    assert ddp_run["world_size"] == 2
    assert r["moved"] > 1e-3  # training changed the parameters: the comparison is not trivially true
    assert r["rel_err"] <= 1e-9, r
    assert r["rank_spread"] == 0.0, r  # both ranks hold bit-identical parameters


def test_bucket_sizes_cover_one_per_parameter_to_one_for_all(ddp_run):
    n_params = 11  # embedding, 2 x 4 LSTM tensors, head weight and bias
    assert ddp_run["tiny"]["buckets"] == n_params
    assert 1 < ddp_run["mid"]["buckets"] < n_params
    assert ddp_run["default"]["buckets"] == ddp_run["huge"]["buckets"] == 1
    for name in ("tiny", "mid"):  # communication starts while backward is still producing gradients
        assert ddp_run[name]["launch_before_last_ready"], name
    assert not ddp_run["huge"]["launch_before_last_ready"]  # one bucket: it can only start at the end
    steps = 4
    assert ddp_run["tiny"]["launches"] == steps * n_params
    assert ddp_run["no_sync"]["launches"] == steps  # the no_sync micro-batches launched nothing


def test_collectives_and_errors_on_two_ranks():
    rc, out, _ = mpirun("collectives.py")
    assert rc == 0 and "ALL OK world_size=2" in out, out


def test_a_rank_that_raises_ends_the_job_quickly_with_its_message():
    rc, out, seconds = mpirun("raise_on_rank.py", timeout=60)
    assert rc != 0, out
    assert "[rank 1] ValueError: deliberate failure on rank 1 of the fault test" in out, out
    assert "abort did not happen" not in out
    assert seconds < 30, f"took {seconds:.1f} s"
