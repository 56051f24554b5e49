"""Running the examples as a user would, shared by tests/test_examples_*.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run(script: str, *args: str, timeout: float = 120) -> str:
    """Run an example as a user would; fail with its output if it exits non-zero. Returns stdout."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, f"{script} {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def results(folder: Path) -> dict:
    with open(folder / "results.json") as f:
        return json.load(f)
