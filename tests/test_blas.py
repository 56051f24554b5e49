"""BLAS called from Numba kernels (backend/blas.py): the GEMM itself, the CPU backend's matmul,
provider selection, and the recurrent layers giving the same results under every provider."""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from _child import last_json, run_python

import tinygrad_rnn as tr
from tinygrad_rnn.backend import blas, threads


def _mkl_installed() -> bool:
    return blas._mkl_handle() is not None


def test_a_real_blas_is_bound_on_this_install():
    # NumPy's wheels carry an ILP64 OpenBLAS, and the mkl extra an ILP64 MKL: one of them is bound,
    # unless the suite itself runs with TINYGRAD_RNN_BLAS=none
    choice = os.environ.get("TINYGRAD_RNN_BLAS", "auto") or "auto"
    if choice == "none":
        assert blas.PROVIDER is None and not blas.available() and blas.PROVIDERS == ()
        return
    assert blas.available()
    if choice == "auto":  # both where MKL is installed, calibration picking per shape class
        assert blas.PROVIDERS == (("numpy", "mkl") if _mkl_installed() else ("numpy",))
        assert blas.PROVIDER == ("auto" if _mkl_installed() else "numpy")
    else:
        assert blas.PROVIDERS == (choice,) and blas.PROVIDER == choice
    for cls in blas.SHAPE_CLASSES:
        assert blas.provider_for(cls) in blas.PROVIDERS


def test_shape_classes():
    assert blas.shape_class(32, 1024) == "step" and blas.shape_class(64, 10_000) == "step"
    assert blas.shape_class(2048, 65) == "skinny" and blas.shape_class(65, 2048) == "skinny"
    assert blas.shape_class(400, 10_000) == "large" and blas.shape_class(2048, 1024) == "large"


# the GEMM tests call BLAS directly: not when the suite runs with TINYGRAD_RNN_BLAS=none
needs_blas = pytest.mark.skipif(not blas.available(), reason="TINYGRAD_RNN_BLAS=none: no BLAS is bound to call")


@needs_blas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("shape", [(5, 7, 3), (1, 64, 256), (33, 1, 17), (4, 0, 6)])
def test_gemm_matches_numpy(dtype, trans_a, trans_b, shape):
    m, k, n = shape
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    a_arg = np.ascontiguousarray(a.T) if trans_a else a
    b_arg = np.ascontiguousarray(b.T) if trans_b else b
    tol = 1e-12 if dtype == np.float64 else 2e-5
    c = np.empty((m, n), dtype=dtype)
    blas.gemm_f(a_arg, b_arg, c, trans_a, trans_b, 0.0)
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=tol, atol=tol * max(k, 1))
    c = c0.copy()
    blas.gemm_f(a_arg, b_arg, c, trans_a, trans_b, 1.0)  # accumulate: c = a @ b + c
    np.testing.assert_allclose(c, a.astype(np.float64) @ b + c0, rtol=tol, atol=tol * max(k, 1))


@needs_blas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_entry_points_follow_the_step_provider(dtype):
    """The kernels' GEMM names jump through a pointer: each bound provider, pointed at, gives the product."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((32, 96)).astype(dtype)
    b = rng.standard_normal((96, 384)).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    try:
        for p in blas.PROVIDERS:
            assert blas.step_provider(p) == p and blas._POINTED[0] == p
            c = np.full((32, 384), np.nan, dtype)
            blas.gemm_f(a, b, c, False, False, 0.0)
            np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=tol, atol=tol * 96)
        with pytest.raises(ValueError, match="not a bound BLAS provider"):
            blas.step_provider("openblas-please")
    finally:
        blas.step_provider()


@needs_blas
def test_gemm_on_empty_output_is_a_no_op():
    a = np.ones((0, 4), np.float32)
    b = np.ones((4, 3), np.float32)
    c = np.empty((0, 3), np.float32)
    blas.gemm_f(a, b, c, False, False, 0.0)  # must not touch memory or crash
    assert c.shape == (0, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backend_matmul_matches_numpy_for_every_layout(dtype):
    be = tr.get_backend("cpu")
    rng = np.random.default_rng(3)
    a = rng.standard_normal((64, 300)).astype(dtype)
    b = rng.standard_normal((300, 200)).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    cases = [(a, b), (a, np.asfortranarray(b)), (np.asfortranarray(a), b),
             (a[:, ::2], b[::2]),  # neither C- nor F-contiguous: copied
             (np.ascontiguousarray(b.T), np.ascontiguousarray(a.T))]
    for x, y in cases:
        out = be.mm(x, y)
        assert out.dtype == dtype and out.flags.c_contiguous
        np.testing.assert_allclose(out, x.astype(np.float64) @ y, rtol=tol, atol=tol * 300)
    # mixed dtypes and small products keep NumPy's own rules
    assert be.mm(a, b.astype(np.float32 if dtype == np.float64 else np.float64)).dtype == np.float64
    np.testing.assert_array_equal(be.mm(a[:2, :3], b[:3, :2]), a[:2, :3] @ b[:3, :2])
    if blas.provider_for(blas.shape_class(64, 200)) == "mkl":
        with pytest.raises(ValueError, match=r"matmul: shapes \(64, 300\) and \(200, 300\)"):
            be.mm(a, np.ascontiguousarray(b.T))
    else:
        with pytest.raises(ValueError):
            be.mm(a, np.ascontiguousarray(b.T))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(600, 300, 40), (40, 300, 600)])  # split along rows / along columns
@pytest.mark.parametrize("layouts", ["nn", "tn", "nt", "tt"])
@pytest.mark.parametrize("provider", blas.PROVIDERS or (None,))
def test_split_gemm_blocks_match_numpy(dtype, shape, layouts, provider):
    """Large products split into row or column blocks over threads (MKL) give NumPy's product."""
    m, k, n = shape
    rng = np.random.default_rng(m + n)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    a_arg = np.ascontiguousarray(a.T).T if layouts[0] == "t" else a
    b_arg = np.ascontiguousarray(b.T).T if layouts[1] == "t" else b
    saved, min_macs = tr.get_num_threads(), blas.PARALLEL_MIN_MACS
    try:
        tr.set_num_threads(3)
        blas.PARALLEL_MIN_MACS = 1 << 12  # three blocks even on one core
        out = blas.matmul(a_arg, b_arg, provider=provider)
    finally:
        tr.set_num_threads(saved)
        blas.PARALLEL_MIN_MACS = min_macs
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=tol, atol=tol * k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 4), (600, 300, 40), (40, 300, 600)])
@pytest.mark.parametrize("provider", blas.PROVIDERS or (None,))
def test_backend_matmul_with_bias_starts_from_the_bias(dtype, shape, provider):
    m, k, n = shape
    rng = np.random.default_rng(k)
    a = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    bias = rng.standard_normal(n).astype(dtype)
    saved = tr.get_num_threads()
    try:
        tr.set_num_threads(2)
        out = blas.matmul(a, w.T, bias, provider=provider)
    finally:
        tr.set_num_threads(saved)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out, a.astype(np.float64) @ w.T + bias, rtol=tol, atol=tol * k)


@needs_blas
def test_gemm_block_writes_only_its_block():
    a = np.arange(12.0).reshape(4, 3)
    b = np.arange(15.0).reshape(3, 5)
    c = np.full((4, 5), -7.0)
    blas.gemm_block_f(a, b, c, False, False, 0.0, 1, 3, 2, 4)
    want = np.full((4, 5), -7.0)
    want[1:3, 2:4] = (a @ b)[1:3, 2:4]
    np.testing.assert_array_equal(c, want)


def test_set_num_threads_is_validated_and_read_back():
    saved = tr.get_num_threads()
    try:
        tr.set_num_threads(1)
        assert tr.get_num_threads() == 1
        for bad in (0, -2, 1.5, "2", True):
            with pytest.raises(ValueError, match="set_num_threads: need a positive integer"):
                tr.set_num_threads(bad)
        assert tr.get_num_threads() == 1
    finally:
        tr.set_num_threads(saved)


def test_run_parallel_runs_every_task_and_reraises():
    done = []

    def boom():
        raise KeyError("task 2 failed")

    with pytest.raises(KeyError, match="task 2 failed"):
        threads.run_parallel([lambda: done.append(0), boom, lambda: done.append(2)])
    assert sorted(done) == [0, 2]  # the others still ran to the end before the error came back


# ---------------------------------------------------------------------------------------------
# provider selection (each in its own process: the symbols are bound once, at import)


def _run(code: str, provider: str | None) -> subprocess.CompletedProcess:
    return run_python(code, {"TINYGRAD_RNN_BLAS": provider})


def test_an_unknown_provider_is_a_clear_error():
    r = _run("import tinygrad_rnn as tr; tr.tensor([1.0]) + 1", "openblas-please")
    assert r.returncode != 0
    assert "ValueError" in r.stderr and "TINYGRAD_RNN_BLAS must be 'auto', 'mkl', 'numpy' or 'none'" in r.stderr


def test_asking_for_mkl_without_it_names_the_extra():
    code = """
        import os
        import tinygrad_rnn.backend.blas as b
        b._mkl_handle = lambda: None  # as on an install without the mkl extra
        os.environ["TINYGRAD_RNN_BLAS"] = "mkl"
        try:
            b._bind()
        except ValueError as e:
            print("ERR", e)
    """
    r = _run(code, "numpy")
    assert r.returncode == 0, r.stderr
    assert "ERR TINYGRAD_RNN_BLAS=mkl" in r.stdout and "pip install 'tinygrad_rnn[mkl]'" in r.stdout


_LAYERS = """
    import json, sys
    import numpy as np
    import tinygrad_rnn as tr
    from tinygrad_rnn.backend import blas
    be = tr.get_backend("cpu")
    out = {"provider": blas.PROVIDER, "blas_kernel": []}
    pick = be._seq_kernel
    def spy(*a):
        r = pick(*a)
        out["blas_kernel"].append(bool(r[0] and r[1]))
        return r
    be._seq_kernel = spy
    rng = np.random.default_rng(0)
    for dtype in (tr.float64, tr.float32):
        for cls in (tr.nn.LSTM, tr.nn.GRU, tr.nn.RNN):
            # B * G * H * H above SMALL_STEP_MACS: the BLAS sequence kernel where BLAS is bound
            m = cls(12, 48, num_layers=2, bidirectional=True, batch_first=True, dtype=dtype, seed=1)
            x = tr.tensor(rng.uniform(-1, 1, (8, 9, 12)).astype(np.dtype(dtype)), requires_grad=True)
            lengths = [9, 7, 9, 3, 9, 1, 5, 9]
            y, _ = m(x, lengths=lengths)
            head = tr.nn.Linear(96, 40, dtype=dtype, seed=2)
            loss = (head(y) ** 2).mean()
            loss.backward()
            key = f"{cls.__name__}-{np.dtype(dtype).name}"
            out[key] = [loss.item()] + [float(np.abs(p.grad.numpy()).sum()) for p in m.parameters()]
            out[key + "-x"] = float(np.abs(x.grad.numpy()).sum())
            np.save(sys.argv[1] + "/" + key + ".npy", x.grad.numpy()) if len(sys.argv) > 1 else None
    print(json.dumps(out))
"""


def _providers() -> list[str]:
    return ["numpy", "none"] + (["mkl"] if _mkl_installed() else [])


def test_recurrent_layers_agree_under_every_provider():
    """numpy (OpenBLAS from the kernels), none (the per-step Python loop) and, where installed, mkl:
    same losses and gradients, float64 to rounding, float32 to float32 rounding."""
    results = {}
    for p in _providers():
        r = _run(_LAYERS, p)
        assert r.returncode == 0, r.stderr
        results[p] = json.loads(r.stdout.strip().splitlines()[-1])
    assert results["numpy"]["provider"] == "numpy" and results["none"]["provider"] is None
    # the BLAS sequence kernel ran wherever BLAS is bound (float32 always; float64 at this width), never with none
    assert any(results["numpy"]["blas_kernel"]) and not any(results["none"]["blas_kernel"])
    if "mkl" in results:
        assert results["mkl"]["provider"] == "mkl" and any(results["mkl"]["blas_kernel"])
    ref = results["numpy"]
    for p, res in results.items():
        for key, vals in ref.items():
            if key in ("provider", "blas_kernel"):
                continue
            rtol = 1e-11 if "float64" in key else 2e-4
            np.testing.assert_allclose(res[key], vals, rtol=rtol, err_msg=f"{p}: {key}")


# ---------------------------------------------------------------------------------------------
# the provider per shape class: calibrated once per process and thread count, cached on disk

_CALIBRATE = """
    import json, os
    from tinygrad_rnn.backend import blas, calibration, threads
    threads.set_num_threads(int(os.environ.get("FAKE_THREADS", "1")))
    fake = os.environ.get("FAKE_TIMES")
    if fake:  # two providers as if both were bound, with given timings (no MKL needed, nothing run)
        blas.PROVIDERS = ("numpy", "mkl")
        times = json.loads(fake)
        def measure(cls, n):
            if times == "must not run":
                raise AssertionError("calibrated although the cache or the override should answer")
            return times[cls]
        calibration.measure = measure
        calibration.machine_busy = lambda n: os.environ.get("FAKE_BUSY") == "1"
    picks = [{c: blas.provider_for(c) for c in blas.SHAPE_CLASSES} for _ in range(3)]
    assert picks[0] == picks[1] == picks[2]
    print(json.dumps({"picks": picks[0], "calibrations": calibration.CALIBRATIONS,
                      "unsaved": calibration.UNSAVED, "providers": list(blas.PROVIDERS)}))
"""

_TIMES = {"step": {"numpy": 2.0, "mkl": 1.0}, "skinny": {"numpy": 1.0, "mkl": 3.0}, "large": {"numpy": 5.0, "mkl": 4.0}}


def _calibrate(tmp_path, times, provider: str | None = "auto", busy: bool = False, n_threads: int = 1) -> dict:
    return last_json(run_python(_CALIBRATE, {
        "TINYGRAD_RNN_CACHE_DIR": str(tmp_path), "TINYGRAD_RNN_BLAS": provider,
        "FAKE_TIMES": None if times is None else json.dumps(times), "FAKE_BUSY": "1" if busy else "0",
        "FAKE_THREADS": str(n_threads)}))


def test_calibration_is_cached_per_machine_and_read_back(tmp_path):
    first = _calibrate(tmp_path, _TIMES)
    assert first["calibrations"] == 1  # once per process, however often asked
    assert first["picks"] == {"step": "mkl", "skinny": "numpy", "large": "mkl"}  # the faster of each class
    cache = tmp_path / "blas_calibration.json"
    entries = json.loads(cache.read_text())["entries"]
    assert list(entries.values()) == [first["picks"]]
    key = next(iter(entries))
    assert key.endswith("-t1")
    again = _calibrate(tmp_path, "must not run")  # a second process reads the cache: no calibration
    assert again["calibrations"] == 0 and again["picks"] == first["picks"]


def test_a_busy_machine_calibrates_for_this_process_only(tmp_path):
    """Timings taken while other processes hold the cores decide this process only: not cached."""
    res = _calibrate(tmp_path, _TIMES, busy=True)
    assert res["calibrations"] == 1 and res["unsaved"] == 1 and res["picks"]["step"] == "mkl"
    assert not (tmp_path / "blas_calibration.json").exists()
    again = _calibrate(tmp_path, _TIMES)  # quiet now: calibrates again, and keeps it
    assert again["calibrations"] == 1 and again["unsaved"] == 0 and (tmp_path / "blas_calibration.json").exists()


def test_a_near_tie_keeps_the_first_provider(tmp_path):
    """The other provider must win by calibration.MARGIN: a tie within noise is no reason to switch."""
    near = {c: {"numpy": 1.0, "mkl": 0.95} for c in blas.SHAPE_CLASSES}  # numpy is first in the faked order
    res = _calibrate(tmp_path, near)
    assert set(res["picks"].values()) == {"numpy"}
    clear = {c: {"numpy": 1.0, "mkl": 0.5} for c in blas.SHAPE_CLASSES}
    assert set(_calibrate(tmp_path / "b", clear)["picks"].values()) == {"mkl"}


def test_above_one_thread_the_step_provider_serves_every_class(tmp_path):
    """Two threads: one provider owns the cores (OpenBLAS's spinning workers beside our MKL threads cost
    more than a per-class pick gains), so the step's pick holds for every class."""
    res = _calibrate(tmp_path, _TIMES, n_threads=2)
    assert res["picks"] == dict.fromkeys(blas.SHAPE_CLASSES, "mkl")
    flipped = {c: {"numpy": v["mkl"], "mkl": v["numpy"]} for c, v in _TIMES.items()}
    assert _calibrate(tmp_path / "b", flipped, n_threads=2)["picks"] == dict.fromkeys(blas.SHAPE_CLASSES, "numpy")


@pytest.mark.parametrize("corrupt", ["{not json", '{"format": 2, "entries": []}', "null",
                                     '{"format": 2, "entries": {"KEY": {"step": "cuda", "skinny": 1}}}',
                                     # format 1 picked per class at every thread count: calibrate again
                                     '{"format": 1, "entries": {"KEY": {"step": "mkl", "skinny": "numpy", '
                                     '"large": "numpy"}}}'])
def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path, corrupt):
    _calibrate(tmp_path, _TIMES)
    cache = tmp_path / "blas_calibration.json"
    key = next(iter(json.loads(cache.read_text())["entries"]))
    cache.write_text(corrupt.replace("KEY", key))
    res = _calibrate(tmp_path, _TIMES)
    assert res["calibrations"] == 1 and res["picks"] == {"step": "mkl", "skinny": "numpy", "large": "mkl"}
    assert json.loads(cache.read_text())["entries"][key] == res["picks"]  # rewritten, valid again


def test_the_override_wins_over_calibration_and_cache(tmp_path):
    _calibrate(tmp_path, _TIMES)  # a cache that says mkl for two classes
    res = _calibrate(tmp_path, None, "numpy")
    assert res["providers"] == ["numpy"] and res["calibrations"] == 0
    assert set(res["picks"].values()) == {"numpy"}
    if _mkl_installed():
        res = _calibrate(tmp_path, None, "mkl")
        assert res["providers"] == ["mkl"] and res["calibrations"] == 0 and set(res["picks"].values()) == {"mkl"}


def test_real_calibration_on_this_install(tmp_path):
    """Unfaked: with both providers bound each class is timed (finite, positive) and one is picked; with one
    bound nothing is timed."""
    res = _calibrate(tmp_path, None)
    assert set(res["picks"].values()) <= set(res["providers"])
    if len(res["providers"]) > 1:
        # cached unless the machine was busy when it calibrated (then it holds for that process only)
        assert res["calibrations"] == 1 and (tmp_path / "blas_calibration.json").exists() == (res["unsaved"] == 0)
        from tinygrad_rnn.backend import calibration
        for cls in blas.SHAPE_CLASSES:
            times = calibration.measure(cls, threads.get_num_threads())
            assert set(times) == set(blas.PROVIDERS) and all(0 < t < 1 for t in times.values())
    else:
        assert res["calibrations"] == 0 and not (tmp_path / "blas_calibration.json").exists()


# ---------------------------------------------------------------------------------------------
# matmul's blocks split by prange on Numba's TBB layer (threads.native_parallel)

_NATIVE_CHILD = """
    import json, os, threading
    import numpy as np
    import tinygrad_rnn as tr
    from tinygrad_rnn.backend import blas, threads
    tr.set_num_threads(2)
    tr.get_backend("cpu")
    rng = np.random.default_rng(0)
    worst = 0.0
    for dt in (np.float32, np.float64):
        # below and above the split threshold, blocks of rows and of columns, transposed operands, a bias
        for m, k, n in ((32, 64, 1024), (1024, 32, 256), (64, 256, 1024), (300, 7, 301), (5, 512, 4096)):
            a = rng.standard_normal((m, k)).astype(dt)
            b = rng.standard_normal((k, n)).astype(dt)
            bias = rng.standard_normal(n).astype(dt)
            want = a.astype(np.float64) @ b.astype(np.float64)
            for got in (blas.matmul(a, b), blas.matmul(a, b, bias) - bias, blas.matmul(a.T.copy().T, b.T.copy().T)):
                assert got.dtype == dt and got.shape == (m, n)
                worst = max(worst, float(np.abs(got - want).max() / (np.abs(want).max() * np.finfo(dt).eps * k)))
    # the backend's gemm (out = a @ b + beta * out): the per-step loop's and the fused cells' product
    be = tr.get_backend("cpu")
    for dt in (np.float32, np.float64):
        for m, k, n in ((32, 1024, 256), (3, 5, 7)):
            a = rng.standard_normal((m, k)).astype(dt)
            b = rng.standard_normal((k, n)).astype(dt)
            for beta in (0, 1):
                c0 = rng.standard_normal((m, n)).astype(dt)
                c = c0.copy()
                be.gemm(a, b, c, beta)
                want = a.astype(np.float64) @ b + beta * c0
                worst = max(worst, float(np.abs(c - want).max() / (np.abs(want).max() * np.finfo(dt).eps * k)))
    splits = blas.NATIVE_SPLITS[0]
    # two Python threads at once (TBB is thread-safe), then a forked child using the same path
    a = rng.standard_normal((256, 256)).astype(np.float32)
    errs = []
    def use():
        for _ in range(50):
            errs.append(float(np.abs(blas.matmul(a, a) - a.astype(np.float64) @ a).max()))
    ts = [threading.Thread(target=use) for _ in range(2)]
    [t.start() for t in ts]
    [t.join(60) for t in ts]
    pid = os.fork()
    if pid == 0:
        ok = np.allclose(blas.matmul(a, a), a.astype(np.float64) @ a, rtol=1e-4, atol=1e-3)
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"native": threads.native_parallel(), "splits": splits, "worst": worst,
                      "thread_err": max(errs), "n_thread_calls": len(errs), "child": status}))
"""


def _native_child(env_extra: dict) -> dict:
    return last_json(run_python(_NATIVE_CHILD, env_extra))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
@pytest.mark.parametrize("native", ["1", "0"])
def test_matmul_split_by_prange_equals_the_product_in_threads_and_after_fork(native):
    if not _mkl_installed():
        pytest.skip("matmul's blocks are oneMKL's: without MKL NumPy does the product")
    res = _native_child({"TINYGRAD_RNN_NATIVE_THREADS": native, "TINYGRAD_RNN_BLAS": "mkl"})
    assert res["worst"] < 4.0, res  # within a few rounding units of the float64 product, per dtype
    assert res["n_thread_calls"] == 100 and res["thread_err"] < 1e-2 and res["child"] == 0, res
    if native == "1":  # TBB comes with the mkl extra: the fast path is taken
        assert res["native"] is True and res["splits"] > 0, res
    else:
        assert res["native"] is False and res["splits"] == 0, res


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
def test_packed_and_unpacked_weights_give_the_same_layer(mode, monkeypatch):
    """The sequence kernels under BLAS take W packed by MKL (long passes) or W itself read transposed
    (short passes: a generation loop's T = 1 does not earn the packing back): both the same to rounding,
    forward and backward, on row blocks too; packing happens exactly when CPUBackend._packing says."""
    if not _mkl_installed():
        pytest.skip("packing is oneMKL's")
    be = tr.get_backend("cpu")
    calls = []
    real = blas.pack_b
    monkeypatch.setattr(blas, "pack_b", lambda *a, **k: calls.append(1) or real(*a, **k))
    for k, v in {"SMALL_STEP_MACS": 0, "STEP_PROVIDER": "mkl", "SPLIT_MIN_ROWS": 1, "SPLIT_MIN_MACS": 0,
                 "ROW_THREADS": 2}.items():
        monkeypatch.setattr(be, k, v, raising=False)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4, 5))
    layer = getattr(tr.nn, mode)(5, 7).double()
    results = []
    for min_steps, want_packed in ((1, True), (1 << 30, False)):
        monkeypatch.setattr(be, "PACK_MIN_STEPS", min_steps, raising=False)
        monkeypatch.setattr(be, "PACK_MIN_ROW_STEPS", 1, raising=False)
        for inference in (True, False):
            calls.clear()
            xt = tr.tensor(x, requires_grad=not inference)
            layer.zero_grad()
            if inference:
                with tr.no_grad():
                    out = layer(xt)[0]
                results.append(out.numpy())
            else:
                out = layer(xt)[0]
                (out * out).sum().backward()
                results.append(np.concatenate([out.numpy().ravel(), xt.grad.numpy().ravel()]
                                              + [p.grad.numpy().ravel() for p in layer.parameters()]))
            assert bool(calls) == want_packed, (min_steps, inference, len(calls))
    np.testing.assert_allclose(results[0], results[2], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[1], results[3], rtol=1e-12, atol=1e-12)


def test_a_bad_native_threads_setting_is_a_clear_error():
    if not _mkl_installed():
        pytest.skip("the setting is read where oneMKL's products are split")
    r = run_python("""
        import numpy as np
        import tinygrad_rnn as tr
        tr.set_num_threads(2)
        a = np.ones((512, 512), np.float32)
        tr.get_backend("cpu").mm(a, a)
    """, {"TINYGRAD_RNN_NATIVE_THREADS": "no", "TINYGRAD_RNN_BLAS": "mkl"})
    assert r.returncode != 0
    assert "TINYGRAD_RNN_NATIVE_THREADS must be '0' or '1', got 'no'" in r.stderr
