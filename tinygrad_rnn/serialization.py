"""``tr.save`` / ``tr.load``: a whole training state in one pickle-free, atomically written file.

The file is an ``.npz`` (a zip of ``.npy`` members, stored uncompressed): every array or tensor is one
member written with ``allow_pickle=False``, and the structure around them (dicts, lists, tuples, numbers,
strings, bools, None) is a JSON manifest in one more member, with a format version. Nothing in the file is
ever unpickled or executed, and :func:`load` checks every member's ``.npy`` header against the bytes the
member really holds before reading it, so a hostile file costs at most its own size in memory.

    >>> import tinygrad_rnn as tr, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
    >>> tr.save({"w": tr.ones(2, requires_grad=True), "step": 3, "lr": float("inf")}, path)
    >>> tr.load(path)["lr"], tr.load(path)["w"].requires_grad
    (inf, True)
"""
from __future__ import annotations

import io
import json
import math
import os
import secrets
import struct
import zipfile
import zlib
from typing import IO, Any, Callable

import numpy as np

from .backend import backend_of_array, get_backend, host_array, normalize_device
from .tensor import Tensor

__all__ = ["save", "load", "atomic_write", "FORMAT_VERSION"]

FORMAT = "tinygrad_rnn.save"
FORMAT_VERSION = 1
_MANIFEST = "__tinygrad_rnn_manifest__"
LEGACY_META_KEY = "__tinygrad_rnn_meta__"  # nn.save's format before tr.save existed: named arrays + JSON metadata
_MAX_DEPTH = 64  # nesting deeper than this is refused on save and on load (a hostile manifest can't blow the stack)
_ARRAY_KINDS = "biufc"  # bool, integers, floats, complex: no objects, strings, structs or void
_TMP_MARK = ".tmp-"


# ---------------------------------------------------------------------------------------------
# encoding: Python object -> (JSON-able tree, list of host arrays)


def _encode(obj: Any, arrays: list[np.ndarray], where: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise ValueError(f"tr.save: {where} is nested more than {_MAX_DEPTH} levels deep (a cycle?)")
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):  # before float; bool is handled above
        return int(obj)
    if isinstance(obj, float):
        # JSON has no nan/inf; finite floats round-trip exactly through repr
        return float(obj) if math.isfinite(obj) else {"$float": repr(float(obj))}
    if isinstance(obj, Tensor):
        arrays.append(_host_array(obj.numpy(), where))
        return {"$tensor": len(arrays) - 1, "requires_grad": bool(obj.requires_grad), "device": obj.device}
    if isinstance(obj, np.generic):
        arrays.append(_host_array(np.asarray(obj), where))
        return {"$scalar": len(arrays) - 1}
    if backend_of_array(obj) is not None:
        arrays.append(_host_array(host_array(obj), where))
        return {"$array": len(arrays) - 1}
    if isinstance(obj, tuple):
        return {"$tuple": [_encode(v, arrays, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, arrays, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not (k is None or isinstance(k, (bool, int, float, str, tuple))):
                raise TypeError(f"tr.save: {where} has a key of type {type(k).__name__}; keys must be str, int, "
                                "float, bool, None or tuples of them")
            items.append([_encode(k, arrays, f"{where} key {k!r}", depth + 1),
                          _encode(v, arrays, f"{where}[{k!r}]", depth + 1)])
        return {"$dict": items}
    raise TypeError(f"tr.save: cannot save {where} of type {type(obj).__name__}: only tensors, NumPy arrays, "
                    "dicts, lists, tuples, int, float, str, bool and None are saved (nothing is pickled)")


def _host_array(a: Any, where: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in _ARRAY_KINDS or a.dtype.fields is not None:
        raise TypeError(f"tr.save: {where} is an array of dtype {a.dtype}; only bool, integer, float and complex "
                        "arrays are saved (object arrays would need pickle)")
    return a


# ---------------------------------------------------------------------------------------------
# writing, atomically


def save(obj: Any, f: str | os.PathLike) -> None:
    """Write ``obj`` (nested dicts/lists/tuples of tensors, arrays, numbers, str, bool, None) to ``f``.

    Atomic: the data goes to a temporary file beside ``f`` that is fsynced and then renamed over ``f``,
    so a crash leaves either the old file or the new one; stale temporaries of dead writers to the same
    ``f`` are removed by the next save. The file gets the usual permissions (``0o666`` less the umask).

    >>> # tr.save({"model": m.state_dict(), "optim": opt.state_dict(), "rng": tr.get_rng_state()}, "ckpt.npz")
    """
    if hasattr(f, "write") or not isinstance(f, (str, os.PathLike)):
        raise TypeError(f"tr.save: f must be a path (str or os.PathLike), got {type(f).__name__}")
    path = os.fspath(f)
    arrays: list[np.ndarray] = []
    root = _encode(obj, arrays, "obj", 0)  # before touching the disk: a bad object leaves no file behind
    manifest = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "root": root}, allow_nan=False)
    members = {f"a{i}": a for i, a in enumerate(arrays)}
    members[_MANIFEST] = np.frombuffer(manifest.encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda fh: np.savez(fh, allow_pickle=False, **members))


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[IO[bytes]], Any]) -> str:
    """Write ``data`` (bytes, text as UTF-8, or a function that writes into a binary file) to ``path``, atomically.

    The data goes to a temporary file beside ``path`` that is fsynced and then renamed over it, so a crash
    leaves either the old file or the new one, never half of one; stale temporaries of dead writers to the
    same ``path`` are removed first. The file gets the mode a plain ``open()`` would give it (``0o666`` less
    the umask; ``mkstemp``'s 0600 would hide results from a group). Returns ``path``.

    >>> # tr.serialization.atomic_write("results.json", json.dumps(results))
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory")
    folder, base = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    _remove_stale_temporaries(folder, base)
    prefix = f".{base}{_TMP_MARK}{os.getpid()}-"
    while True:
        tmp = os.path.join(folder, prefix + secrets.token_hex(4))
        try:
            # os.open with 0o666 lets the kernel apply the umask (mkstemp would force 0o600)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)
    return path


def _fsync_folder(folder: str) -> None:
    # makes the rename itself durable; not every platform can open a directory
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temporaries(folder: str, base: str) -> None:
    """Delete ``.<base>.tmp-<pid>-<hex>`` files whose writer process no longer exists (a crash mid-save)."""
    prefix = f".{base}{_TMP_MARK}"
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        pid_part = name[len(prefix):].split("-", 1)[0]
        # our own temporaries are removed by save's except clause (and a thread of ours may be writing one);
        # another live process may be writing this very file right now
        if not pid_part.isdigit() or int(pid_part) == os.getpid() or _pid_alive(int(pid_part)):
            continue
        try:
            os.unlink(os.path.join(folder, name))
        except OSError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but is not ours, or we cannot tell: leave its file alone
    return True


# ---------------------------------------------------------------------------------------------
# reading an untrusted file


class _Refused(ValueError):
    pass


def _read_members(path: str) -> dict[str, np.ndarray]:
    """Every ``.npy`` member of the zip at ``path``, each header checked before its data is read."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(6)
        if head.startswith(b"\x93NUMPY"):
            raise _Refused("it is a single .npy array, not a checkpoint (.npz)")
        if not head.startswith(b"PK"):
            raise _Refused("it is not a zip/.npz file (wrong magic bytes)")
        fh.seek(0)
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
            raise _Refused(f"it is not a readable zip/.npz file ({type(e).__name__}: {e})") from None
        with zf:
            out: dict[str, np.ndarray] = {}
            for info in zf.infolist():
                name = info.filename
                if not name.endswith(".npy"):
                    raise _Refused(f"member {name!r} is not a .npy array")
                key = name[:-4]
                if key in out:
                    raise _Refused(f"member {name!r} appears twice")
                if info.compress_type != zipfile.ZIP_STORED:
                    # a deflated member can inflate far beyond the file's size; tr.save never compresses
                    raise _Refused(f"member {name!r} is compressed (zip method {info.compress_type})")
                if info.flag_bits & 0x1:
                    raise _Refused(f"member {name!r} is encrypted")
                try:
                    out[key] = _read_npy(fh, size, info, name)
                except _Refused:
                    raise
                except (ValueError, OSError, EOFError, KeyError, TypeError, SyntaxError) as e:
                    raise _Refused(f"member {name!r} is unreadable ({type(e).__name__}: {e})") from None
    return out


_LOCAL_HEADER = struct.Struct("<4s22xHH")  # a zip local file header: signature ... name length, extra length
_MAX_NPY_HEADER = 10_016  # NumPy's own limit on a .npy header (10000) plus its magic and length fields


def _read_npy(fh: Any, size: int, info: zipfile.ZipInfo, name: str) -> np.ndarray:
    """One stored member, read straight from the file into its array after its header was checked.

    Not through ``ZipFile.open``: that would read the data into a bytes object and copy it once more.
    The CRC is checked here instead, over the same bytes.
    """
    fh.seek(info.header_offset)
    local = fh.read(_LOCAL_HEADER.size)
    if len(local) != _LOCAL_HEADER.size or _LOCAL_HEADER.unpack(local)[0] != b"PK\x03\x04":
        raise _Refused(f"member {name!r} has no valid local zip header")
    _, name_len, extra_len = _LOCAL_HEADER.unpack(local)
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    if info.file_size != info.compress_size or start + info.compress_size > size:
        raise _Refused(f"member {name!r} declares {info.file_size} bytes, more than the file holds")
    fh.seek(start)
    prefix = fh.read(min(info.compress_size, _MAX_NPY_HEADER))
    m = io.BytesIO(prefix)
    fmt = np.lib.format
    version = fmt.read_magic(m)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(m)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = fmt.read_array_header_2_0(m)
    else:
        raise _Refused(f"member {name!r} has an unknown .npy version {version}")
    if dtype.hasobject or dtype.kind not in _ARRAY_KINDS or dtype.fields is not None:
        raise _Refused(f"member {name!r} has dtype {dtype}: object/structured arrays are refused (they need pickle)")
    count = 1
    for n in shape:
        count *= int(n)  # Python ints: a 10**13-element claim is just a big number, nothing is allocated
    header_len = m.tell()
    declared, available = count * dtype.itemsize, info.compress_size - header_len
    if declared != available:
        raise _Refused(f"member {name!r} declares shape {tuple(shape)} of {dtype} ({declared} bytes) "
                       f"but holds {available} bytes")
    arr = np.empty(count, dtype=dtype)  # only now, and only as large as the bytes the file really holds
    raw = arr.view(np.uint8)  # the same memory as bytes, whatever the dtype (complex, bool, big-endian)
    fh.seek(start + header_len)
    got = 0
    while got < declared:
        n = fh.readinto(raw[got:])
        if not n:
            raise _Refused(f"member {name!r} is truncated")
        got += n
    if zlib.crc32(raw, zlib.crc32(prefix[:header_len])) != info.CRC:
        raise _Refused(f"member {name!r} is corrupt (CRC-32 mismatch)")
    arr = arr.reshape(shape, order="F" if fortran else "C")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


# ---------------------------------------------------------------------------------------------
# decoding: JSON tree + arrays -> Python object


class _Decoder:
    def __init__(self, arrays: dict[str, np.ndarray], device: str | None):
        self.arrays, self.device = arrays, device

    def array(self, index: Any) -> np.ndarray:
        if isinstance(index, bool) or not isinstance(index, int) or f"a{index}" not in self.arrays:
            raise _Refused(f"the manifest refers to array {index!r}, which the file does not hold")
        return self.arrays[f"a{index}"]

    def __call__(self, node: Any, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise _Refused(f"the manifest is nested more than {_MAX_DEPTH} levels deep")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self(v, depth + 1) for v in node]
        if not isinstance(node, dict) or len(node) == 0:
            raise _Refused(f"the manifest holds an unknown entry {str(node)[:80]}")
        tag = next(iter(node))
        if tag == "$float" and len(node) == 1 and node[tag] in ("nan", "inf", "-inf"):
            return float(node[tag])
        if tag == "$tuple" and len(node) == 1 and isinstance(node[tag], list):
            return tuple(self(v, depth + 1) for v in node[tag])
        if tag == "$dict" and len(node) == 1 and isinstance(node[tag], list):
            out = {}
            for item in node[tag]:
                if not isinstance(item, list) or len(item) != 2:
                    raise _Refused("the manifest holds a malformed dict entry")
                k = self(item[0], depth + 1)
                try:
                    hash(k)
                except TypeError:
                    raise _Refused(f"the manifest holds an unhashable dict key {k!r}") from None
                out[k] = self(item[1], depth + 1)
            return out
        if tag == "$array" and len(node) == 1:
            return self.array(node[tag])
        if tag == "$scalar" and len(node) == 1:
            a = self.array(node[tag])
            if a.shape != ():
                raise _Refused(f"the manifest's scalar {node[tag]} is an array of shape {a.shape}")
            return a[()]
        if tag == "$tensor" and set(node) == {"$tensor", "requires_grad", "device"}:
            a = self.array(node[tag])
            grad = node["requires_grad"]
            if not isinstance(grad, bool) or not isinstance(node["device"], str):
                raise _Refused("the manifest holds a malformed tensor entry")
            try:
                device = self.device or normalize_device(node["device"])
            except (TypeError, ValueError) as e:
                raise _Refused(f"the manifest names a bad device ({e})") from None
            try:
                return Tensor(a, requires_grad=grad, device=device)
            except (TypeError, ValueError) as e:  # e.g. requires_grad on an integer tensor
                raise _Refused(f"array a{node[tag]} can't be a tensor ({e})") from None
        raise _Refused(f"the manifest holds an unknown entry {str(node)[:80]}")


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"the manifest holds a bare {name}, which tr.save never writes")


def load(f: str | os.PathLike, map_location: Any = None) -> Any:
    """Read what :func:`save` wrote; tensors come back on their saved device, or on ``map_location``.

    Untrusted files are safe to load: nothing is unpickled or executed, every member's declared
    shape and dtype are checked against the bytes it really holds before anything is allocated, and
    any problem is a ``ValueError`` naming the file (and the member). ``map_location`` is ``None``,
    ``"cpu"`` or ``"cuda"`` as in ``torch.load``. Files written by the older ``nn.save`` load as
    ``{"state_dict": {name: array}, "meta": {...}}``.

    >>> # state = tr.load("ckpt.npz", map_location="cpu")
    """
    if hasattr(f, "read") or not isinstance(f, (str, os.PathLike)):
        raise TypeError(f"tr.load: f must be a path (str or os.PathLike), got {type(f).__name__}")
    path = os.fspath(f)
    device = None
    if map_location is not None:
        if not isinstance(map_location, str):
            raise TypeError(f"tr.load: map_location must be None, 'cpu' or 'cuda', got {type(map_location).__name__}")
        device = normalize_device(map_location)
        get_backend(device)  # a missing GPU is DeviceUnavailableError now, before reading anything
    if not os.path.exists(path):
        raise FileNotFoundError(f"tr.load: no file at {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"tr.load: {path} is a directory")
    try:
        members = _read_members(path)
        if _MANIFEST in members:
            return _decode_manifest(members, device)
        if LEGACY_META_KEY in members:
            return _decode_legacy(members)
        raise _Refused("it is an .npz file but not a tinygrad_rnn checkpoint (no manifest)")
    except _Refused as e:
        raise ValueError(f"tr.load: refusing {path}: {e}") from None
    except RecursionError:
        raise ValueError(f"tr.load: refusing {path}: its manifest is nested too deeply") from None


def _json_member(members: dict[str, np.ndarray], key: str) -> Any:
    raw = members.pop(key)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _Refused(f"member {key + '.npy'!r} should be 1-D uint8 JSON text, got {raw.dtype} of shape {raw.shape}")
    try:
        text = raw.tobytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Refused(f"member {key + '.npy'!r} is not UTF-8 text ({e})") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant if key == _MANIFEST else None)
    except json.JSONDecodeError as e:
        raise _Refused(f"member {key + '.npy'!r} is not valid JSON ({e})") from None


def _decode_manifest(members: dict[str, np.ndarray], device: str | None) -> Any:
    manifest = _json_member(members, _MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "root" not in manifest:
        raise _Refused(f"member '{_MANIFEST}.npy' is not a {FORMAT} manifest")
    version = manifest.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _Refused(f"member '{_MANIFEST}.npy' has a bad format version {version!r}")
    if version > FORMAT_VERSION:
        raise _Refused(f"it was written in format version {version}, newer than this tinygrad_rnn reads "
                       f"({FORMAT_VERSION}); upgrade tinygrad_rnn")
    return _Decoder(members, device)(manifest["root"])


def _decode_legacy(members: dict[str, np.ndarray]) -> dict[str, Any]:
    meta = _json_member(members, LEGACY_META_KEY)
    if not isinstance(meta, dict):
        raise _Refused(f"member '{LEGACY_META_KEY}.npy' is not a JSON object")
    return {"state_dict": members, "meta": meta}
