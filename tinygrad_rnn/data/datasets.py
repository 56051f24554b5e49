"""Loaders for the datasets shipped gzip-compressed in ``tinygrad_rnn/data/files``.

Provenance, sizes and checksums of every file: ``files/README.md``.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).parent / "files"

# sha256 of the *decompressed* bytes; identical to the source files (files/README.md).
CHECKSUMS: dict[str, str] = {
    "input.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    "train.tsv": "447fe95b2ccfb18711b1adaec0eab0c8fa672a5c24e25ff29863e44785aee9af",
    "dev.tsv": "ecff64a246f7527d9222f044a6b704a0f1480df8bd1335467356c80a93549a0c",
    "test.tsv": "899e95cf02d91ad0577f133dc68567edfa994bfb18c72cfd9dd4a08e6aae11b6",
    "train_phrases.tsv": "7f3fb615374637f510786446ab5c0e602e957a5d6efebcc67a003971b9d537e0",
}

PTB_SPLITS = ("train", "valid", "test")
SST2_SPLITS = ("train", "dev", "test")


def read_text(name: str, *, verify: bool = True, data_dir: str | Path | None = None) -> str:
    """Decompress ``<data_dir>/<name>.gz`` and return it as UTF-8 text.

    With ``verify`` (default; costs ~10 ms per MB) the sha256 of the
    decompressed bytes must equal ``CHECKSUMS[name]``, else ValueError.

    Example: ``len(read_text("input.txt"))`` -> ``1115394``.
    """
    path = Path(DATA_DIR if data_dir is None else data_dir) / f"{name}.gz"
    if not path.is_file():
        raise FileNotFoundError(
            f"dataset file not found: {path} (the package ships it in tinygrad_rnn/data/files/; "
            "reinstall, or pass data_dir= pointing at a folder holding it)"
        )
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if verify:
        if name not in CHECKSUMS:
            raise ValueError(f"no known checksum for {name!r}; pass verify=False to load it unchecked")
        digest = hashlib.sha256(raw).hexdigest()
        if digest != CHECKSUMS[name]:
            raise ValueError(
                f"checksum mismatch for {path}: sha256 of the decompressed content is {digest}, "
                f"expected {CHECKSUMS[name]} (file corrupted or modified; pass verify=False to load anyway)"
            )
    return raw.decode("utf-8")


def load_tinyshakespeare(*, verify: bool = True, data_dir: str | Path | None = None) -> str:
    """The 1,115,394-character Tiny Shakespeare text (char-rnn's ``input.txt``).

    Example: ``text = load_tinyshakespeare(); train, val, test = split_text(text)``.
    """
    return read_text("input.txt", verify=verify, data_dir=data_dir)


def split_text(text: str, val_fraction: float = 0.05, test_fraction: float = 0.05) -> tuple[str, str, str]:
    """Split a text into contiguous (train, val, test) parts, in that order.

    The default 90/5/5 keeps a test part that no tuning has seen; char-rnn's
    own split is ``val_fraction=0.05, test_fraction=0.0`` (95/5). The val and
    test sizes are ``int(len(text) * fraction)``; train gets the rest. For
    Tiny Shakespeare that is 1,003,856 / 55,769 / 55,769 characters.

    Example: ``split_text("abcdefghijklmnopqrst")`` -> ``('abcdefghijklmnopqr', 's', 't')``.
    """
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {frac!r}")
    n = len(text)
    n_val, n_test = int(n * val_fraction), int(n * test_fraction)
    n_train = n - n_val - n_test
    if n_train <= 0:
        raise ValueError(f"nothing left for training: len(text)={n}, val_fraction={val_fraction}, test_fraction={test_fraction}")
    return text[:n_train], text[n_train : n_train + n_val], text[n_train + n_val :]


def load_ptb(split: str, *, verify: bool = True, data_dir: str | Path | None = None) -> list[str]:
    """Word tokens of a Penn Treebank split, one ``<eos>`` at the end of every line.

    This is exactly Mikolov's/Zaremba's reader (newline -> ``<eos>``, split on
    whitespace): 929,589 / 73,760 / 82,430 tokens for train / valid / test, and
    10,000 types including ``<unk>`` and ``<eos>``.

    Example: ``load_ptb("valid")[:3]`` -> ``['consumers', 'may', 'want']``.
    """
    if split not in PTB_SPLITS:
        raise ValueError(f"PTB split must be one of {PTB_SPLITS}, got {split!r}")
    text = read_text(f"ptb.{split}.txt", verify=verify, data_dir=data_dir)
    tokens: list[str] = []
    for line in text.split("\n")[:-1]:  # the file ends with "\n": the last piece is empty
        tokens.extend(line.split())
        tokens.append("<eos>")
    return tokens


def load_sst2(
    split: str, phrases: bool = False, *, verify: bool = True, data_dir: str | Path | None = None
) -> tuple[list[list[str]], np.ndarray]:
    """SST-2 sentences (already lower-cased, PTB-tokenised) and binary labels.

    Returns ``(docs, labels)``: each doc is its line split on ASCII spaces
    (a few tokens contain a no-break space, e.g. ``8\\xa01\\/2``, and stay whole),
    labels an int64 array of 0 (negative) / 1 (positive). Splits hold
    6,920 / 872 / 1,821 sentences. ``phrases=True`` (train only) gives the
    77,189 labelled phrases of the training trees instead (sentences included;
    stored in tree order, so shuffle before training).

    Example: ``docs, labels = load_sst2("dev"); docs[0][:3], labels[0]`` -> ``(['one', 'long', 'string'], 0)``.
    """
    if split not in SST2_SPLITS:
        raise ValueError(f"SST-2 split must be one of {SST2_SPLITS}, got {split!r}")
    if phrases and split != "train":
        raise ValueError(f"phrase-level data exists for the train split only, got split={split!r}")
    name = "train_phrases.tsv" if phrases else f"{split}.tsv"
    text = read_text(name, verify=verify, data_dir=data_dir)
    docs: list[list[str]] = []
    labels: list[int] = []
    # split on "\n" only: str.splitlines() would also break on U+0085 and friends
    for lineno, line in enumerate(text.split("\n")[:-1], start=1):
        label, sep, sentence = line.partition("\t")
        if not sep or label not in ("0", "1"):
            raise ValueError(f"{name}, line {lineno}: expected 'label<TAB>sentence' with label 0/1, got {line[:60]!r}")
        docs.append(sentence.split(" "))
        labels.append(int(label))
    return docs, np.array(labels, dtype=np.int64)
