"""glibc's malloc thresholds (backend/memory.py): a step's large arrays reuse heap pages instead of fresh
mmapped ones. Checked by what the kernel counts (minor page faults), never by a time."""
from __future__ import annotations

import platform
import subprocess

import pytest
from _child import last_json, run_python

_CHILD = """
    import json, resource
    import numpy as np
    import tinygrad_rnn as tr
    tr.get_backend("cpu")  # the CPU backend sets the thresholds when it loads
    from tinygrad_rnn.backend import memory

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def step():  # the shape of a training step: blocks of 1-40 MiB freed and allocated again, out of order
        a = np.ones(8 << 18, np.float32)
        b = np.ones(1 << 18, np.float32)
        del a
        c = np.ones(40 << 18, np.float32)
        del b, c

    for _ in range(3):
        step()
    f0 = faults()
    for _ in range(20):
        step()
    print(json.dumps({"tuned": memory.TUNED, "faults": (faults() - f0) / 20}))
"""


def _run(env_value: str | None) -> subprocess.CompletedProcess:
    return run_python(_CHILD, {"TINYGRAD_RNN_MALLOC": env_value}, timeout=300)


def _faults(env_value: str | None) -> dict:
    return last_json(_run(env_value))


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the thresholds are glibc's (other C libraries are left alone)")
def test_large_arrays_reuse_heap_pages_and_the_default_can_be_kept():
    tuned, default = _faults(None), _faults("default")
    assert tuned["tuned"] is True and default["tuned"] is False
    # tuned: the blocks come back from the heap, touched pages stay mapped; glibc's defaults mmap the
    # 40 MiB block afresh every step (negative control: the count the tuning removes)
    assert tuned["faults"] * 4 < default["faults"], (tuned, default)
    assert tuned["faults"] < 200, tuned


def test_a_bad_setting_is_a_clear_error():
    r = _run("fast")
    assert r.returncode != 0
    assert "ValueError" in r.stderr and "TINYGRAD_RNN_MALLOC must be 'tuned' or 'default', got 'fast'" in r.stderr
