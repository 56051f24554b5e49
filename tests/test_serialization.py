"""tr.save / tr.load, the training-state APIs they carry (optimizers, schedulers, RNG, data position),
exact resume in a fresh process, and hostile files (issue 10)."""
import gc
import io
import json
import math
import os
import pickle
import subprocess
import sys
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tinygrad_rnn as tr
from tinygrad_rnn import nn, optim
from tinygrad_rnn.data import bptt_batches, bucket_batches
from tinygrad_rnn.optim import lr_scheduler

sys.path.insert(0, os.path.dirname(__file__))
import _resume_job as job  # noqa: E402, I001  (tests/ helper)


def _same(a, b, where="obj"):
    """Exact structural equality: same types (tuple vs list, bool vs int), same arrays bit for bit."""
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict)), f"{where}: {type(a)} vs {type(b)}"
    if isinstance(a, tr.Tensor):
        assert (a.dtype, a.shape, a.requires_grad, a.device) == (b.dtype, b.shape, b.requires_grad, b.device), where
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=where)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b), where
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert math.isnan(a) and math.isnan(b) or (a == b and math.copysign(1, a) == math.copysign(1, b)), where
    else:
        assert a == b, where


# ---------------------------------------------------------------------------------------------
# round trips


def test_round_trip_keeps_every_type_and_bit(tmp_path):
    obj = {
        "tensors": [tr.tensor([[1.5, -2.0]], requires_grad=True), tr.tensor([1, 2, 3]), tr.zeros(0, 3, dtype=tr.float64),
                    tr.tensor(np.array(3.25)), tr.tensor([True, False])],
        "arrays": (np.arange(6, dtype=np.int32).reshape(2, 3), np.asfortranarray(np.arange(6.0).reshape(2, 3)),
                   np.array([1 + 2j]), np.zeros((2, 0), np.uint8), np.array(7, dtype=np.int16),
                   np.arange(4, dtype=">f8")),
        "floats": [float("nan"), float("inf"), -float("inf"), -0.0, 5e-324, 1 / 3, 1e308],
        "ints": [0, -1, 2**100, True, False],
        "scalars": [np.float32(0.1), np.int64(-5), np.bool_(True)],
        "misc": ("ünïcode ✓", "", None, (), [], {}),
        3: {"int key": 1, (1, "a"): 2, None: 3, 2.5: 4, False: 5},
        "$tag-looking key": {"$tensor": 0},
    }
    path = tmp_path / "all.npz"
    tr.save(obj, path)
    back = tr.load(path)
    big_endian = back["arrays"][5]
    np.testing.assert_array_equal(big_endian, np.arange(4.0))  # comes back native, same values
    obj["arrays"] = obj["arrays"][:5] + (np.arange(4, dtype="<f8"),)
    _same(obj, back)
    assert back["arrays"][1].flags.f_contiguous and back["tensors"][0].requires_grad
    assert tr.load(str(path), map_location="cpu")["tensors"][1].dtype == tr.int64


def test_loaded_arrays_are_writable_and_independent(tmp_path):
    a = np.arange(3.0)
    tr.save({"a": a, "b": a}, tmp_path / "x.npz")
    back = tr.load(tmp_path / "x.npz")
    back["a"][0] = 9.0
    assert back["b"][0] == 0.0 and a[0] == 0.0


@pytest.mark.parametrize("bad,where", [
    ({"f": lambda: 1}, "obj['f']"), ({"x": [1, object()]}, "obj['x'][1]"), ({"s": {1, 2}}, "obj['s']"),
    ({"o": np.array([1, None], dtype=object)}, "obj['o']"), ({"u": np.array(["a"])}, "obj['u']"),
    ({frozenset(): 1}, "key of type frozenset"),
])
def test_unsavable_objects_raise_type_error_and_write_nothing(tmp_path, bad, where):
    with pytest.raises(TypeError, match=where.replace("[", r"\[").replace("]", r"\]")):
        tr.save(bad, tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []


def test_cycles_and_bad_paths_are_refused(tmp_path):
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="nested more than"):
        tr.save(loop, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="must be a path"):
        tr.save({}, 3)  # a file object is fine (issue 20), a number is not
    with pytest.raises(IsADirectoryError):
        tr.save({}, tmp_path)
    with pytest.raises(FileNotFoundError, match="no file"):
        tr.load(tmp_path / "missing.npz")
    with pytest.raises(TypeError, match="map_location"):
        tr.save({}, tmp_path / "ok.npz") or tr.load(tmp_path / "ok.npz", map_location=0)
    with pytest.raises(ValueError, match="unknown device"):
        tr.load(tmp_path / "ok.npz", map_location="tpu")


def test_map_location(tmp_path):
    tr.save({"w": tr.ones(2, requires_grad=True)}, tmp_path / "w.npz")
    assert tr.load(tmp_path / "w.npz", map_location="cpu")["w"].device == "cpu"
    try:
        tr.get_backend("cuda")
    except tr.DeviceUnavailableError:
        with pytest.raises(tr.DeviceUnavailableError, match="cuda"):
            tr.load(tmp_path / "w.npz", map_location="cuda")
    else:  # pragma: no cover - only on a machine with a GPU
        w = tr.load(tmp_path / "w.npz", map_location="cuda")["w"]
        assert w.device == "cuda" and w.requires_grad


# ---------------------------------------------------------------------------------------------
# atomic writes, temporaries, permissions


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    tr.save({"v": 1}, path)
    before = path.read_bytes()

    def half_then_fail(f, **members):
        f.write(b"PK\x03\x04 half")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        tr.save({"v": 2}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.npz"]
    assert tr.load(path) == {"v": 1}


_CRASH = """
import os, sys, numpy as np
sys.path.insert(0, {root!r})
import tinygrad_rnn as tr
def die(f, **members):
    f.write(b"PK partial")
    f.flush()
    os._exit(3)  # a crash: no except clause, no cleanup
np.savez = die
tr.save({{"v": 2}}, {path!r})
"""


def test_temporary_of_a_crashed_save_is_removed_by_the_next_save(tmp_path):
    path = tmp_path / "ckpt.npz"
    root = str(Path(__file__).resolve().parents[1])
    r = subprocess.run([sys.executable, "-c", _CRASH.format(root=root, path=str(path))], capture_output=True)
    assert r.returncode == 3, r.stderr
    orphans = [n for n in os.listdir(tmp_path) if n.startswith(".ckpt.npz.tmp-")]
    assert len(orphans) == 1 and not path.exists()
    # a live writer's temporary (pid 1 always exists) and another target's are left alone
    live, other = tmp_path / ".ckpt.npz.tmp-1-abcd", tmp_path / ".other.npz.tmp-999999999-abcd"
    live.write_bytes(b"x")
    other.write_bytes(b"x")
    tr.save({"v": 3}, path)
    assert sorted(os.listdir(tmp_path)) == sorted(["ckpt.npz", live.name, other.name])
    assert tr.load(path) == {"v": 3}


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_file_honours_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        tr.save({"v": 1}, tmp_path / "m.npz")
        nn.save({"w": np.ones(2)}, tmp_path / "n.npz")
    finally:
        os.umask(old)
    for name in ("m.npz", "n.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------------------------------------
# hostile and broken files: a ValueError naming the file (and the member), bounded memory, no leaks


def _zip(path, members, method=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _npy(arr=None, header=None, data=b""):
    """.npy bytes: a real array, or a hand-made header (dict text) followed by ``data``."""
    if header is None:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=True)
        return buf.getvalue()
    h = header.encode("latin1")
    h += b" " * (63 - (len(h) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + data


def _manifest(root, version=1):
    text = json.dumps({"format": "tinygrad_rnn.save", "version": version, "root": root})
    return _npy(np.frombuffer(text.encode(), dtype=np.uint8))


MAN = "__tinygrad_rnn_manifest__.npy"


class _Payload:
    """Unpickling this would create a marker file: the test proves it never happens."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _hostile_files(tmp_path):
    _Payload.marker = str(tmp_path / "PWNED")
    pickled_obj = _npy(np.array([_Payload()], dtype=object))
    ok = _manifest({"$array": 0})
    files = {
        "huge declared shape": (_zip(tmp_path / "huge.npz", {MAN: ok, "a0.npy": _npy(
            header="{'descr': '<f8', 'fortran_order': False, 'shape': (10000000000000,), }", data=b"\0" * 64)}),
            "a0.npy"),
        "declares fewer bytes": (_zip(tmp_path / "short.npz", {MAN: ok, "a0.npy": _npy(
            header="{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", data=b"\0" * 64)}), "a0.npy"),
        "object dtype": (_zip(tmp_path / "obj.npz", {MAN: ok, "a0.npy": pickled_obj}), "a0.npy"),
        "raw pickle member": (_zip(tmp_path / "pkl.npz", {MAN: ok, "a0.npy": pickle.dumps(_Payload())}), "a0.npy"),
        "a pickle file": (tmp_path / "file.pkl", None),
        "npy file": (tmp_path / "arr.npy", None),
        "junk": (tmp_path / "junk.npz", None),
        "empty file": (tmp_path / "empty.npz", None),
        "truncated": (tmp_path / "trunc.npz", None),
        "corrupted data (CRC)": (tmp_path / "crc.npz", "a0.npy"),
        "compressed member": (_zip(tmp_path / "deflate.npz", {MAN: ok, "a0.npy": _npy(np.zeros(1000))},
                                   zipfile.ZIP_DEFLATED), "is compressed"),
        "string dtype": (_zip(tmp_path / "str.npz", {MAN: ok, "a0.npy": _npy(np.array(["abc"]))}), "a0.npy"),
        "structured dtype": (_zip(tmp_path / "rec.npz", {MAN: ok, "a0.npy": _npy(np.zeros(2, dtype=[("a", "<f8")]))}),
                             "a0.npy"),
        "not a .npy member": (_zip(tmp_path / "txt.npz", {MAN: ok, "notes.txt": b"hi"}), "notes.txt"),
        "no manifest": (_zip(tmp_path / "plain.npz", {"x.npy": _npy(np.zeros(2))}), "manifest"),
        "manifest not utf-8": (_zip(tmp_path / "latin.npz", {MAN: _npy(np.frombuffer(b"\xff\xfe{", np.uint8))}), MAN),
        "manifest invalid json": (_zip(tmp_path / "badjson.npz", {MAN: _npy(np.frombuffer(b"{nope", np.uint8))}), MAN),
        "manifest with NaN": (_zip(tmp_path / "nan.npz", {MAN: _npy(np.frombuffer(
            b'{"format": "tinygrad_rnn.save", "version": 1, "root": NaN}', np.uint8))}), "NaN"),
        "manifest of floats": (_zip(tmp_path / "f.npz", {MAN: _npy(np.zeros(3))}), MAN),
        "manifest wrong format": (_zip(tmp_path / "fmt.npz", {MAN: _npy(np.frombuffer(b'{"root": 1}', np.uint8))}), MAN),
        "manifest newer version": (_zip(tmp_path / "v9.npz", {MAN: _manifest(1, version=9)}), "version 9"),
        "manifest bad version": (_zip(tmp_path / "vx.npz", {MAN: _manifest(1, version="1")}), "version"),
        "missing array": (_zip(tmp_path / "missing.npz", {MAN: _manifest({"$array": 5})}), "array 5"),
        "unknown tag": (_zip(tmp_path / "tag.npz", {MAN: _manifest({"$eval": "os.system('x')"})}), "unknown entry"),
        "unhashable key": (_zip(tmp_path / "key.npz", {MAN: _manifest({"$dict": [[[1], 2]]})}), "unhashable"),
        "deep nesting": (_zip(tmp_path / "deep.npz", {MAN: _npy(np.frombuffer(
            b'{"format": "tinygrad_rnn.save", "version": 1, "root": ' + b"[" * 100000 + b"]" * 100000 + b"}",
            np.uint8))}), "nested"),
        "bad tensor entry": (_zip(tmp_path / "tensor.npz", {MAN: _manifest({"$tensor": 0, "requires_grad": 1, "device": "cpu"}),
                                                            "a0.npy": _npy(np.zeros(2))}), "tensor"),
        "legacy bad meta": (_zip(tmp_path / "legacy.npz", {"__tinygrad_rnn_meta__.npy": _npy(np.frombuffer(b"[1", np.uint8))}),
                            "__tinygrad_rnn_meta__"),
    }
    (tmp_path / "file.pkl").write_bytes(pickle.dumps(_Payload()))
    np.save(tmp_path / "arr.npy", np.zeros(3))
    (tmp_path / "junk.npz").write_bytes(os.urandom(300))
    (tmp_path / "empty.npz").write_bytes(b"")
    tr.save({"w": np.arange(1000.0)}, tmp_path / "good.npz")
    good = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(good[: len(good) // 2])
    corrupt = bytearray(good)
    corrupt[good.index(np.arange(1000.0)[500:].tobytes()[:16])] ^= 0xFF
    (tmp_path / "crc.npz").write_bytes(bytes(corrupt))
    return files


def test_hostile_files_are_refused_with_value_error_naming_file_and_member(tmp_path):
    files = _hostile_files(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for what, (path, member) in files.items():
            tracemalloc.start()
            try:
                with pytest.raises(ValueError) as info:
                    tr.load(path)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            msg = str(info.value)
            assert str(path) in msg, (what, msg)
            if member:
                assert member in msg, (what, msg)
            # nothing near the declared sizes is ever allocated; a file's own bytes at most, plus bookkeeping
            assert peak < 4 * os.path.getsize(path) + 2_000_000, (what, peak)
            for loader in (nn.load, nn.Linear(2, 2).load):  # the module-level readers refuse the same way
                with pytest.raises(ValueError, match="refusing|not a model checkpoint"):
                    loader(path)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    assert not (tmp_path / "PWNED").exists()  # no payload ran
    # the negative control: the payload is real, unpickling it would have made the marker
    pickle.loads((tmp_path / "file.pkl").read_bytes())
    assert (tmp_path / "PWNED").exists()


def test_the_resource_warning_check_can_fail(tmp_path):
    """Negative control for the check above: a leaked file handle is caught by the same recording."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        leaked = open(tmp_path / "x", "wb")  # noqa: SIM115
        del leaked
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_saved_device_is_restored_unless_mapped(tmp_path):
    path = _zip(tmp_path / "gpu.npz", {MAN: _manifest({"$tensor": 0, "requires_grad": True, "device": "cuda"}),
                                       "a0.npy": _npy(np.ones(2, np.float32))})
    t = tr.load(path, map_location="cpu")
    assert t.device == "cpu" and t.requires_grad and t.dtype == tr.float32
    try:
        tr.get_backend("cuda")
    except tr.DeviceUnavailableError:
        with pytest.raises(tr.DeviceUnavailableError):
            tr.load(path)  # as torch.load: a CUDA tensor needs CUDA unless map_location says otherwise
    else:  # pragma: no cover - only on a machine with a GPU
        assert tr.load(path).device == "cuda"


def test_huge_declared_shape_under_a_memory_limit(tmp_path):
    """The 10**13-element claim (72.8 TiB) loads to a ValueError in a process capped at 3 GiB of address space."""
    path = _zip(tmp_path / "huge.npz", {MAN: _manifest({"$array": 0}), "a0.npy": _npy(
        header="{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 100000000), }", data=b"\0" * 8)})
    code = f"""
import resource, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
import tinygrad_rnn as tr
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
try:
    tr.load({str(path)!r})
except ValueError as e:
    print("ValueError", e)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "MemoryError" not in r.stderr, r.stderr[-2000:]
    assert r.stdout.startswith("ValueError") and "a0.npy" in r.stdout and "holds 8 bytes" in r.stdout


# ---------------------------------------------------------------------------------------------
# nn.save / nn.load: the new format, and checkpoints written by the old one


def _old_nn_save(state, path, **extra):
    """nn.save as it was before tr.save (commit 5ebab44): named arrays plus a uint8 JSON member."""
    arrays = {k: np.asarray(v) for k, v in state.items()}
    arrays["__tinygrad_rnn_meta__"] = np.frombuffer(json.dumps(extra, default=str).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_old_checkpoints_keep_loading(tmp_path):
    net = nn.Sequential(nn.Linear(3, 4, seed=0), nn.Tanh(), nn.Linear(4, 2, seed=1))
    path = tmp_path / "old.npz"
    _old_nn_save(net.state_dict(), path, epoch=3, vocab=["a", "b"], loss=float("nan"))
    fresh = nn.Sequential(nn.Linear(3, 4, seed=5), nn.Tanh(), nn.Linear(4, 2, seed=6))
    meta = fresh.load(path)
    assert meta["epoch"] == 3 and meta["vocab"] == ["a", "b"] and math.isnan(meta["loss"])
    for (n, p), (_, q) in zip(net.named_parameters(), fresh.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)
    state, meta2 = nn.load(path)
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    back = tr.load(path)
    assert set(back) == {"state_dict", "meta"} and back["meta"]["epoch"] == 3


def test_nn_save_writes_the_new_format_that_tr_load_reads(tmp_path):
    lin = nn.Linear(3, 2, seed=0)
    lin.save(tmp_path / "m.npz", epoch=2, best=np.float32(0.5))
    with zipfile.ZipFile(tmp_path / "m.npz") as z:
        assert MAN in z.namelist()
    back = tr.load(tmp_path / "m.npz")
    assert list(back["state_dict"]) == ["weight", "bias"] and back["meta"]["best"] == np.float32(0.5)
    tr.save({"model": lin.state_dict()}, tmp_path / "other.npz")
    with pytest.raises(ValueError, match="not a model checkpoint"):
        nn.load(tmp_path / "other.npz")
    # metadata keeps nn.save's JSON contract from before tr.save: other objects are stored as their str
    lin.save(tmp_path / "obj.npz", note=object())
    assert nn.load(tmp_path / "obj.npz")[1]["note"].startswith("<object object at")


def test_nn_save_of_an_optimizer_state_points_to_tr_save(tmp_path):
    """The issue's first report: nn.save(opt.state_dict()) wrote pickled object arrays that never loaded."""
    opt = optim.Adam([tr.zeros(2, requires_grad=True)])
    with pytest.raises(TypeError, match="tinygrad_rnn.save"):
        nn.save(opt.state_dict(), tmp_path / "o.npz")
    assert os.listdir(tmp_path) == []
    nn.save({"w": [1.0, 2.0], "t": tr.ones(2)}, tmp_path / "ok.npz")  # array-likes are still fine
    np.testing.assert_array_equal(nn.load(tmp_path / "ok.npz")[0]["w"], [1.0, 2.0])


def test_module_load_state_dict_bumps_each_parameter_version():
    lin = nn.Linear(3, 2, seed=0)
    before = [p._version for p in lin.parameters()]
    lin.load_state_dict(nn.Linear(3, 2, seed=1).state_dict())
    assert [p._version for p in lin.parameters()] == [v + 1 for v in before]


# ---------------------------------------------------------------------------------------------
# random generator state


def test_rng_state_round_trip_repeats_dropout_and_factories(tmp_path):
    tr.manual_seed(3)
    tr.randn(5)
    tr.save({"rng": tr.get_rng_state()}, tmp_path / "r.npz")
    x = tr.ones(50)
    first = [nn.functional.dropout(x, 0.5).numpy(), tr.randn(3).numpy(), tr.rand(2).numpy(), tr.randint(0, 9, (4,)).numpy(),
             nn.Dropout(0.2)(x).numpy()]
    tr.manual_seed(99)
    tr.set_rng_state(tr.load(tmp_path / "r.npz")["rng"])
    again = [nn.functional.dropout(x, 0.5).numpy(), tr.randn(3).numpy(), tr.rand(2).numpy(), tr.randint(0, 9, (4,)).numpy(),
             nn.Dropout(0.2)(x).numpy()]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], tr.randn(3).numpy())  # and it does move on


def test_generator_state_in_place_and_own_generator():
    g = tr.Generator(1)
    held = g.rng  # whoever holds the NumPy generator sees the restored state
    s = g.get_state()
    json.dumps(s)  # plain data
    a = nn.functional.dropout(tr.ones(20), 0.5, generator=g).numpy()
    assert g.set_state(s) is g
    np.testing.assert_array_equal(a, nn.functional.dropout(tr.ones(20), 0.5, generator=g).numpy())
    assert held is g.rng


@pytest.mark.parametrize("mutate,match", [
    (lambda s: s.pop("uinteger"), "keys"),
    (lambda s: s.update(bit_generator="MT19937"), "PCG64"),
    (lambda s: s["state"].update(inc=2), "odd"),
    (lambda s: s["state"].update(state=-1), "2\\*\\*128"),
    (lambda s: s["state"].update(state=2**128), "2\\*\\*128"),
    (lambda s: s.update(has_uint32=True), "has_uint32"),
    (lambda s: s.update(uinteger="0"), "uinteger"),
    (lambda s: s.update(state=[1, 2]), "'state' must be"),
])
def test_bad_rng_states_are_refused(mutate, match):
    g = tr.Generator(0)
    s = g.get_state()
    expected = g.get_state()
    mutate(s)
    with pytest.raises(ValueError, match=match):
        g.set_state(s)
    assert g.get_state() == expected
    with pytest.raises(TypeError, match="dict"):
        tr.set_rng_state([1, 2])


# ---------------------------------------------------------------------------------------------
# optimizers and schedulers


OPTIMIZERS = [
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (optim.SGD, dict(lr=0.1)),
    (optim.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    (optim.AdamW, dict(lr=0.01)),
    (optim.RMSprop, dict(lr=0.01, centered=True, momentum=0.5)),
    (optim.Adagrad, dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
]


def _problem(dtype, seed=0):
    r = np.random.default_rng(seed)
    params = [tr.tensor(r.standard_normal((3, 2)).astype(dtype), requires_grad=True),
              tr.tensor(r.standard_normal(4).astype(dtype), requires_grad=True)]
    grads = [[r.standard_normal(p.shape).astype(dtype) for p in params] for _ in range(6)]
    return params, grads


def _steps(opt, params, grads):
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = tr.tensor(g)
        opt.step()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,kw", OPTIMIZERS, ids=[c.__name__ + str(i) for i, (c, _) in enumerate(OPTIMIZERS)])
def test_optimizer_state_round_trips_exactly_through_a_file(tmp_path, cls, kw, dtype):
    a, grads = _problem(dtype)
    opt_a = cls([{"params": a[:1]}, {"params": a[1:], "lr": 0.05}], **kw)
    _steps(opt_a, a, grads[:3])
    tr.save({"optim": opt_a.state_dict()}, tmp_path / "o.npz")
    b = [tr.tensor(p.numpy(), requires_grad=True) for p in a]
    opt_b = cls([{"params": b[:1]}, {"params": b[1:], "lr": 7.0}], **{**kw, "lr": 9.0})
    versions = [p._version for p in b]
    opt_b.load_state_dict(tr.load(tmp_path / "o.npz")["optim"])
    assert [p._version for p in b] == versions  # loading the optimizer writes no parameter
    _same(opt_a.state_dict(), opt_b.state_dict())
    _steps(opt_a, a, grads[3:])
    _steps(opt_b, b, grads[3:])
    for p, q in zip(a, b):
        assert p.numpy().tobytes() == q.numpy().tobytes()


def _adam_state():
    params, grads = _problem(np.float64)
    opt = optim.Adam(params, lr=0.01)
    _steps(opt, params, grads[:2])
    return opt, opt.state_dict()


@pytest.mark.parametrize("mutate,match", [
    (lambda sd: sd["param_groups"][0].update(lr=-1), r"param_groups\[0\].*'lr'"),
    (lambda sd: sd["param_groups"][0].update(lr=float("inf")), "'lr'"),
    (lambda sd: sd["param_groups"][0].update(betas=(5, 5)), "betas"),
    (lambda sd: sd["param_groups"][0].update(betas=("a", 0.9)), "betas"),
    (lambda sd: sd["param_groups"][0].update(eps=float("nan")), "'eps'"),
    (lambda sd: sd["param_groups"][0].update(amsgrad="yes"), "amsgrad"),
    (lambda sd: sd["param_groups"][0].pop("betas"), "lacks keys \\['betas'\\]"),
    (lambda sd: sd["param_groups"][0].update(momentum=0.9), "unexpected keys \\['momentum'\\]"),
    (lambda sd: sd["state"][0]["exp_avg"].fill(np.nan), r"state\[0\]\['exp_avg'\] holds non-finite"),
    (lambda sd: sd["state"][1]["exp_avg_sq"].fill(-1.0), "exp_avg_sq'\\] holds negative"),
    (lambda sd: sd["state"][0].update(exp_avg=np.zeros((2, 3))), "shape \\(2, 3\\)"),
    (lambda sd: sd["state"][0].update(exp_avg=np.zeros((3, 2), dtype=np.int64)), "dtype int64"),
    (lambda sd: sd["state"][0].update(exp_avg=[[0.0] * 2] * 3), "must be an array"),
    (lambda sd: sd["state"][0].pop("exp_avg_sq"), "lacks \\['exp_avg_sq'\\]"),
    (lambda sd: sd["state"][0].update(step=-1), "'step'\\] must be an integer"),
    (lambda sd: sd["state"][0].update(step=2.0), "'step'\\] must be an integer"),
    (lambda sd: sd["state"][0].update(momentum_buffer=np.zeros((3, 2))), "unexpected key 'momentum_buffer'"),
    (lambda sd: sd["state"].update({5: {}}), "state key 5"),
    (lambda sd: sd["param_groups"][0].update(params=[0, 0]), "appears twice"),
    (lambda sd: sd["param_groups"][0].update(params=[0, 2]), "not 0..1"),
    (lambda sd: sd["param_groups"][0].update(params=[0]), "has 1 parameters"),
    (lambda sd: sd.pop("state"), "no 'state' key"),
    (lambda sd: sd.update(extra=1), "unexpected keys \\['extra'\\]"),
    (lambda sd: sd.update(optimizer="AdamW"), "from a AdamW optimizer, not a Adam"),
    (lambda sd: sd.update(param_groups=sd["param_groups"] * 2), "2 parameter groups"),
])
def test_optimizer_load_refuses_bad_state_and_changes_nothing(mutate, match):
    opt, sd = _adam_state()
    before = opt.state_dict()
    mutate(sd)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(sd)
    _same(before, opt.state_dict())


def test_optimizer_load_refuses_other_types_and_layouts():
    params, grads = _problem(np.float64)
    sgd = optim.SGD(params, lr=0.1, momentum=0.9)
    _steps(sgd, params, grads[:1])
    adam = optim.Adam(params)
    with pytest.raises(ValueError, match="SGD optimizer, not a Adam"):
        adam.load_state_dict(sgd.state_dict())
    sd = sgd.state_dict()
    del sd["optimizer"]  # even without the type tag, the keys give it away
    with pytest.raises(ValueError, match="lacks keys"):
        adam.load_state_dict(sd)
    other = [tr.tensor(np.ones(4), requires_grad=True), tr.tensor(np.ones((3, 2)), requires_grad=True)]
    with pytest.raises(ValueError, match="shape"):
        optim.SGD(other, lr=0.1, momentum=0.9).load_state_dict(sgd.state_dict())
    with pytest.raises(TypeError, match="state_dict"):
        adam.load_state_dict([1])
    with pytest.raises(ValueError, match="'lr'"):
        optim.SGD(params, lr=float("inf"))  # the constructor runs the same checks


def _sched_opt(groups=2):
    return optim.SGD([{"params": [tr.zeros(1, requires_grad=True)], "lr": 0.1 * (i + 1)} for i in range(groups)], lr=0.1)


SCHEDULERS = [
    lambda o: lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
    lambda o: lr_scheduler.MultiStepLR(o, milestones=[1, 3, 3], gamma=0.3),
    lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9),
    lambda o: lr_scheduler.LambdaLR(o, lr_scheduler.decay_after(2, 0.5)),
]


@pytest.mark.parametrize("make", SCHEDULERS, ids=["StepLR", "MultiStepLR", "ExponentialLR", "LambdaLR"])
def test_scheduler_state_round_trips_exactly_through_a_file(tmp_path, make):
    opt_a = _sched_opt()
    a = make(opt_a)
    for _ in range(3):
        opt_a.step()
        a.step()
    tr.save({"sched": a.state_dict(), "optim": opt_a.state_dict()}, tmp_path / "s.npz")
    back = tr.load(tmp_path / "s.npz")
    opt_b = _sched_opt()
    b = make(opt_b)
    b.load_state_dict(back["sched"])
    opt_b.load_state_dict(back["optim"])
    _same(a.state_dict(), b.state_dict())
    assert type(b.__dict__.get("milestones", {})) is type(a.__dict__.get("milestones", {}))
    for _ in range(5):
        a.step()
        b.step()
        assert a.get_last_lr() == b.get_last_lr() and opt_a.param_groups[1]["lr"] == opt_b.param_groups[1]["lr"]


@pytest.mark.parametrize("mutate,match", [
    (lambda sd: sd.pop("gamma"), "missing keys \\['gamma'\\]"),
    (lambda sd: sd.update(step_size=0), "'step_size' must be a positive integer"),
    (lambda sd: sd.update(gamma=float("nan")), "'gamma' must be a finite number"),
    (lambda sd: sd.update(last_epoch=-5), "'last_epoch'"),
    (lambda sd: sd.update(last_epoch=True), "'last_epoch'"),
    (lambda sd: sd.update(base_lrs=[0.1]), "'base_lrs' must be a list of 2"),
    (lambda sd: sd.update(_last_lr=[0.1, -1.0]), "'_last_lr' holds -1.0"),
    (lambda sd: sd.update(milestones={1: 1}), "unexpected keys \\['milestones'\\]"),
])
def test_scheduler_load_refuses_bad_state(mutate, match):
    s = lr_scheduler.StepLR(_sched_opt(), step_size=2, gamma=0.5)
    sd = s.state_dict()
    mutate(sd)
    before = s.state_dict()
    with pytest.raises(ValueError, match=match):
        s.load_state_dict(sd)
    _same(before, s.state_dict())
    m = lr_scheduler.MultiStepLR(_sched_opt(), milestones=[2])
    with pytest.raises(ValueError, match="milestones"):
        m.load_state_dict({**m.state_dict(), "milestones": {2: 0}})
    with pytest.raises(ValueError, match="another scheduler"):
        m.load_state_dict(lr_scheduler.ExponentialLR(_sched_opt(), 0.5).state_dict())


# ---------------------------------------------------------------------------------------------
# data position


def test_bptt_batcher_resumes_at_the_next_window(tmp_path):
    data = np.arange(3 * 40).reshape(3, 40)
    it = bptt_batches(data, 7)
    all_windows = list(bptt_batches(data, 7))
    assert len(it) == len(all_windows) == 6
    for _ in range(4):
        next(it)
    tr.save({"data": it.state_dict()}, tmp_path / "d.npz")
    resumed = bptt_batches(data, 7)
    resumed.load_state_dict(tr.load(tmp_path / "d.npz")["data"])
    rest = list(resumed)
    assert len(rest) == 2
    for (x, y), (x2, y2) in zip(rest, all_windows[4:]):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    with pytest.raises(ValueError, match="seq_len"):
        bptt_batches(data, 5).load_state_dict(it.state_dict())
    with pytest.raises(ValueError, match="shape"):
        bptt_batches(data[:2], 7).load_state_dict(it.state_dict())
    with pytest.raises(ValueError, match="position 7"):
        bptt_batches(data, 7).load_state_dict({**it.state_dict(), "position": 7})
    with pytest.raises(ValueError, match="keys"):
        bptt_batches(data, 7).load_state_dict({"position": 1})


@pytest.mark.parametrize("drop_last", [False, True])
def test_bucket_batcher_resumes_the_same_shuffled_pass(tmp_path, drop_last):
    r = np.random.default_rng(0)
    seqs = [list(range(int(n))) for n in r.integers(1, 9, size=29)]
    labels = np.arange(29)
    it = bucket_batches(seqs, labels, 4, seed=tr.Generator(5), drop_last=drop_last)
    taken = [next(it) for _ in range(3)]
    tr.save({"data": it.state_dict()}, tmp_path / "d.npz")
    rest = list(it)
    other = bucket_batches(seqs, labels, 4, seed=123, drop_last=drop_last)  # another shuffle: the state decides
    other.load_state_dict(tr.load(tmp_path / "d.npz")["data"])
    rest2 = list(other)
    assert len(rest2) == len(rest) == len(it) - 3
    for a, b in zip(rest, rest2):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    seen = np.concatenate([y for _, _, y in taken + rest])
    assert np.unique(seen).size == seen.size == (28 if drop_last else 29)
    sd = it.state_dict()
    bad_order = sd["order"].copy()
    bad_order[0] = bad_order[1]
    for bad, match in [({**sd, "order": bad_order}, "distinct"), ({**sd, "num_examples": 30}, "30 examples"),
                       ({**sd, "sizes": sd["sizes"] + 1}, "split"), ({**sd, "position": -1}, "position")]:
        with pytest.raises(ValueError, match=match):
            bucket_batches(seqs, labels, 4).load_state_dict(bad)


# ---------------------------------------------------------------------------------------------
# THE test: exact resume in a fresh process


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resume_in_a_fresh_process_is_bit_exact(tmp_path, dtype):
    k = 4
    tr.manual_seed(7)
    model, opt, sched, batches = job.build(0, dtype)
    _, hidden = job.train(model, opt, sched, batches, None, k)
    path = tmp_path / "ckpt.npz"
    tr.save(job.checkpoint(model, opt, sched, batches, hidden, k), path)
    expected, _ = job.train(model, opt, sched, batches, hidden, k)
    r = subprocess.run([sys.executable, job.__file__, str(path), np.dtype(dtype).name, str(k), "99"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = [float.fromhex(x) for x in r.stdout.split()]
    assert got == expected  # bit for bit
    # negative control: the same resume without the RNG state diverges (dropout draws differ)
    m2, o2, s2, b2, h2 = job.resume(str(path), np.dtype(dtype), 99)
    tr.manual_seed(1)
    diverged, _ = job.train(m2, o2, s2, b2, h2, k)
    assert diverged != expected
    state = tr.load(path)
    assert state["step"] == k and isinstance(state["hidden"], tuple) and state["hidden"][0].dtype == dtype


def test_nn_save_metadata_stays_json_as_before(tmp_path):
    # review finding: metadata went through tr.save's stricter types (a Path was refused, tuples came back)
    import pathlib

    lin = nn.Linear(3, 2, seed=0)
    lin.save(tmp_path / "m.npz", data_dir=pathlib.Path("/tmp/x"), shape=(1, 2), lr=np.float32(0.25),
             hist=np.array([1.0, 2.0]))
    _, meta = nn.load(tmp_path / "m.npz")
    assert meta["data_dir"] == "/tmp/x" and meta["shape"] == [1, 2] and meta["hist"] == [1.0, 2.0]
    assert type(meta["lr"]) is float and meta["lr"] == 0.25
    json.dumps(meta)
