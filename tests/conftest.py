"""Shared test setup: Hypothesis profiles (``HYPOTHESIS_PROFILE=ci|dev|thorough``) and fixtures."""
import importlib.util
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("tinygrad_rnn") is None:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinygrad_rnn.testing import load_profile  # noqa: E402

_PROFILE = load_profile()


def pytest_report_header(config):
    return f"hypothesis profile: {_PROFILE} (set HYPOTHESIS_PROFILE=ci|dev|thorough to change)"


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A float64-friendly NumPy generator seeded from the test's id: reproducible, distinct per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def group():
    """A one-process MPI group (a world of one) for the distributed tests, torn down afterwards."""
    import tinygrad_rnn.distributed as dist

    dist.init_process_group("mpi")
    try:
        yield
    finally:
        dist.destroy_process_group()

