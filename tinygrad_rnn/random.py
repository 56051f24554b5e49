"""Random numbers: always drawn on the host, so a seed gives the same values on every device."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Generator", "manual_seed", "get_rng_state", "set_rng_state"]


class Generator:
    """A seeded source of random numbers (``tr.Generator(0)``), wrapping NumPy's PCG64.

    Its state can be saved and restored exactly, so a resumed run draws the same numbers:

        >>> g = Generator(0); s = g.get_state(); a = g.rng.random(); _ = g.set_state(s); a == g.rng.random()
        True
    """

    def __init__(self, seed: int | None = None):
        self.manual_seed(seed)

    def manual_seed(self, seed: int | None) -> Generator:
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        return self

    def get_state(self) -> dict[str, Any]:
        """The PCG64 state as a plain dict of ints and strings (``tr.save`` holds it; JSON does too)."""
        st = self.rng.bit_generator.state
        return {"bit_generator": st["bit_generator"], "state": {"state": int(st["state"]["state"]),
                "inc": int(st["state"]["inc"])}, "has_uint32": int(st["has_uint32"]), "uinteger": int(st["uinteger"])}

    def set_state(self, state: dict[str, Any]) -> Generator:
        """Restore a state from :meth:`get_state`, in place (everything holding ``self.rng`` sees it)."""
        self.rng.bit_generator.state = _check_rng_state(state)
        return self


def _check_rng_state(state: Any) -> dict[str, Any]:
    def bad(msg: str) -> ValueError:
        return ValueError(f"invalid generator state: {msg}")

    if not isinstance(state, dict):
        raise TypeError(f"a generator state must be a dict from get_state(), got {type(state).__name__}")
    expected = {"bit_generator", "state", "has_uint32", "uinteger"}
    if set(state) != expected:
        raise bad(f"keys {sorted(map(str, state))}, expected {sorted(expected)}")
    if state["bit_generator"] != "PCG64":
        raise bad(f"bit_generator is {state['bit_generator']!r}, expected 'PCG64'")
    inner = state["state"]
    if not isinstance(inner, dict) or set(inner) != {"state", "inc"}:
        raise bad("'state' must be a dict with keys 'inc' and 'state'")

    def check_int(where: str, v: Any, bits: int) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) < 2**bits:
            raise bad(f"{where} must be an integer in [0, 2**{bits}), got {v!r}")
        return int(v)

    pcg = {"state": check_int("state['state']", inner["state"], 128), "inc": check_int("state['inc']", inner["inc"], 128)}
    out = {"bit_generator": "PCG64", "state": pcg, "has_uint32": check_int("has_uint32", state["has_uint32"], 1),
           "uinteger": check_int("uinteger", state["uinteger"], 32)}
    if out["state"]["inc"] % 2 == 0:
        raise bad("state['inc'] must be odd (PCG64's increment always is)")
    return out


_default_generator = Generator(None)


def manual_seed(seed: int) -> Generator:
    """Seed the global generator used when neither ``seed`` nor ``generator`` is given."""
    return _default_generator.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    """The default generator's state (``torch.get_rng_state``'s role; a dict here, not a byte tensor).

    >>> s = get_rng_state(); a = _rng(None, None).random(); set_rng_state(s); a == _rng(None, None).random()
    True
    """
    return _default_generator.get_state()


def set_rng_state(new_state: dict[str, Any]) -> None:
    """Restore the default generator from :func:`get_rng_state`; dropout and the factories then repeat exactly."""
    _default_generator.set_state(new_state)


def _rng(seed: int | None, generator: Generator | None) -> np.random.Generator:
    if seed is not None and generator is not None:
        raise ValueError("give either seed= or generator=, not both")
    if seed is not None:
        return np.random.default_rng(seed)
    if generator is not None:
        if not isinstance(generator, Generator):
            raise TypeError(f"generator must be a tinygrad_rnn.Generator, got {type(generator).__name__}")
        return generator.rng
    return _default_generator.rng

