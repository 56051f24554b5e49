"""Token <-> id mapping for characters or words.

Pure NumPy on purpose: the data layer must work without the autograd engine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

from tinygrad_rnn import _checks

SortOrder = Literal["frequency", "alphabetical"]


class Vocab:
    """A fixed token <-> id mapping with optional special tokens.

    Ids are assigned as: the special tokens first, in the order ``pad``,
    ``unk``, ``eos``, ``*extra_specials`` (a ``None`` special is omitted, so
    ``<pad>`` is id 0 whenever it is present), then the ordinary tokens that
    occur at least ``min_freq`` times, most frequent first (ties broken
    alphabetically, so the ids do not depend on the corpus order) or in
    alphabetical order. ``max_size`` caps the *total* size, specials included.
    A special token that also occurs in the corpus (PTB's text contains
    ``<unk>``) keeps its special id and is not added twice.

    Example: ``Vocab.words("a b a".split()).encode(["a", "zzz"])`` -> ``array([2, 1])``.
    """

    def __init__(
        self,
        tokens: Iterable[str] = (),
        *,
        min_freq: int = 1,
        max_size: int | None = None,
        pad: str | None = "<pad>",
        unk: str | None = "<unk>",
        eos: str | None = None,
        extra_specials: Sequence[str] = (),
        sort: SortOrder = "frequency",
    ) -> None:
        _checks.positive_int("min_freq", min_freq)
        _checks.one_of("sort", sort, ("frequency", "alphabetical"))
        specials = [s for s in (pad, unk, eos, *extra_specials) if s is not None]
        if max_size is not None:
            _checks.int_at_least(f"max_size (which counts the {len(specials)} specials)", max_size, len(specials))
        counts = Counter(tokens)
        special_set = set(specials)
        kept = [t for t, c in counts.items() if c >= min_freq and t not in special_set]
        if sort == "frequency":
            kept.sort(key=lambda t: (-counts[t], t))
        else:
            kept.sort()
        if max_size is not None:
            kept = kept[: max_size - len(specials)]
        self.counts: Counter[str] = counts
        self._set_itos([*specials, *kept], pad=pad, unk=unk, eos=eos)

    # -- construction helpers -------------------------------------------------

    @classmethod
    def chars(cls, text: str, **kwargs: Any) -> Vocab:
        """Character vocabulary: sorted characters, no specials unless asked for.

        Tiny Shakespeare's 65 characters get ids 0..64 as in char-rnn/nanoGPT.

        Example: ``Vocab.chars("hello").itos`` -> ``['e', 'h', 'l', 'o']``.
        """
        kwargs.setdefault("pad", None)
        kwargs.setdefault("unk", None)
        kwargs.setdefault("eos", None)
        kwargs.setdefault("sort", "alphabetical")
        return cls(text, **kwargs)

    @classmethod
    def words(cls, tokens: Iterable[str], **kwargs: Any) -> Vocab:
        """Word vocabulary: ``<pad>``=0, ``<unk>``=1, then words by frequency.

        For PTB's standard 10k vocabulary use ``pad=None, eos="<eos>"``.

        Example: ``len(Vocab.words(load_ptb("train"), pad=None, eos="<eos>"))`` -> ``10000``.
        """
        return cls(tokens, **kwargs)

    @classmethod
    def from_itos(
        cls,
        itos: Sequence[str],
        *,
        pad: str | None = None,
        unk: str | None = None,
        eos: str | None = None,
    ) -> Vocab:
        """Build a vocabulary from an explicit id -> token list.

        Example: ``Vocab.from_itos(["<pad>", "a"], pad="<pad>").encode(["a"])`` -> ``array([1])``.
        """
        vocab = cls.__new__(cls)
        vocab.counts = Counter()
        vocab._set_itos(list(itos), pad=pad, unk=unk, eos=eos)
        return vocab

    def _set_itos(self, itos: list[str], *, pad: str | None, unk: str | None, eos: str | None) -> None:
        if not all(isinstance(t, str) for t in itos):
            bad = next(t for t in itos if not isinstance(t, str))
            raise TypeError(f"vocabulary tokens must be str, got {type(bad).__name__} {bad!r}")
        stoi = {t: i for i, t in enumerate(itos)}
        if len(stoi) != len(itos):
            dup = next(t for t in itos if itos.count(t) > 1)
            raise ValueError(f"duplicate token {dup!r} in vocabulary")
        for name, tok in (("pad", pad), ("unk", unk), ("eos", eos)):
            if tok is not None and tok not in stoi:
                raise ValueError(f"{name} token {tok!r} is not in the vocabulary")
        if pad is not None and stoi[pad] != 0:
            raise ValueError(f"pad token {pad!r} must have id 0, has id {stoi[pad]}")
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = stoi
        self.pad, self.unk, self.eos = pad, unk, eos

    # -- special ids ----------------------------------------------------------

    @property
    def pad_id(self) -> int | None:
        """Id of the padding token (always 0), or None without one."""
        return None if self.pad is None else self.stoi[self.pad]

    @property
    def unk_id(self) -> int | None:
        """Id that unknown tokens map to, or None (then unknown tokens raise)."""
        return None if self.unk is None else self.stoi[self.unk]

    @property
    def eos_id(self) -> int | None:
        """Id of the end-of-sequence token, or None without one."""
        return None if self.eos is None else self.stoi[self.eos]

    # -- mapping --------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        head = ", ".join(repr(t) for t in self.itos[:5])
        more = ", ..." if len(self) > 5 else ""
        return f"Vocab(size={len(self)}, pad={self.pad!r}, unk={self.unk!r}, eos={self.eos!r}, itos=[{head}{more}])"

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Map tokens to an int64 id array; unknown tokens become ``unk``.

        A ``str`` is iterated character by character (right for a char vocab;
        for a word vocab pass ``text.split()``). Without an ``unk`` token an
        unknown token raises ValueError.

        Example: ``Vocab.chars("hello").encode("hole")`` -> ``array([1, 3, 2, 0])``.
        """
        stoi = self.stoi
        unk_id = self.unk_id
        if unk_id is None:
            try:
                ids = [stoi[t] for t in tokens]
            except KeyError as err:
                raise ValueError(
                    f"token {err.args[0]!r} is not in the vocabulary (size {len(self)}) and the vocabulary has no unk token"
                ) from None
        else:
            ids = [stoi.get(t, unk_id) for t in tokens]
        return np.array(ids, dtype=np.int64)

    def decode(self, ids: Iterable[int] | np.ndarray) -> list[str]:
        """Map ids back to tokens; ``"".join(...)`` for characters.

        Example: ``Vocab.chars("hello").decode([1, 0])`` -> ``['h', 'e']``.
        """
        arr = np.asarray(ids)
        if arr.size == 0:
            return []
        if arr.ndim != 1:
            raise ValueError(f"decode expects a 1-D sequence of ids, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"decode expects integer ids, got dtype {arr.dtype}")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= len(self):
            bad = lo if lo < 0 else hi
            raise ValueError(f"id {bad} is out of range for a vocabulary of size {len(self)}")
        itos = self.itos
        return [itos[i] for i in arr.tolist()]

    # -- serialisation --------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description, e.g. to store inside a checkpoint.

        Example: ``Vocab.from_dict(json.loads(json.dumps(v.to_dict()))) == v`` -> ``True``.
        """
        return {"itos": list(self.itos), "pad": self.pad, "unk": self.unk, "eos": self.eos}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Vocab:
        """Inverse of :meth:`to_dict`.

        Example: ``Vocab.from_dict({"itos": ["a", "b"]}).encode(["b"])`` -> ``array([1])``.
        """
        if not isinstance(state, dict) or "itos" not in state:
            raise ValueError("Vocab.from_dict expects a dict with an 'itos' list (from Vocab.to_dict)")
        return cls.from_itos(state["itos"], pad=state.get("pad"), unk=state.get("unk"), eos=state.get("eos"))
