"""Saving a whole module and the PyTorch-style calls around tr.save/tr.load (issue 20), and the file
system's corner cases of issue 18 (symlinks, missing folders, np.float64)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _user_model import WordModel

import tinygrad_rnn as tr
from tinygrad_rnn import nn

IDS = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]])


def _out(model) -> np.ndarray:
    model.eval()
    with tr.no_grad():
        return model(tr.tensor(IDS)).numpy()


def test_a_user_model_saved_whole_loads_in_a_fresh_process_with_safe_globals(tmp_path):
    model = WordModel()
    path = tmp_path / "model.npz"
    tr.save(model, path)
    np.save(tmp_path / "want.npy", _out(model))
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import tinygrad_rnn as tr
        from _user_model import WordModel
        # as a PyTorch program names them: its own class and the library's by PyTorch's module paths
        with tr.serialization.safe_globals([WordModel, tr.nn.modules.rnn.LSTM, tr.nn.modules.sparse.Embedding,
                                            tr.nn.modules.linear.Linear, tr.nn.modules.dropout.Dropout]):
            m = tr.load({str(path)!r})
        assert type(m) is WordModel and m.nhid == 10 and m.config == {{"tie": False, "sizes": (13, 6), "name": "lm"}}
        assert type(m.rnn) is tr.nn.LSTM and isinstance(m.decoder.weight, tr.nn.Parameter)
        m.eval()
        with tr.no_grad():
            got = m(tr.tensor(np.load({str(tmp_path / "ids.npy")!r}))).numpy()
        np.testing.assert_array_equal(got, np.load({str(tmp_path / "want.npy")!r}))
        try:
            tr.load({str(path)!r})
        except ValueError as e:
            print("REFUSED:", e)
    """)
    np.save(tmp_path / "ids.npy", IDS)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    refusal = run.stdout.split("REFUSED:", 1)[1]
    # outside the block the user's class is refused, and the message names it and says how to allow it
    assert str(path) in refusal and "_user_model.WordModel" in refusal and "safe_globals([WordModel])" in refusal


def test_a_loaded_module_trains_like_the_original(tmp_path):
    a = WordModel(seed=3)
    tr.save(a, tmp_path / "m.npz")
    with tr.serialization.safe_globals([WordModel]):
        b = tr.load(tmp_path / "m.npz")
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    for m in (a, b):
        m.train()
        m.drop.p = 0.0
        opt = tr.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            (m(tr.tensor(IDS)) ** 2).mean().backward()
            opt.step()
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)


def test_library_modules_need_no_allow_list_and_keep_their_mode_and_ties(tmp_path):
    lin = nn.Linear(3, 3, seed=0)
    seq = nn.Sequential(lin, nn.Tanh(), lin, nn.Linear(3, 2, bias=False, seed=1))  # lin twice: tied
    seq.eval()
    tr.save(seq, tmp_path / "s.npz")
    back = tr.load(tmp_path / "s.npz")
    assert type(back) is nn.Sequential and not back.training and not back[0].training
    assert back[0] is back[2] and back[3].bias is None
    x = tr.randn(4, 3, seed=0)
    np.testing.assert_array_equal(seq(x).numpy(), back(x).numpy())
    assert len(list(back.parameters())) == 3  # the shared Linear's two, the last one's weight


def test_add_safe_globals_and_clear(tmp_path):
    tr.save(WordModel(), tmp_path / "m.npz")
    try:
        tr.serialization.add_safe_globals([WordModel])
        assert WordModel in tr.serialization.get_safe_globals()
        assert type(tr.load(tmp_path / "m.npz")) is WordModel
    finally:
        tr.serialization.clear_safe_globals()
    with pytest.raises(ValueError, match="not allow-listed"):
        tr.load(tmp_path / "m.npz")
    with pytest.raises(TypeError, match="not a class"):
        tr.serialization.safe_globals([3]).__enter__()


class _WithGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.callback = print


def test_a_module_with_an_attribute_that_would_need_pickle_is_refused_on_save(tmp_path):
    with pytest.raises(TypeError, match=r"attribute 'callback' is a builtin_function_or_method.*state_dict"):
        tr.save(_WithGenerator(), tmp_path / "x.npz")
    assert not os.path.exists(tmp_path / "x.npz")


def test_save_and_load_with_file_objects_as_torch(tmp_path):
    state = {"w": tr.ones(2, requires_grad=True), "n": 3}
    buf = io.BytesIO()
    buf.write(b"prefix")  # torch.load reads from the file's current position
    tr.save(state, buf)
    buf.seek(6)
    back = tr.load(buf)
    assert back["n"] == 3 and back["w"].requires_grad
    with open(tmp_path / "f.npz", "wb") as fh:
        tr.save(state, fh)
    with open(tmp_path / "f.npz", "rb") as fh:
        assert tr.load(fh)["n"] == 3

    class Stream(io.RawIOBase):  # neither seekable nor tellable, as a pipe
        def __init__(self, data=b""):
            self.data, self.pos = bytearray(data), 0

        def writable(self):
            return True

        def readable(self):
            return True

        def write(self, b):
            self.data += bytes(b)
            return len(b)

        def readinto(self, b):
            n = min(len(b), len(self.data) - self.pos)
            b[:n] = self.data[self.pos:self.pos + n]
            self.pos += n
            return n

    out = Stream()
    tr.save(state, out)
    assert tr.load(Stream(out.data))["n"] == 3
    bad = io.BytesIO(b"not a zip at all")
    bad.name = "upload.bin"
    with pytest.raises(ValueError, match="upload.bin"):
        tr.load(bad)
    with pytest.raises(TypeError, match="binary mode"):
        tr.save(state, io.StringIO())


def test_map_location_and_weights_only_as_torch(tmp_path):
    tr.save({"w": tr.ones(2)}, tmp_path / "w.npz")
    for loc in ("cpu", {"cpu": "cpu"}, type("Device", (), {"type": "cpu", "__str__": lambda s: "cpu"})()):
        assert tr.load(tmp_path / "w.npz", map_location=loc)["w"].device == "cpu"
    assert tr.load(tmp_path / "w.npz", weights_only=True)["w"].shape == (2,)
    with pytest.raises(ValueError, match="weights_only=False.*never unpickles"):
        tr.load(tmp_path / "w.npz", weights_only=False)
    with pytest.raises(TypeError, match="map_location as a function"):
        tr.load(tmp_path / "w.npz", map_location=lambda storage, loc: storage)


def test_numpy_scalars_come_back_as_numpy_scalars(tmp_path):
    obj = {"f64": np.float64(0.1), "f32": np.float32(2.5), "i64": np.int64(-3), "b": np.bool_(True), "f": 0.1}
    tr.save(obj, tmp_path / "s.npz")
    back = tr.load(tmp_path / "s.npz")
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in obj.items()}
    assert back == obj


def test_saving_to_a_symlink_writes_through_it_as_torch_save(tmp_path):
    target = tmp_path / "real.npz"
    target.write_bytes(b"old")
    link = tmp_path / "link.npz"
    os.symlink(target, link)
    tr.save({"n": 1}, link)
    assert os.path.islink(link) and tr.load(target) == {"n": 1}
    dangling = tmp_path / "dangling.npz"
    os.symlink(tmp_path / "later.npz", dangling)
    tr.save({"n": 2}, dangling)  # open(path, "wb") creates the target; so does torch.save
    assert os.path.islink(dangling) and tr.load(tmp_path / "later.npz") == {"n": 2}


def test_saving_into_a_missing_folder_raises_as_torch_save(tmp_path):
    path = tmp_path / "missing" / "x.npz"
    with pytest.raises(RuntimeError, match="Parent directory .*missing does not exist"):
        tr.save({"n": 1}, path)
    with pytest.raises(FileNotFoundError):  # what open() would raise, for the other habit
        tr.save({"n": 1}, path)
    assert not os.path.exists(tmp_path / "missing")


class LSTM(nn.Module):  # a user's own class that happens to share a library class's name
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)


def test_a_user_class_named_like_a_library_class_is_not_rebuilt_as_the_library_one(tmp_path):
    tr.save(LSTM(), tmp_path / "x.npz")
    with pytest.raises(ValueError, match=r"class test_save_module\.LSTM, which is not allow-listed"):
        tr.load(tmp_path / "x.npz")
    with tr.serialization.safe_globals([LSTM]):
        assert type(tr.load(tmp_path / "x.npz")) is LSTM
    # saved from a script (__main__) and loaded where the class lives in a module: the allowed class's name matches
    with tr.serialization.safe_globals([(LSTM, "elsewhere.LSTM")]):
        assert type(tr.load(tmp_path / "x.npz")) is LSTM
