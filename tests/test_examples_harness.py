"""The examples' shared harness as a newcomer meets it: one-line errors, readable logs, file modes, honest ETAs."""
from __future__ import annotations

import io
import os
import re
import stat
import subprocess
import sys

import numpy as np
import pytest
from _examples import EXAMPLES, ROOT, example_module, results, run, run_raw  # noqa: E402, I001  (tests/ helper)

import tinygrad_rnn as tr

SCRIPTS = ["hello.py", "char_lm.py", "vanishing_gradients.py", "adding_problem.py", "word_lm.py", "sentiment.py",
           "seq2seq.py"]

# (script, flags, what the one error line must name)
MISTAKES = [
    ("char_lm.py", ["--steps", "-5"], "argument --steps: must be 0 or more, got -5"),
    ("char_lm.py", ["--temperature", "-1"], "argument --temperature: must be 0 or more"),
    ("char_lm.py", ["--device", "gpu"], "unknown device 'gpu'"),
    ("char_lm.py", ["--hidden", "0"], "argument --hidden: must be a positive integer, got 0"),
    ("char_lm.py", ["--max-chars", "1000"], "argument --max-chars: 1000 characters are too few for --batch 32 x --seq 64"),
    ("char_lm.py", ["--sample", "--checkpoint", "no/such/model.npz"], "argument --checkpoint: no checkpoint at"),
    ("char_lm.py", ["--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
    ("char_lm.py", ["--dropout", "1"], "argument --dropout: must be in [0, 1), got 1"),
    ("char_lm.py", ["--model", "transformer"], "argument --model: invalid choice"),
    ("hello.py", ["--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
    ("vanishing_gradients.py", ["--steps", "2"], "argument --steps: must be at least 4, got 2"),
    ("adding_problem.py", ["--lengths", "50", "1"], "argument --lengths: must be at least 2, got 1"),
    ("adding_problem.py", ["--device", "tpu"], "unknown device 'tpu'"),
    ("word_lm.py", ["--limit-tokens", "10"], "argument --limit-tokens: 10 tokens are too few"),
    ("sentiment.py", ["--patience", "0"], "argument --patience: must be a positive integer"),
    ("seq2seq.py", ["--max-len", "1", "--train-size", "20"], "argument --train-size: 20 training + 2 x 2000 held-out"),
]


def assert_one_line_error(proc: subprocess.CompletedProcess, script: str, needle: str) -> None:
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == "", proc.stdout  # nothing ran before the check
    last = proc.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"{script}: error: "), proc.stderr
    assert needle in last, f"{needle!r} not in {last!r}"


@pytest.mark.parametrize("script,flags,needle", MISTAKES, ids=[f"{s}{' '.join(f)}" for s, f, _ in MISTAKES])
def test_mistake_gives_one_line_and_exit_2(script, flags, needle, tmp_path):
    assert_one_line_error(run_raw(script, *flags, "--out", str(tmp_path / "out")), script, needle)


def test_unwritable_out_is_refused_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = run_raw("char_lm.py", "--out", str(blocker / "run"))
    assert_one_line_error(proc, "char_lm.py", f"argument --out: cannot write to {blocker / 'run'}")
    proc = run_raw("hello.py", "--out", str(blocker))
    assert_one_line_error(proc, "hello.py", "exists and is not a folder")


def test_cuda_without_a_gpu_says_how_to_install():
    if tr.cuda.is_available():
        pytest.skip("a GPU is usable here: --device cuda is not a mistake on this machine")
    proc = run_raw("hello.py", "--device", "cuda")
    assert_one_line_error(proc, "hello.py", "argument --device: cuda is not usable here")
    assert "pip install" in proc.stderr


def test_paths_do_not_depend_on_the_current_folder(tmp_path):
    """`cd examples && python char_lm.py --sample` looks in the checkout's runs/, not examples/runs/."""
    code = "import _common; print(_common.default_out('char_lm'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=EXAMPLES, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(EXAMPLES)}).stdout.strip()
    assert out == str(ROOT / "runs" / "char_lm")
    # a path the user types is relative to where they type it, as for any command
    proc = run_raw("char_lm.py", "--sample", "--checkpoint", "model.npz", cwd=tmp_path)
    assert_one_line_error(proc, "char_lm.py", f"no checkpoint at {tmp_path / 'model.npz'}")


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_each_default_once(script):
    text = " ".join(run(script, "--help").split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert not re.search(r"\(default: [^)]*\)\)? \(default:", text), text
    assert "(default: cpu)" in text and "--threads" in text


def test_vanishing_gradients_epochs_help_says_what_it_counts():
    text = " ".join(run("vanishing_gradients.py", "--help").split())
    assert "passes over the training data" not in text and "SGD steps of the clipping training demo" in text


TINY_LM = ["--max-chars", "30000", "--hidden", "16", "--emb", "8", "--seq", "16", "--batch", "8", "--length", "20"]


def test_redirected_output_is_plain_lines(tmp_path):
    """Output to files (not a terminal): no carriage returns, periodic 'step i/n  rate  ETA' lines, nothing glued."""
    with open(tmp_path / "stdout.txt", "w") as fo, open(tmp_path / "stderr.txt", "w") as fe:
        proc = subprocess.run([sys.executable, str(EXAMPLES / "char_lm.py"), *TINY_LM, "--steps", "12", "--eval-every", "6",
                               "--out", str(tmp_path / "run")], cwd=ROOT, stdout=fo, stderr=fe, timeout=120,
                              env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    out, err = (tmp_path / "stdout.txt").read_text(), (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 0, out + err
    assert "\r" not in out and "\r" not in err and "\x1b" not in err
    progress = [line for line in err.splitlines() if "ETA" in line]
    assert progress and re.fullmatch(r"train: step 12/12  [\d.e+]+ steps/s  ETA 0:00  bpc .*", progress[-1]), err
    status = [line for line in out.splitlines() if line.startswith("step ")]
    assert len(status) == 2 and all(re.fullmatch(r"step +(6|12)  train [\d.]+  val [\d.]+ bits/char  \(\d+ s\)", s)
                                    for s in status), out  # each status line whole, on its own line
    assert "'train' = mean training bits/char over the steps since the previous line" in out


def test_status_lines_go_above_a_tqdm_bar_not_onto_it():
    pytest.importorskip("tqdm")
    common = example_module("_common")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    bar = common.Progress(5, "train", stream=screen)
    assert bar._bar is not None  # a terminal gets the tqdm bar
    bar.update(loss=1.0)
    common.log("step     1  val 2.000", file=screen)
    bar.update(loss=0.5)
    bar.close()
    text = screen.getvalue()
    i = text.index("step     1  val 2.000")
    assert text[i - 1] in "\r\n", repr(text[max(0, i - 40):i + 20])  # the bar was cleared first


def test_eta_counts_training_time_only(monkeypatch):
    common = example_module("_common")
    clock = [0.0]
    monkeypatch.setattr(common.time, "perf_counter", lambda: clock[0])
    bar = common.Progress(100, "train", disable=True)
    clock[0] += 20.0  # the first step compiles kernels: left out of the rate
    bar.update()
    for _ in range(9):
        clock[0] += 0.5
        bar.update()
    assert bar.rate() == pytest.approx(2.0)
    with bar.paused():
        clock[0] += 600.0  # a long evaluation
    clock[0] += 0.5
    bar.update()
    assert bar.rate() == pytest.approx(2.0) and bar.eta() == pytest.approx(89 / 2.0)
    assert "2 steps/s  ETA 0:44" in bar.status()


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_files_honour_the_umask(mask, tmp_path):
    out = tmp_path / f"umask{mask:03o}"
    proc = run_raw("hello.py", "--epochs", "3", "--print-every", "3", "--quiet", "--out", str(out), umask=mask)
    assert proc.returncode == 0, proc.stderr
    proc = run_raw("adding_problem.py", "--lengths", "4", "--models", "irnn", "--steps", "2", "--hidden", "4",
                   "--test-size", "8", "--eval-every", "2", "--quiet", "--out", str(out / "adding"), umask=mask)
    assert proc.returncode == 0, proc.stderr
    want = 0o666 & ~mask
    for path in (out / "model.npz", out / "results.json", out / "loss.png", out / "adding" / "irnn_T4.npz",
                 out / "adding" / "results.json"):
        assert stat.S_IMODE(path.stat().st_mode) == want, f"{path}: {oct(stat.S_IMODE(path.stat().st_mode))}"
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # no temporary files left behind


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    common = example_module("_common")
    path = tmp_path / "results.json"
    common.atomic_write(str(path), "old")

    class Boom(bytes):
        pass

    with pytest.raises(TypeError):
        common.atomic_write(str(path), object())  # fails after the temporary file exists
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_compile_notice_only_when_the_numba_cache_is_cold(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba_cache")}
    args = ["--epochs", "2", "--print-every", "2", "--quiet", "--out", str(tmp_path / "run")]
    first = run_raw("hello.py", *args, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "compiling kernels (first run only" in first.stderr
    second = run_raw("hello.py", *args, env=env, timeout=300)
    assert second.returncode == 0 and "compiling kernels" not in second.stderr, second.stderr


def test_no_compile_notice_for_kernels_an_example_never_uses(tmp_path):
    """Regression: adding_problem (MSE loss) was told the cross-entropy kernels were missing, on every run."""
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba_cache")}
    args = ["--lengths", "4", "--models", "irnn", "lstm", "--steps", "2", "--hidden", "4", "--test-size", "8",
            "--eval-every", "2", "--quiet", "--out", str(tmp_path / "run")]
    first = run_raw("adding_problem.py", *args, env=env, timeout=300)
    assert first.returncode == 0 and "compiling kernels" in first.stderr, first.stderr
    second = run_raw("adding_problem.py", *args, env=env, timeout=300)
    assert second.returncode == 0 and "compiling kernels" not in second.stderr, second.stderr


def test_kernel_cache_probe_ignores_unknown_families():
    common = example_module("_common")
    lstm = tr.nn.LSTM(3, 4)
    lstm(tr.randn(2, 1, 3))  # compiled now, so cached on disk
    assert common.kernel_cache_cold(["lstm"]) is False
    assert common.kernel_cache_cold(["no_such_kernel_family"]) is False


def test_char_lm_says_which_flag_sets_the_run_length(tmp_path):
    out = run("char_lm.py", *TINY_LM, "--steps", "4", "--eval-every", "4", "--quiet", "--out", str(tmp_path / "a"))
    assert "4 steps = " in out and "(set by --steps)" in out
    out = run("char_lm.py", *TINY_LM, "--steps", "0", "--epochs", "1", "--eval-every", "1000", "--quiet",
              "--out", str(tmp_path / "b"))
    r = results(tmp_path / "b")
    assert "(set by --epochs)" in out and r["epochs"] == pytest.approx(1.0) and r["steps"] > 4


def test_temperature_zero_is_greedy():
    mod = example_module("char_lm")
    vocab = mod.Vocab.chars("abcdefgh")
    model = mod.CharLM(len(vocab), "lstm", 8, emb=4, seed=3)
    a = mod.sample(model, vocab, "ab", 12, 0.0, np.random.default_rng(0))
    b = mod.sample(model, vocab, "ab", 12, 0.0, np.random.default_rng(99))
    assert a == b and len(a) == 14  # no randomness left
    with tr.no_grad():  # and each character is the argmax of the model's prediction after the text so far
        logits, _ = model(vocab.encode(a[:-1])[None, :])
    assert vocab.itos[int(logits.numpy()[0, -1].argmax())] == a[-1]


def test_sentiment_reports_early_stop_only_when_it_skips_training(tmp_path):
    flags = ["--limit", "200", "--batch-size", "100", "--evals-per-epoch", "2", "--patience", "1", "--lr", "1e-12",
             "--emb", "8", "--hidden", "4", "--quiet"]
    out = run("sentiment.py", *flags, "--epochs", "1", "--out", str(tmp_path / "one"))
    assert "early stop" not in out and results(tmp_path / "one")["early_stop"] is False
    out = run("sentiment.py", *flags, "--epochs", "3", "--out", str(tmp_path / "three"))
    assert "early stop after 1.00 of 3 epochs" in out and results(tmp_path / "three")["early_stop"] is True


def test_every_example_writes_a_checkpoint(tmp_path):
    run("vanishing_gradients.py", "--steps", "8", "--hidden", "4", "--batch", "2", "--burn-in", "2", "--epochs", "4",
        "--rhos", "1.0", "--out", str(tmp_path / "vg"), "--quiet")
    state, meta = tr.nn.load(tmp_path / "vg" / "clipped_rnn.npz")
    assert meta["hidden"] == 4 and "rnn.weight_hh_l0" in state and "head.weight" in state
    assert results(tmp_path / "vg")["checkpoint"].endswith("clipped_rnn.npz")


def test_reproduce_compares_and_fails_on_a_wrong_number(tmp_path):
    mod = example_module("reproduce")
    check = mod.Check("x", lambda r: r["x"], 0.01, "factor", 2.0)
    assert check.passes(0.006) and check.passes(0.019) and not check.passes(0.004) and not check.passes(float("nan"))
    assert mod.Check("y", lambda r: r, 2.5, "max").passes(2.4) and not mod.Check("y", lambda r: r, 2.5, "max").passes(2.6)
    listing = subprocess.run([sys.executable, str(EXAMPLES / "reproduce.py"), "--list"], capture_output=True, text=True,
                             check=True).stdout
    for e in mod.ENTRIES:
        assert e.command() in listing
    proc = subprocess.run([sys.executable, str(EXAMPLES / "reproduce.py"), "--only", "hello", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "1 of 1 reproduced" in proc.stdout, proc.stdout + proc.stderr
    mod.ENTRIES[0].checks[0].want = 2.0  # a number the run cannot give: the comparison must fail
    ok, rows, _ = mod.run_entry(mod.ENTRIES[0], str(tmp_path))
    assert not ok and [good for _, _, good in rows] == [False, True, True]


def test_a_non_main_process_prints_and_writes_nothing(tmp_path, capsys):
    """The switch a later MPI launch uses: only the main process (rank 0) logs and writes files."""
    common = example_module("_common")
    parser = common.make_parser("demo", "a demo")
    try:
        run = common.start(parser, ["--out", str(tmp_path / "out"), "--quiet"], is_main=False)
        run.log("hello from rank 1")
        common.print_table([[1, 2.5]], ["a", "b"])
        run.write_results({"x": 1})
        run.write_text("notes.txt", "x")
        assert capsys.readouterr().out == "" and not (tmp_path / "out").exists()
    finally:
        common._PRINTS[0] = True
        if run.blas_limit is not None:
            run.blas_limit.restore_original_limits()  # leave this test process's BLAS as it was
    run = common.start(parser, ["--out", str(tmp_path / "out"), "--quiet", "--threads", "0"])
    run.log("hello from rank 0")
    run.write_results({"x": np.float32(1.5)})
    assert "hello from rank 0" in capsys.readouterr().out and results(tmp_path / "out") == {"x": 1.5}


def test_blas_threads_measurement_runs():
    pytest.importorskip("threadpoolctl")
    out = run("blas_threads.py", "--repeats", "1", "--block", "1", timeout=300)
    assert re.search(r"1 BLAS thread : +[\d.]+ ms/step", out) and re.search(r"2 BLAS threads: +[\d.]+ ms/step", out)
    assert "x as fast as 1" in out
