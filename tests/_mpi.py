"""Launching ``mpiexec`` from the tests, shared by the MPI test files.

Skipped, with the reason, only when mpi4py or mpiexec is missing (``pip install -e '.[distributed]'``
installs both; CI does). Each job runs in its own session, so a timeout kills every rank, not only mpiexec.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _find_mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"  # where the mpich wheel puts it in a venv
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _find_mpiexec()
needs_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
                               reason="needs mpi4py and mpiexec: pip install -e '.[distributed]'")


def mpi_env() -> dict:
    """This environment without an outer MPI job's variables (never join it), the checkout importable,
    one BLAS thread per rank."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
    return env


def start(n: int, script: Path, *args: str, merge_stderr: bool = False) -> subprocess.Popen:
    """``mpiexec -n n python script args`` in a session of its own, output piped."""
    return subprocess.Popen([MPIEXEC, "-n", str(n), sys.executable, str(script), *args], cwd=ROOT, env=mpi_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                            text=True, start_new_session=True)


def run(n: int, script: Path, *args: str, timeout: float, merge_stderr: bool = False) -> subprocess.CompletedProcess:
    """:func:`start`, then wait; a job still running after ``timeout`` s is killed, rank by rank, and fails the test."""
    proc = start(n, script, *args, merge_stderr=merge_stderr)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpiexec -n {n} {script.name} did not finish in {timeout} s (a hang?)\n{out}\n{err or ''}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
