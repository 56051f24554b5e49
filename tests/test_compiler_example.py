"""examples/custom_cell.py and bench/custom_cell.py run as a user runs them (tiny sizes)."""
from __future__ import annotations

import subprocess
import sys

import pytest
from _examples import ROOT, run


@pytest.mark.parametrize("cell", ["peephole", "indrnn"])
def test_custom_cell_example_trains_compiled(cell):
    out = run("custom_cell.py", "--cell", cell, "--hidden", "16", "--emb", "8", "--batch", "4", "--seq", "8",
              "--steps", "6", "--eval-every", "3", "--eval-windows", "2", "--max-chars", "5000", timeout=600)
    assert f"result: {cell}" in out and "path compiled" in out, out
    assert "bits/char" in out and "steps/s" in out


def test_custom_cell_example_refuses_bad_flags():
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "custom_cell.py"), "--hidden", "0"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--hidden" in p.stderr


def test_custom_cell_bench_smoke():
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "custom_cell.py"), "--batch", "2", "--seq", "3",
                        "--hidden", "8", "--input", "4", "--reps", "1",
                        "--only", "ours compiled,ours op by op,ours nn.LSTM (built-in)"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    for name in ("ours compiled", "ours op by op", "ours nn.LSTM (built-in)"):
        assert name in p.stdout and "failed" not in p.stdout, p.stdout
