"""Running the examples as a user would, shared by tests/test_examples_*.py."""
from __future__ import annotations

import importlib.util
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


def run_raw(script: str, *args: str, cwd: Path | str = ROOT, timeout: float = 120, env: dict | None = None,
            umask: int | None = None) -> subprocess.CompletedProcess:
    """Run an example and return the finished process whatever its exit status (stdout/stderr as text)."""
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})},
                          preexec_fn=preexec)


def results(folder: Path) -> dict:
    with open(folder / "results.json") as f:
        return json.load(f)


def example_module(name: str):
    """Import an example (or ``_common``) as a module, its folder on sys.path for ``_common``."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    if name == "_common":
        import _common

        return _common
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod
