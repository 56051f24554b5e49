"""``tr.save`` / ``tr.load``: a whole training state in one pickle-free, atomically written file.

The file is an ``.npz`` (a zip of ``.npy`` members, stored uncompressed): every array or tensor is one
member written with ``allow_pickle=False``, and the structure around them (dicts, lists, tuples, numbers,
strings, bools, None, whole modules) is a JSON manifest in one more member, with a format version. Nothing
in the file is ever unpickled or executed, and :func:`load` checks every member's ``.npy`` header against
the bytes the member really holds before reading it, reads each byte of the file at most once and shares
an array referred to many times, so a hostile file costs memory in proportion to its own size.

A whole ``nn.Module`` is saved as its class's name, its plain attributes and its tensors; :func:`load`
rebuilds only tinygrad_rnn's own classes and those the caller allows, as PyTorch's weights-only loading:
``with tr.serialization.safe_globals([MyModel]): model = tr.load(f)``.

    >>> import tinygrad_rnn as tr, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
    >>> tr.save({"w": tr.ones(2, requires_grad=True), "step": 3, "lr": float("inf")}, path)
    >>> tr.load(path)["lr"], tr.load(path)["w"].requires_grad
    (inf, True)
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import secrets
import stat
import struct
import threading
import zipfile
import zlib
from typing import IO, Any, Callable, Iterator

import numpy as np

from .backend import backend_of_array, get_backend, host_array, normalize_device
from .tensor import Tensor

__all__ = ["save", "load", "atomic_write", "FORMAT_VERSION", "safe_globals", "add_safe_globals", "get_safe_globals",
           "clear_safe_globals"]

FORMAT = "tinygrad_rnn.save"
FORMAT_VERSION = 2  # 2: whole modules, Parameters, shared tensors; a file without them is still written as 1
_MANIFEST = "__tinygrad_rnn_manifest__"
LEGACY_META_KEY = "__tinygrad_rnn_meta__"  # nn.save's format before tr.save existed: named arrays + JSON metadata
_MAX_DEPTH = 64  # nesting deeper than this is refused on save and on load (a hostile manifest can't blow the stack)
_ARRAY_KINDS = "biufc"  # bool, integers, floats, complex: no objects, strings, structs or void
_TMP_MARK = ".tmp-"
_MAX_INT_DIGITS = 1000  # a Python int in the manifest (PCG64 states need 39); Python's own parser stops at 4300


# ---------------------------------------------------------------------------------------------
# encoding: Python object -> (JSON-able tree, list of host arrays)


class _Encoder:
    """One save: the arrays written so far, and the node of every tensor already met (saved once, referred
    to again: tied weights come back tied, one tensor, as in PyTorch)."""

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []
        self.seen: dict[int, Any] = {}
        self.modules: dict[int, int] = {}  # id(module) -> its number, in the order met
        self.keep: list[Any] = []  # the objects behind ``seen``'s and ``modules``' ids stay alive until the save ends
        self.version = 1

    def add(self, a: np.ndarray) -> int:
        self.arrays.append(a)
        return len(self.arrays) - 1

    def __call__(self, obj: Any, where: str, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise ValueError(f"tr.save: {where} is nested more than {_MAX_DEPTH} levels deep (a cycle?)")
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, np.generic):  # before int/float: np.float64 is a float, and must come back as np.float64
            return {"$scalar": self.add(_host_array(np.asarray(obj), where))}
        if isinstance(obj, int):  # bool is handled above
            if abs(obj).bit_length() > _MAX_INT_DIGITS * 3:
                raise ValueError(f"tr.save: {where} is an int of {len(str(abs(obj)))} digits; at most {_MAX_INT_DIGITS} "
                                 "are saved (save it as an array or a string)")
            return int(obj)
        if isinstance(obj, float):
            # JSON has no nan/inf; finite floats round-trip exactly through repr
            return float(obj) if math.isfinite(obj) else {"$float": repr(float(obj))}
        if id(obj) in self.seen:
            self.version = 2
            return self.seen[id(obj)]
        node = self._new(obj, where, depth)
        if isinstance(obj, Tensor):  # arrays are not shared: each comes back as an array of its own, as before
            self.seen[id(obj)] = node
            self.keep.append(obj)
        return node

    def _new(self, obj: Any, where: str, depth: int) -> Any:
        Module, Parameter = _module_types()
        if isinstance(obj, Tensor):
            node = {"$tensor": self.add(_host_array(obj.numpy(), where)), "requires_grad": bool(obj.requires_grad),
                    "device": obj.device}
            if isinstance(obj, Parameter):
                node["parameter"] = True
                self.version = 2
            return node
        if backend_of_array(obj) is not None:
            return {"$array": self.add(_host_array(host_array(obj), where))}
        if isinstance(obj, tuple):
            return {"$tuple": [self(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]
        if isinstance(obj, dict):
            items = []
            for k, v in obj.items():
                if not (k is None or isinstance(k, (bool, int, float, str, tuple))):
                    raise TypeError(f"tr.save: {where} has a key of type {type(k).__name__}; keys must be str, int, "
                                    "float, bool, None or tuples of them")
                items.append([self(k, f"{where} key {k!r}", depth + 1), self(v, f"{where}[{k!r}]", depth + 1)])
            return {"$dict": items}
        if isinstance(obj, Module):
            self.version = 2
            if id(obj) in self.modules:  # a module used twice (shared layers) comes back as one module
                return {"$moduleref": self.modules[id(obj)]}
            self.modules[id(obj)] = len(self.modules)
            self.keep.append(obj)
            return self._module(obj, where, depth)
        raise TypeError(f"tr.save: cannot save {where} of type {type(obj).__name__}: only tensors, NumPy arrays, "
                        "modules, dicts, lists, tuples, int, float, str, bool and None are saved (nothing is pickled)")

    def _module(self, m: Any, where: str, depth: int) -> dict[str, Any]:
        """A module as its class's name, its registered parameters/buffers/children and its plain attributes."""
        cls = type(m)
        d = m.__dict__
        registered = {}
        for slot in _MODULE_SLOTS:
            if isinstance(d.get(slot), dict):
                registered[slot] = [[str(k), self(v, f"{where}.{k}", depth + 1)] for k, v in d[slot].items()]
        skip = set(_MODULE_SLOTS) | {"training", "_none_params"}
        for slot in _MODULE_SLOTS:
            skip.update(d.get(slot) or ())
        attrs = []
        for k, v in d.items():
            if k in skip:
                continue
            if not _plain(v, 0):
                raise TypeError(f"tr.save: cannot save {where} (a {cls.__name__}): its attribute {k!r} is a "
                                f"{type(v).__name__}; a whole module is saved pickle-free, with attributes that are "
                                "numbers, strings, bools, None, tensors or lists/tuples/dicts of them. Save its "
                                "state_dict() instead, or set the attribute to None first")
            attrs.append([k, self(v, f"{where}.{k}", depth + 1)])
        return {"$module": f"{cls.__module__}.{cls.__qualname__}", "ref": self.modules[id(m)],
                "training": bool(d.get("training", True)),
                "registered": registered, "none_params": sorted(d.get("_none_params", ())), "attrs": attrs}


_MODULE_TYPES: list[type] = []  # [Module, Parameter], registered by nn.module: data flows nn -> serialization


def register_module_types(module: type, parameter: type) -> None:
    """Called once by ``nn.module``: the classes a whole-module save walks and a load rebuilds."""
    _MODULE_TYPES[:] = [module, parameter]


def _module_types() -> tuple[type, type]:
    if not _MODULE_TYPES:  # pragma: no cover - tinygrad_rnn/__init__ imports nn
        raise RuntimeError("tinygrad_rnn.nn was not imported")
    return _MODULE_TYPES[0], _MODULE_TYPES[1]


# the registries a Module keeps in its __dict__ (buffers where the module has them)
_MODULE_SLOTS = ("_parameters", "_buffers", "_modules")


def _plain(v: Any, depth: int) -> bool:
    if depth > _MAX_DEPTH:
        return False
    if v is None or isinstance(v, (bool, int, float, str, np.generic, Tensor)) or backend_of_array(v) is not None:
        return True
    if isinstance(v, (list, tuple)):
        return all(_plain(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return all(_plain(k, depth + 1) and _plain(x, depth + 1) for k, x in v.items())
    return False


def _host_array(a: Any, where: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in _ARRAY_KINDS or a.dtype.fields is not None:
        raise TypeError(f"tr.save: {where} is an array of dtype {a.dtype}; only bool, integer, float and complex "
                        "arrays are saved (object arrays would need pickle)")
    return a


# ---------------------------------------------------------------------------------------------
# writing, atomically


def save(obj: Any, f: str | os.PathLike | IO[bytes]) -> None:
    """Write ``obj`` (nested dicts/lists/tuples of tensors, arrays, numbers, str, bool, None, or a whole
    ``nn.Module``) to ``f``: a path, or a binary file object opened for writing (seekable or not).

    To a path it is atomic: the data goes to a temporary file beside ``f`` that is fsynced and then renamed
    over ``f``, so a crash leaves either the old file or the new one; stale temporaries of dead writers to
    the same ``f`` are removed by the next save. The file gets the usual permissions (``0o666`` less the
    umask). As ``torch.save``: a symlink is written through (the link stays), a missing parent folder raises.

    >>> # tr.save({"model": m.state_dict(), "optim": opt.state_dict(), "rng": tr.get_rng_state()}, "ckpt.npz")
    """
    writer = hasattr(f, "write")
    if not writer and not isinstance(f, (str, os.PathLike)):
        raise TypeError(f"tr.save: f must be a path (str or os.PathLike) or a binary file object, got {type(f).__name__}")
    enc = _Encoder()
    root = enc(obj, "obj")  # before touching the disk: a bad object leaves no file behind
    manifest = json.dumps({"format": FORMAT, "version": enc.version, "root": root}, allow_nan=False)
    members = {f"a{i}": a for i, a in enumerate(enc.arrays)}
    members[_MANIFEST] = np.frombuffer(manifest.encode("utf-8"), dtype=np.uint8)
    if writer:
        if isinstance(f, io.TextIOBase):
            raise TypeError("tr.save: f is a text file; open it in binary mode ('wb')")
        buf = io.BytesIO()  # the zip is built in memory, so f needs neither seek nor tell (a pipe or a socket works)
        np.savez(buf, allow_pickle=False, **members)
        f.write(buf.getbuffer())
        if hasattr(f, "flush"):
            f.flush()
        return
    atomic_write(os.fspath(f), lambda fh: np.savez(fh, allow_pickle=False, **members))


class _MissingParentError(FileNotFoundError, RuntimeError):
    """The folder to save into does not exist: ``FileNotFoundError`` as ``open()`` raises, and ``RuntimeError``
    as ``torch.save`` raises (with its message), so either habit's ``except`` catches it."""


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[IO[bytes]], Any]) -> str:
    """Write ``data`` (bytes, text as UTF-8, or a function that writes into a binary file) to ``path``, atomically.

    The data goes to a temporary file beside ``path`` that is fsynced and then renamed over it, so a crash
    leaves either the old file or the new one, never half of one; stale temporaries of dead writers to the
    same ``path`` are removed first. The file gets the mode a plain ``open()`` would give it (``0o666`` less
    the umask; ``mkstemp``'s 0600 would hide results from a group). A symlink is written through; a
    missing parent folder raises ``FileNotFoundError`` (as ``open()``). Returns ``path``.

    >>> # tr.serialization.atomic_write("results.json", json.dumps(results))
    """
    path = os.fspath(path)
    if os.path.islink(path):
        # written through, as open(path, "w") and torch.save do: the link stays, its target gets the data
        path = os.path.realpath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory")
    folder, base = os.path.split(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise _MissingParentError(f"Parent directory {folder} does not exist.")
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


def _read_members(fh: Any, size: int) -> dict[str, np.ndarray]:
    """Every ``.npy`` member of the zip in ``fh`` (``size`` bytes), each header checked before its data is
    read, and each byte of the file read at most once: members that overlap each other or the central
    directory (many entries pointing at one member would multiply its size in memory) are refused."""
    base = fh.tell()
    head = fh.read(6)
    if head.startswith(b"\x93NUMPY"):
        raise _Refused("it is a single .npy array, not a checkpoint (.npz)")
    if not head.startswith(b"PK"):
        raise _Refused("it is not a zip/.npz file (wrong magic bytes)")
    fh.seek(base)
    try:
        zf = zipfile.ZipFile(fh)
    except Exception as e:  # noqa: BLE001 - zipfile raises many kinds (NotImplementedError for a "zip file version")
        raise _Refused(f"it is not a readable zip/.npz file ({type(e).__name__}: {e})") from None
    with zf:
        infos = zf.infolist()
        names: set[str] = set()
        for info in infos:
            name = info.filename
            if not name.endswith(".npy"):
                raise _Refused(f"member {name!r} is not a .npy array")
            if name in names:
                raise _Refused(f"member {name!r} appears twice")
            names.add(name)
            if info.compress_type != zipfile.ZIP_STORED:
                # a deflated member can inflate far beyond the file's size; tr.save never compresses
                raise _Refused(f"member {name!r} is compressed (zip method {info.compress_type})")
            if info.flag_bits & 0x1:
                raise _Refused(f"member {name!r} is encrypted")
        spans = _member_spans(fh, size, infos, getattr(zf, "start_dir", size))
        out: dict[str, np.ndarray] = {}
        for info in infos:
            try:
                out[info.filename[:-4]] = _read_npy(fh, spans[info.filename], info, info.filename)
            except _Refused:
                raise
            except Exception as e:  # noqa: BLE001 - NumPy's header parser raises tokenize/syntax/value errors
                raise _Refused(f"member {info.filename!r} is unreadable ({type(e).__name__}: {e})") from None
    return out


def _member_spans(fh: Any, size: int, infos: list[zipfile.ZipInfo], end: int) -> dict[str, tuple[int, int]]:
    """``name -> (data start, data end)`` of every member, after checking that no two members share a byte."""
    spans = {}
    prev_end, prev_name = 0, None
    for info in sorted(infos, key=lambda i: i.header_offset):
        name = info.filename
        if info.header_offset < prev_end:
            raise _Refused(f"member {name!r} overlaps member {prev_name!r} (each byte of a checkpoint belongs to "
                           "one member)")
        fh.seek(info.header_offset)
        local = fh.read(_LOCAL_HEADER.size)
        if len(local) != _LOCAL_HEADER.size or _LOCAL_HEADER.unpack(local)[0] != b"PK\x03\x04":
            raise _Refused(f"member {name!r} has no valid local zip header")
        _, name_len, extra_len = _LOCAL_HEADER.unpack(local)
        start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        stop = start + info.compress_size
        if info.file_size != info.compress_size or stop > min(size, end):
            raise _Refused(f"member {name!r} declares {info.file_size} bytes, more than the file holds")
        spans[name] = (start, stop)
        prev_end, prev_name = stop, name
    return spans


_LOCAL_HEADER = struct.Struct("<4s22xHH")  # a zip local file header: signature ... name length, extra length
_MAX_NPY_HEADER = 10_016  # NumPy's own limit on a .npy header (10000) plus its magic and length fields


def _read_npy(fh: Any, span: tuple[int, int], info: zipfile.ZipInfo, name: str) -> np.ndarray:
    """One stored member, read straight from the file into its array after its header was checked.

    Not through ``ZipFile.open``: that would read the data into a bytes object and copy it once more.
    The CRC is checked here instead, over the same bytes.
    """
    start = span[0]
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
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise _Refused(f"member {name!r} has a bad shape {str(shape)[:80]}")
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
    def __init__(self, arrays: dict[str, np.ndarray], map_device: Callable[[str], str]):
        self.arrays, self.map_device = arrays, map_device
        self.classes: dict[str, type] | None = None  # the allowed classes, looked up at the first module
        # one tensor per array, however often the manifest refers to it: memory stays the file's size
        # (150 references to one array once made 150 widened copies), and tied weights come back tied
        self.tensors: dict[int, tuple[Any, Tensor]] = {}
        self.modules: dict[int, Any] = {}

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
                    raise _Refused(f"the manifest holds an unhashable dict key {str(k)[:80]}") from None
                out[k] = self(item[1], depth + 1)
            return out
        if tag == "$array" and len(node) == 1:
            return self.array(node[tag])
        if tag == "$scalar" and len(node) == 1:
            a = self.array(node[tag])
            if a.shape != ():
                raise _Refused(f"the manifest's scalar {node[tag]} is an array of shape {a.shape}")
            return a[()]
        if tag == "$tensor" and set(node) - {"parameter"} == {"$tensor", "requires_grad", "device"}:
            return self.tensor(node)
        if tag == "$module" and set(node) == {"$module", "ref", "training", "registered", "none_params", "attrs"}:
            return self.module(node, depth)
        if tag == "$moduleref" and len(node) == 1:
            ref = node[tag]
            if isinstance(ref, bool) or not isinstance(ref, int) or ref not in self.modules:
                raise _Refused(f"the manifest refers to module {str(ref)[:20]}, which it does not hold before")
            return self.modules[ref]
        raise _Refused(f"the manifest holds an unknown entry {str(node)[:80]}")

    def tensor(self, node: dict[str, Any]) -> Tensor:
        Parameter = _module_types()[1]

        index, grad, saved_device, param = node["$tensor"], node["requires_grad"], node["device"], node.get("parameter")
        if not isinstance(grad, bool) or not isinstance(saved_device, str) or param not in (None, True):
            raise _Refused("the manifest holds a malformed tensor entry")
        key = (grad, saved_device, bool(param))
        if isinstance(index, int) and index in self.tensors:
            seen_key, t = self.tensors[index]
            if seen_key != key:
                raise _Refused(f"the manifest refers to array a{index} as two different tensors")
            return t
        a = self.array(index)
        try:
            device = self.map_device(saved_device)
        except (TypeError, ValueError) as e:
            raise _Refused(f"the manifest names a bad device ({e})") from None
        try:
            t = Tensor(a, requires_grad=grad, device=device)
            if param:
                t = Parameter(t, requires_grad=grad)
        except (TypeError, ValueError) as e:  # e.g. requires_grad on an integer tensor
            raise _Refused(f"array a{index} can't be a tensor ({e})") from None
        self.tensors[index] = (key, t)
        return t

    def module(self, node: dict[str, Any], depth: int) -> Any:
        Module, Parameter = _module_types()

        name = node["$module"]
        if self.classes is None:
            self.classes = _allowed_classes()
        cls = _resolve_class(name, self.classes)
        if not (isinstance(cls, type) and issubclass(cls, Module)):
            raise _Refused(f"the manifest's module class {name} is allow-listed but is not an nn.Module subclass")
        registered, none_params, attrs = node["registered"], node["none_params"], node["attrs"]
        if (not isinstance(registered, dict) or not set(registered) <= set(_MODULE_SLOTS)
                or not isinstance(node["training"], bool) or not isinstance(attrs, list)
                or not isinstance(none_params, list) or not all(isinstance(n, str) for n in none_params)):
            raise _Refused(f"the manifest holds a malformed module entry for {name}")
        ref = node["ref"]
        if isinstance(ref, bool) or not isinstance(ref, int) or ref in self.modules:
            raise _Refused(f"the manifest holds a malformed module entry for {name}")
        m = object.__new__(cls)  # no __init__: the saved attributes are the whole state, as unpickling does
        self.modules[ref] = m
        d = m.__dict__
        d["_parameters"], d["_modules"], d["training"] = {}, {}, node["training"]
        if none_params:
            d["_none_params"] = set(none_params)
        for slot, items in registered.items():
            table = d.setdefault(slot, {})
            for item in self._pairs(items, name):
                k, v = item[0], self(item[1], depth + 1)
                want = {"_parameters": Parameter, "_buffers": Tensor, "_modules": Module}[slot]
                if not (v is None or isinstance(v, want)):
                    raise _Refused(f"the manifest's {name}.{k} in {slot} is a {type(v).__name__}, not a {want.__name__}")
                table[k] = d[k] = v
        for item in self._pairs(attrs, name):
            k = item[0]
            if k in d or k in _MODULE_SLOTS:
                raise _Refused(f"the manifest sets {name}.{k} twice")
            d[k] = self(item[1], depth + 1)
        return m

    @staticmethod
    def _pairs(items: Any, name: str) -> list[list[Any]]:
        # any str is a valid key (Sequential's children are "0", "1", ...), but never a dunder name
        if not isinstance(items, list) or not all(isinstance(i, list) and len(i) == 2 and isinstance(i[0], str)
                                                  and not i[0].startswith("__") for i in items):
            raise _Refused(f"the manifest holds a malformed module entry for {name}")
        return items


# ---------------------------------------------------------------------------------------------
# which classes tr.load may instantiate: tinygrad_rnn's own modules, and those the caller allows


_SAFE_GLOBALS: list[Any] = []  # add_safe_globals: for the whole process
_SCOPED = threading.local()  # safe_globals(...): for the with-block, in this thread


def _class_path(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def _check_safe_globals(items: Any) -> list[Any]:
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"safe_globals expects a list of classes, got {type(items).__name__}")
    out = []
    for item in items:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], str):  # PyTorch's (obj, "path") form
            out.append(item)
        elif isinstance(item, type) or callable(item):
            out.append(item)
        else:
            raise TypeError(f"safe_globals: {item!r} is not a class (or a (class, 'module.Name') pair)")
    return out


def add_safe_globals(safe_globals: list[Any]) -> None:
    """Allow :func:`load` to rebuild these classes (``nn.Module`` subclasses of your own) in every later load.

    >>> # tr.serialization.add_safe_globals([MyModel])
    """
    _SAFE_GLOBALS.extend(_check_safe_globals(safe_globals))


def get_safe_globals() -> list[Any]:
    """The classes :func:`add_safe_globals` allowed (PyTorch's name)."""
    return list(_SAFE_GLOBALS)


def clear_safe_globals() -> None:
    """Forget every class :func:`add_safe_globals` allowed."""
    _SAFE_GLOBALS.clear()


@contextlib.contextmanager
def safe_globals(safe_globals: list[Any]) -> Iterator[None]:
    """Inside the block, :func:`load` may also rebuild these classes, as ``torch.serialization.safe_globals``.

    >>> # with tr.serialization.safe_globals([MyModel]): model = tr.load("model.npz")
    """
    items = _check_safe_globals(safe_globals)
    stack = getattr(_SCOPED, "stack", None)
    if stack is None:
        stack = _SCOPED.stack = []
    stack.append(items)
    try:
        yield
    finally:
        stack.pop()


def _allowed_classes() -> dict[str, type]:
    Module = _module_types()[0]
    out: dict[str, type] = {}
    todo = [Module]
    while todo:  # the library's own modules, wherever they are defined in tinygrad_rnn
        c = todo.pop()
        if c.__module__.startswith("tinygrad_rnn."):
            out[_class_path(c)] = c
        todo.extend(c.__subclasses__())
    for items in [_SAFE_GLOBALS, *getattr(_SCOPED, "stack", [])]:
        for item in items:
            cls, path = item if isinstance(item, tuple) else (item, _class_path(item))
            out[path] = cls
            out["\0" + path] = cls  # marked as the caller's: only these may match by class name alone
    return out


def _resolve_class(name: Any, classes: dict[str, type]) -> type:
    if not isinstance(name, str):
        raise _Refused("the manifest holds a malformed module entry")
    if name in classes:
        return classes[name]
    # saved from a script (``__main__.Model``) and loaded from a module, or the reverse: the same class name,
    # allowed by the caller, is that class
    short = name.rsplit(".", 1)[-1] if "<locals>" not in name else name.split(".", 1)[-1]
    # only among the caller's classes: a user's own class named LSTM must not become the library's LSTM
    same = {c for path, c in classes.items() if path.startswith("\0") and path.endswith("." + short)}
    if len(same) == 1:
        return same.pop()
    shown = name.rsplit(".", 1)[-1]
    raise _Refused(f"it holds a module of class {name}, which is not allow-listed: tr.load rebuilds only "
                   f"tinygrad_rnn's own classes and those you allow, as PyTorch's weights-only load does. If you "
                   f"trust the file, load it inside `with tr.serialization.safe_globals([{shown}]):` (or call "
                   f"tr.serialization.add_safe_globals([{shown}]) once)")


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"the manifest holds a bare {name}, which tr.save never writes")


def _parse_int(text: str) -> int:
    if len(text) > _MAX_INT_DIGITS + 1:
        raise _Refused(f"the manifest holds an integer of {len(text)} digits (at most {_MAX_INT_DIGITS})")
    return int(text)


def _device_mapper(map_location: Any) -> Callable[[str], str]:
    """``map_location`` as ``torch.load`` takes it: None, a device string or device, or a dict of them."""
    if map_location is None:
        return normalize_device
    if isinstance(map_location, dict):
        table = {}
        for k, v in map_location.items():
            table[normalize_device(_device_str(k, "map_location key"))] = normalize_device(_device_str(v, "map_location value"))
        for dev in set(table.values()):
            get_backend(dev)
        return lambda saved: table.get(normalize_device(saved), normalize_device(saved))
    if callable(map_location) and not hasattr(map_location, "type"):
        raise TypeError("tr.load: map_location as a function is not supported (it would receive PyTorch storages); "
                        "give a device string such as 'cpu' or a dict {'cuda': 'cpu'}")
    device = normalize_device(_device_str(map_location, "map_location"))
    get_backend(device)  # a missing GPU is DeviceUnavailableError now, before reading anything
    return lambda saved: device


def _device_str(d: Any, what: str) -> str:
    if isinstance(d, str):
        return d
    if isinstance(getattr(d, "type", None), str):  # a device object: str() is "cpu" or "cuda:0", as torch.device's
        return str(d)
    raise TypeError(f"tr.load: {what} must be None, a device string such as 'cpu' or 'cuda', a device, or a dict "
                    f"of them; got {type(d).__name__}")


def load(f: str | os.PathLike | IO[bytes], map_location: Any = None, weights_only: bool | None = None,
         **pickle_load_args: Any) -> Any:
    """Read what :func:`save` wrote, from a path or a binary file object (read from its position, as
    ``torch.load``); tensors come back on their saved device, or as ``map_location`` says.

    Untrusted files are safe to load: nothing is unpickled or executed, every member's declared shape and
    dtype are checked against the bytes it really holds before anything is allocated, each byte is read at
    most once, and any problem is a ``ValueError`` naming the file (and the member). ``map_location`` is
    ``None``, a device string (``"cpu"``, ``"cuda"``), a device, or a dict ``{"cuda": "cpu"}``, as in
    ``torch.load``. ``weights_only`` is always true here (``False`` is refused: nothing is ever unpickled).
    A saved module is rebuilt only if its class is tinygrad_rnn's own or allowed by :func:`safe_globals`.
    Files written by the older ``nn.save`` load as ``{"state_dict": {name: array}, "meta": {...}}``.

    >>> # state = tr.load("ckpt.npz", map_location="cpu")
    """
    if weights_only is False:
        raise ValueError("tr.load: weights_only=False is not supported: tinygrad_rnn never unpickles (a pickle can "
                         "run any code); its files hold only tensors, plain values and allow-listed modules, as "
                         "torch.load(weights_only=True) reads")
    if pickle_load_args:
        raise TypeError(f"tr.load: unexpected arguments {sorted(pickle_load_args)} (pickle options: nothing is "
                        "unpickled)")
    reader = hasattr(f, "read")
    if not reader and not isinstance(f, (str, os.PathLike)):
        raise TypeError(f"tr.load: f must be a path (str or os.PathLike) or a binary file object, got {type(f).__name__}")
    map_device = _device_mapper(map_location)
    if reader:
        name = getattr(f, "name", None)
        label = name if isinstance(name, str) else f"<{type(f).__name__}>"
        try:
            seekable = bool(f.seekable()) if hasattr(f, "seekable") else False
        except Exception:  # noqa: BLE001 - a closed file and the like: treat as a stream
            seekable = False
        if isinstance(f, io.TextIOBase):
            raise TypeError("tr.load: f is a text file; open it in binary mode ('rb')")
        if seekable:
            start = f.tell()
            size = f.seek(0, os.SEEK_END)
            f.seek(start)
            return _load_from(_Window(f, start, size), size - start, label, map_device)
        data = f.read()  # a pipe or a socket: read once into memory (the file's size, read once)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("tr.load: f must be opened in binary mode")
        return _load_from(io.BytesIO(data), len(data), label, map_device)
    path = os.fspath(f)
    if not os.path.exists(path):
        raise FileNotFoundError(f"tr.load: no file at {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"tr.load: {path} is a directory")
    if not stat.S_ISREG(os.stat(path).st_mode):  # a socket can't even be opened; a FIFO would wait for a writer
        raise ValueError(f"tr.load: refusing {path}: it is not a regular file (a FIFO, device or socket)")
    # O_NONBLOCK: if a FIFO replaced the file since the stat, opening it does not wait; the fstat refuses it
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"tr.load: refusing {path}: it is not a regular file (a FIFO, device or socket)")
        return _load_from(fh, st.st_size, path, map_device)


class _Window(io.RawIOBase):
    """A seekable file seen from ``start`` on: offsets in the zip are relative to where the checkpoint begins."""

    def __init__(self, f: Any, start: int, end: int):
        super().__init__()
        self.f, self.start, self.end = f, start, end

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.f.tell() - self.start

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: self.start, 1: self.f.tell(), 2: self.end}[whence]
        return self.f.seek(base + offset) - self.start

    def readinto(self, b: Any) -> int:
        n = self.f.readinto(b) if hasattr(self.f, "readinto") else None
        if n is None:
            data = self.f.read(len(b))
            n = len(data)
            memoryview(b).cast("B")[:n] = data
        return n

    def read(self, n: int = -1) -> bytes:
        return self.f.read(n)


def _load_from(fh: Any, size: int, label: str, map_device: Callable[[str], str]) -> Any:
    try:
        members = _read_members(fh, size)
        if _MANIFEST in members:
            return _decode_manifest(members, map_device)
        if LEGACY_META_KEY in members:
            return _decode_legacy(members)
        raise _Refused("it is an .npz file but not a tinygrad_rnn checkpoint (no manifest)")
    except _Refused as e:
        raise ValueError(f"tr.load: refusing {label}: {e}") from None
    except RecursionError:
        raise ValueError(f"tr.load: refusing {label}: its manifest is nested too deeply") from None


def _json_member(members: dict[str, np.ndarray], key: str) -> Any:
    raw = members.pop(key)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _Refused(f"member {key + '.npy'!r} should be 1-D uint8 JSON text, got {raw.dtype} of shape {raw.shape}")
    try:
        text = raw.tobytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Refused(f"member {key + '.npy'!r} is not UTF-8 text ({e})") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant if key == _MANIFEST else None, parse_int=_parse_int)
    except (json.JSONDecodeError, ValueError) as e:
        if isinstance(e, _Refused):
            raise
        raise _Refused(f"member {key + '.npy'!r} is not valid JSON ({e})") from None


def _decode_manifest(members: dict[str, np.ndarray], map_device: Callable[[str], str]) -> Any:
    manifest = _json_member(members, _MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "root" not in manifest:
        raise _Refused(f"member '{_MANIFEST}.npy' is not a {FORMAT} manifest")
    version = manifest.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _Refused(f"member '{_MANIFEST}.npy' has a bad format version {version!r}")
    if version > FORMAT_VERSION:
        raise _Refused(f"it was written in format version {version}, newer than this tinygrad_rnn reads "
                       f"({FORMAT_VERSION}); upgrade tinygrad_rnn")
    return _Decoder(members, map_device)(manifest["root"])


def _decode_legacy(members: dict[str, np.ndarray]) -> dict[str, Any]:
    meta = _json_member(members, LEGACY_META_KEY)
    if not isinstance(meta, dict):
        raise _Refused(f"member '{LEGACY_META_KEY}.npy' is not a JSON object")
    return {"state_dict": members, "meta": meta}
