"""Are the CPU kernels compiled yet? Numba's on-disk cache, asked per kernel family.

Numba compiles a ``cache=True`` kernel on its first call and keeps the machine code on disk: one index
file ``<module>.<function>-<line>.py<ver>.nbi`` per function, in ``__pycache__`` beside the source (or
under ``NUMBA_CACHE_DIR``). A program can say "compiling kernels (first run only)" before the pause.

    >>> from tinygrad_rnn.backend.jit_cache import kernels_cached
    >>> kernels_cached(["no_such_kernel_family"])  # a family that matches no kernel counts as cached
    True
"""
from __future__ import annotations

import os
from typing import Any, Iterable

__all__ = ["kernels_cached"]


def kernels_cached(families: Iterable[str]) -> bool:
    """True when every kernel family (a name prefix: ``"lstm"``, ``"adam"``, ``"xent"``) has code in Numba's cache.

    A family counts as cached when any of its kernels has an index file; a family that matches no
    kernel of the library's kernel modules is ignored.
    """
    import numba

    from . import cpu_kernels, optim_kernels, rnn_kernels

    families = list(families)
    found: dict[str, bool] = {}
    for mod in (cpu_kernels, rnn_kernels, optim_kernels):
        for name, obj in vars(mod).items():
            if not isinstance(obj, numba.core.registry.CPUDispatcher):
                continue
            for fam in families:
                if name.startswith(fam):
                    found[fam] = found.get(fam, False) or _index_exists(obj, mod.__file__, name)
    return all(found.values())


def _index_exists(dispatcher: Any, source: str, name: str) -> bool:
    try:  # numba's own record of where it keeps this function's index (a private attribute: hence the fallback)
        return os.path.exists(dispatcher._cache._cache_file._index_path)
    except AttributeError:  # another numba version: look for the file by its naming scheme
        folder = os.path.join(os.path.dirname(source), "__pycache__")
        stem = os.path.splitext(os.path.basename(source))[0]
        return os.path.isdir(folder) and any(f.startswith(f"{stem}.{name}-") and f.endswith(".nbi")
                                             for f in os.listdir(folder))
