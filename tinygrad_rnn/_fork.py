"""Locks a forked child can use: a lock held by another thread at ``fork`` stays held forever in the
child (the thread holding it does not exist there), so each module-level lock is made anew in the child.

    >>> import threading
    >>> from tinygrad_rnn._fork import renew_in_child
    >>> _lock = threading.Lock()
    >>> renew_in_child(globals(), "_lock", threading.Lock)
"""
from __future__ import annotations

import os
from typing import Any, Callable


def renew_in_child(namespace: dict[str, Any], name: str, make: Callable[[], Any]) -> None:
    """After a fork, the child's ``namespace[name]`` is a fresh ``make()`` (multiprocessing forks on Linux)."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=lambda: namespace.__setitem__(name, make()))
