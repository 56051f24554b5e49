"""Running a snippet in a fresh interpreter with this checkout first on the path, shared by the test files
that need a new process (symbols bound at import, environment variables read once, malloc settings)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, env: dict | None = None, timeout: float = 600, cwd: str | None = None
               ) -> subprocess.CompletedProcess:
    """``python -c code`` (dedented) with ROOT first on PYTHONPATH; ``env`` entries are set in the child's
    environment, a value of None removes that variable."""
    child = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for key, value in (env or {}).items():
        if value is None:
            child.pop(key, None)
        else:
            child[key] = value
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=child, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def last_json(r: subprocess.CompletedProcess) -> dict:
    """The JSON object on a successful child's last line of output."""
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])
