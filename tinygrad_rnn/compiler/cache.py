"""Generated modules on disk: one file per cell graph, named by its hash, imported once.

The kernels in them are ``@njit(cache=True)``, so Numba keeps their machine code next to the
file (``__pycache__``): a second process with the same cell, shapes and dtype loads it instead
of compiling. The folder is ``$TINYGRAD_RNN_CACHE/cells`` or ``~/.cache/tinygrad_rnn/cells``.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from types import ModuleType

from .._fork import renew_in_child

__all__ = ["cache_dir", "load_source"]

_loaded: dict[str, ModuleType] = {}
_lock = threading.Lock()
renew_in_child(globals(), "_lock", threading.Lock)
_VERSION = "8"  # bump when the generated code's conventions change


@functools.lru_cache(maxsize=None)
def _deps_digest() -> str:
    """A digest of the code the generated kernels call into (Numba inlines it into their cached machine
    code, and its cache checks only the generated file's own time stamp): a change there is a new file."""
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for rel in ("runtime.py", os.path.join("..", "backend", "blas.py"), os.path.join("..", "backend", "rnn_kernels.py")):
        with open(os.path.join(here, rel), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def cache_dir() -> str:
    root = os.environ.get("TINYGRAD_RNN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tinygrad_rnn")
    return os.path.join(root, "cells")


def _writable(folder: str) -> str:
    """``folder``, created; or, where it cannot be written (a read-only home), one under the temp folder."""
    try:
        os.makedirs(folder, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    alt = os.path.join(tempfile.gettempdir(), f"tinygrad_rnn-{os.getuid() if hasattr(os, 'getuid') else 0}", "cells")
    os.makedirs(alt, exist_ok=True)
    return alt


def load_source(source: str) -> ModuleType:
    """Import the module with this source (written to the cache folder once, atomically)."""
    digest = hashlib.sha256((_VERSION + _deps_digest() + source).encode()).hexdigest()[:24]
    name = f"tinygrad_rnn_cell_{digest}"
    with _lock:
        mod = _loaded.get(name)
        if mod is not None:
            return mod
        folder = _writable(cache_dir())
        path = os.path.join(folder, name + ".py")
        if not os.path.exists(path):
            # never rewrite an existing file: a new mtime would invalidate Numba's cache of it
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(source)
            os.replace(tmp, path)
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        _loaded[name] = mod
        return mod
