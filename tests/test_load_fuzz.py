"""``tr.load`` of hostile files (issue 18), tested as the failures were found: by generating many cases.

Thousands of random bit flips, byte changes, truncations, insertions and splices of two real checkpoints
(a model's state dict + an optimizer's state + nested metadata; and a whole module) must each either load
exactly as the original did or raise a ``ValueError`` naming the file — never another exception, a hang, or
memory out of proportion to the file. Then the crafted cases that escaped before, one test each.
"""
from __future__ import annotations

import functools
import io
import json
import math
import os
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest

import tinygrad_rnn as tr
from tinygrad_rnn import nn
from tinygrad_rnn.serialization import _MANIFEST, FORMAT

CASES = 3000
SEED = 18


# ------------------------------------------------------------------------------------------------
# two real checkpoints


class _Word(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.rnn, self.out = nn.Embedding(17, 8, seed=1), nn.LSTM(8, 24, seed=2), nn.Linear(24, 17, seed=3)
        self.note = {"vocab": ["a", "b"], "dropout": 0.25, "tied": False}

    def forward(self, ids):
        h, _ = self.rnn(self.emb(ids))
        return self.out(h)


def _training_state() -> dict:
    model = _Word()
    opt = tr.optim.Adam(model.parameters(), lr=1e-3)
    ids = tr.tensor(np.arange(12).reshape(3, 4) % 17)
    model(ids).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optim": opt.state_dict(), "rng": tr.get_rng_state(),
            "meta": {"epoch": 3, "lr": np.float64(0.1), "best": float("inf"), "curve": [2.5, 1.25, float("nan")],
                     "flags": (True, None, "word"), 7: np.int32(-2), "w": tr.ones(3, requires_grad=True)}}


def _bytes(obj) -> bytes:
    buf = io.BytesIO()
    tr.save(obj, buf)
    return buf.getvalue()


def _same(a, b) -> bool:
    """Deep equality: same types, same dtypes and values (NaN equal to NaN), same module classes and state."""
    if type(a) is not type(b):
        return False
    if isinstance(a, nn.Module):
        return _same(dict(a.__dict__), dict(b.__dict__))
    if isinstance(a, tr.Tensor):
        return a.requires_grad == b.requires_grad and _same(a.numpy(), b.numpy())
    if isinstance(a, np.ndarray) or isinstance(a, np.generic):
        return a.dtype == b.dtype and np.shape(a) == np.shape(b) and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def _well_formed(obj, depth: int = 0) -> bool:
    """Only what tr.save writes: containers of plain values, arrays, tensors and allowed modules."""
    if depth > 70:
        return False
    if obj is None or isinstance(obj, (bool, int, float, str, np.ndarray, np.generic)):
        return not isinstance(obj, np.ndarray) or obj.dtype.kind in "biufc"
    if isinstance(obj, tr.Tensor):
        return True
    if isinstance(obj, nn.Module):
        return type(obj) in (_Word, nn.Embedding, nn.LSTM, nn.Linear) and _well_formed(dict(obj.__dict__), depth + 1)
    if isinstance(obj, (list, tuple)):
        return all(_well_formed(x, depth + 1) for x in obj)
    if isinstance(obj, dict):
        return all(_well_formed(k, depth + 1) and _well_formed(v, depth + 1) for k, v in obj.items())
    return isinstance(obj, set) and all(isinstance(x, str) for x in obj)  # a module's _none_params


@functools.lru_cache(maxsize=4)
def _members(data: bytes) -> tuple[tuple[str, bytes], ...]:
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return tuple((i.filename, zf.read(i)) for i in zf.infolist())


def _rezip(rng: np.random.Generator, data: bytes) -> tuple[str, bytes]:
    """One member's bytes changed and the zip rebuilt with correct CRCs: reaches the .npy header parser and
    the manifest's JSON decoder, which a CRC mismatch would otherwise shield."""
    members = list(_members(data))
    i = int(rng.integers(len(members))) if rng.random() < 0.5 else len(members) - 1  # the manifest half the time
    name, body = members[i]
    b = bytearray(body)
    if rng.random() < 0.3:
        b = b[:int(rng.integers(len(b) + 1))]
    else:
        for _ in range(int(rng.integers(1, 4))):
            # mostly inside the header/text, where a change is a different structure rather than a different number
            j = int(rng.integers(min(len(b), 256 if rng.random() < 0.7 else len(b))))
            b[j] = int(rng.integers(256)) if rng.random() < 0.5 else b[j] ^ (1 << int(rng.integers(8)))
    members[i] = (name, bytes(b))
    return "rezip", _zip(members, [(n, k) for k, (n, _) in enumerate(members)])


def _mutate(rng: np.random.Generator, data: bytes, other: bytes) -> tuple[str, bytes]:
    if rng.random() < 0.4:
        return _rezip(rng, data)
    b = bytearray(data)
    kind = rng.choice(["flip", "byte", "truncate", "splice", "insert", "delete", "swap"], p=[.3, .2, .1, .15, .1, .1, .05])
    n = len(b)
    if kind == "flip":
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(n))
            b[i] ^= 1 << int(rng.integers(8))
    elif kind == "byte":
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(n))] = int(rng.integers(256))
    elif kind == "truncate":
        b = b[:int(rng.integers(n))]
    elif kind == "splice":  # a run of bytes from the other checkpoint (or this one) pasted over a random place
        src = other if rng.random() < 0.5 else data
        i, j, k = int(rng.integers(len(src))), int(rng.integers(n)), int(rng.integers(1, 512))
        chunk = src[i:i + k]
        b[j:j + len(chunk)] = chunk
    elif kind == "insert":
        i = int(rng.integers(n))
        b[i:i] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    elif kind == "delete":
        i = int(rng.integers(n))
        del b[i:i + int(rng.integers(1, 64))]
    else:  # two runs of the file trade places
        k = int(rng.integers(1, 256))
        i, j = sorted(int(x) for x in rng.integers(0, n - k, 2))
        if i + k <= j:
            b[i:i + k], b[j:j + k] = b[j:j + k], b[i:i + k]
    return str(kind), bytes(b)


def test_thousands_of_corrupted_checkpoints_load_identically_or_raise_a_clean_error(tmp_path):
    with tr.serialization.safe_globals([_Word]):  # the whole-module checkpoint's class, allowed as a user would
        _fuzz(tmp_path)


def _fuzz(tmp_path):
    state = _training_state()
    bases = [_bytes(state), _bytes(_Word())]
    originals = [tr.load(io.BytesIO(b)) for b in bases]
    rng = np.random.default_rng(SEED)
    path = tmp_path / "case.npz"
    outcomes = {"identical": 0, "loaded, changed": 0, "refused": 0}
    kinds: dict[str, int] = {}
    escaped, different, peaks = [], [], []
    started = time.perf_counter()
    tracemalloc.start()
    try:
        for case in range(CASES):
            which = case % 2
            kind, data = _mutate(rng, bases[which], bases[1 - which])
            kinds[kind] = kinds.get(kind, 0) + 1
            path.write_bytes(data)
            tracemalloc.reset_peak()
            base_mem = tracemalloc.get_traced_memory()[0]
            try:
                back = tr.load(path)
            except ValueError as e:
                if str(path) not in str(e):
                    escaped.append((case, kind, f"ValueError not naming the file: {e}"))
                outcomes["refused"] += 1
            except Exception as e:  # noqa: BLE001 - the point: nothing else may escape
                escaped.append((case, kind, f"{type(e).__name__}: {e}"))
            else:
                if _same(back, originals[which]):
                    outcomes["identical"] += 1
                elif kind == "rezip" and _well_formed(back):
                    outcomes["loaded, changed"] += 1  # valid CRCs over changed bytes: a different, valid file
                else:
                    different.append((case, kind))
                del back
            peaks.append((tracemalloc.get_traced_memory()[1] - base_mem, len(data)))
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    worst_peak, worst_size = max(peaks)
    # a load holds the file's arrays (once: 1x) plus Python objects of a fixed size (zip entries, the
    # manifest's dicts); the bugs were 400x and +662 MiB
    excess = max(peak - 4 * size for peak, size in peaks)
    print(f"\n{CASES} corrupted checkpoints ({len(bases[0])} and {len(bases[1])} bytes) in {elapsed:.1f} s: {outcomes}, "
          f"by kind {kinds}; highest peak {worst_peak / 1024:.0f} KiB (file {worst_size / 1024:.0f} KiB), "
          f"at most {excess / 1024:.0f} KiB above 4x the file's size")
    assert not escaped, f"{len(escaped)} cases escaped as other exceptions, e.g. {escaped[:5]}"
    assert not different, f"{len(different)} cases loaded something different without an error, e.g. {different[:5]}"
    assert outcomes["refused"] > CASES // 2 and outcomes["identical"] > 0  # the mutations did reach both outcomes
    assert excess < 512 * 1024, f"a load's peak memory was {excess / 1024:.0f} KiB above 4x the file's size"


# ------------------------------------------------------------------------------------------------
# crafted files: a zip written by hand, so the central directory can say what we want


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=False)
    return buf.getvalue()


def _zip(members: list[tuple[str, bytes]], central: list[tuple[str, int]], version_needed: int = 20) -> bytes:
    """Stored members, then a central directory whose entries (name, index of the member it points at) we choose."""
    out, offsets = bytearray(), []
    for name, data in members:
        offsets.append(len(out))
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, zlib.crc32(data), len(data), len(data),
                           len(name), 0) + name.encode() + data
    cd_start = len(out)
    for name, i in central:
        data = members[i][1]
        out += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, version_needed, 0, 0, 0, 0, zlib.crc32(data), len(data),
                           len(data), len(name), 0, 0, 0, 0, 0, offsets[i]) + name.encode()
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), len(out) - cd_start, cd_start, 0)
    return bytes(out)


def _manifest(root) -> bytes:
    return json.dumps({"format": FORMAT, "version": 1, "root": root}).encode()


def _peak_load(path) -> tuple[object, int]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        try:
            out = tr.load(path)
        except ValueError as e:
            out = e
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_many_central_directory_entries_pointing_at_one_member_are_refused_without_reading_it_twice(tmp_path):
    big = _npy(np.zeros(1 << 20, np.uint8))  # 1 MiB
    man = _npy(np.frombuffer(_manifest([{"$array": i} for i in range(400)]), np.uint8))
    path = tmp_path / "bomb.npz"
    path.write_bytes(_zip([("a0.npy", big), (_MANIFEST + ".npy", man)],
                          [(f"a{i}.npy", 0) for i in range(400)] + [(_MANIFEST + ".npy", 1)]))
    out, peak = _peak_load(path)
    assert isinstance(out, ValueError) and str(path) in str(out) and "overlaps" in str(out), out
    assert peak < 3 * os.path.getsize(path), f"peak {peak / 2**20:.1f} MiB for a {os.path.getsize(path) / 2**20:.2f} MiB file"


def test_one_member_listed_twice_under_one_name_or_two_is_refused(tmp_path):
    a = _npy(np.arange(4.0))
    for central in ([("a0.npy", 0), ("a0.npy", 0)], [("a0.npy", 0), ("a1.npy", 0)]):
        path = tmp_path / "dup.npz"
        path.write_bytes(_zip([("a0.npy", a)], central))
        with pytest.raises(ValueError, match=r"dup\.npz.*(twice|overlaps)"):
            tr.load(path)


def test_150_references_to_one_array_share_it_instead_of_copying(tmp_path):
    arr = np.arange(512 * 1024, dtype=np.int64).astype(np.uint8)  # 512 KiB
    for node in ({"$array": 0}, {"$tensor": 0, "requires_grad": False, "device": "cpu"}):
        path = tmp_path / "refs.npz"
        np.savez(path, a0=arr, **{_MANIFEST: np.frombuffer(_manifest([node] * 150), np.uint8)})
        out, peak = _peak_load(path)
        assert isinstance(out, list) and len(out) == 150 and all(x is out[0] for x in out)
        # one array, and for a tensor one int64 widening of it (8x): +662 MiB before
        assert peak < 12 * os.path.getsize(path), f"peak {peak / 2**20:.1f} MiB"
    path = tmp_path / "conflict.npz"
    np.savez(path, a0=np.ones(3), **{_MANIFEST: np.frombuffer(_manifest([
        {"$tensor": 0, "requires_grad": False, "device": "cpu"}, {"$tensor": 0, "requires_grad": True, "device": "cpu"}]),
        np.uint8)})
    with pytest.raises(ValueError, match="conflict.npz.*two different tensors"):
        tr.load(path)


def test_a_5000_digit_integer_in_the_manifest_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "digits.npz"
    text = b'{"format": "%s", "version": 1, "root": 1%s}' % (FORMAT.encode(), b"0" * 4999)
    np.savez(path, **{_MANIFEST: np.frombuffer(text, np.uint8)})
    with pytest.raises(ValueError, match=r"digits\.npz.*integer of 5000 digits"):
        tr.load(path)
    with pytest.raises(ValueError, match="digits"):  # and save refuses to write one it could not read back
        tr.save({"n": 10 ** 5000}, tmp_path / "big.npz")
    tr.save({"n": 2 ** 128 - 1}, tmp_path / "ok.npz")  # PCG64-sized ints are fine
    assert tr.load(tmp_path / "ok.npz") == {"n": 2 ** 128 - 1}


def test_a_zip_version_from_the_future_and_a_broken_npy_header_are_clean_value_errors(tmp_path):
    a = _npy(np.arange(4.0))
    path = tmp_path / "future.npz"
    path.write_bytes(_zip([("a0.npy", a)], [("a0.npy", 0)], version_needed=99))
    with pytest.raises(ValueError, match=r"future\.npz.*NotImplementedError"):  # zipfile: "zip file version 9.9"
        tr.load(path)
    # an unterminated string in the .npy header dict: NumPy's parser raised tokenize.TokenError
    bad = a.replace(b"'descr': '<f8'", b"'descr': '<f8 ")
    assert bad != a
    path = tmp_path / "header.npz"
    path.write_bytes(_zip([("a0.npy", bad)], [("a0.npy", 0)]))
    with pytest.raises(ValueError, match=r"header\.npz.*member 'a0\.npy' is unreadable"):
        tr.load(path)


def test_a_fifo_is_refused_at_once_instead_of_blocking(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = tmp_path / "pipe.npz"
    os.mkfifo(path)
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"pipe\.npz.*not a regular file"):
        tr.load(path)
    assert time.monotonic() - started < 5
    import socket

    sock_path = str(tmp_path / "s.npz")
    with socket.socket(socket.AF_UNIX) as sock:  # a socket file can't be opened at all: still a clean refusal
        sock.bind(sock_path)
        with pytest.raises(ValueError, match=r"s\.npz.*not a regular file"):
            tr.load(sock_path)
