"""--save-every / --resume / --stop-after / Ctrl-C of the four training examples, run as a user would (subprocesses).

The check is always the same: a run stopped part-way and continued in a fresh process records exactly the
per-step losses (and validation curve, and final numbers) of an uninterrupted run, bit for bit.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest
from _examples import EXAMPLES, ROOT, results, run_raw  # noqa: E402, I001  (tests/ helper)

import tinygrad_rnn as tr

# Tiny settings. Each crosses what a resume must carry over: char_lm an epoch boundary (a new random
# window offset) and dropout; word_lm all three neural models, an lr decay and dropout; sentiment an
# epoch boundary (a new shuffle), dropout and Adam; adding_problem a change of model and length.
TINY = {
    "char_lm.py": ["--max-chars", "2000", "--steps", "0", "--epochs", "3", "--eval-every", "5", "--hidden", "16",
                   "--emb", "8", "--seq", "16", "--batch", "8", "--dropout", "0.2", "--prime", "a", "--length", "20"],
    "word_lm.py": ["--model", "all", "--limit-tokens", "3000", "--max-steps", "4", "--epochs", "2", "--baseline-epochs", "2",
                   "--evals-per-epoch", "2", "--hidden", "16", "--window-emb", "8", "--window-hidden", "16",
                   "--dropout", "0.2", "--window-dropout", "0.2"],
    "sentiment.py": ["--limit", "400", "--epochs", "2", "--emb", "16", "--hidden", "8", "--batch-size", "50",
                     "--evals-per-epoch", "2", "--bidirectional"],
    "adding_problem.py": ["--lengths", "6", "10", "--models", "irnn", "lstm", "--steps", "12", "--hidden", "8",
                          "--test-size", "64", "--eval-every", "6"],
}
STOP_AFTER = {"char_lm.py": 17, "word_lm.py": 5, "sentiment.py": 5, "adding_problem.py": 13}


def step_losses(script: str, r: dict) -> list[list[float]]:
    """Every recorded per-step loss of a results.json, per model."""
    if script == "char_lm.py":
        return [r["losses"]]
    if script == "word_lm.py":
        return [r["models"][m]["losses"] for m in ("window", "rnn", "lstm")]
    if script == "sentiment.py":
        return [r["lstm"]["losses"]]
    return [x["losses"] for x in r["runs"]]


def outcome(script: str, r: dict) -> object:
    """The numbers a user reads, timings left out."""
    if script == "char_lm.py":
        return r["val_bpc"], r["test_bpc"], r["best_step"], [(h["step"], h["train_bpc"], h["val_bpc"]) for h in r["history"]]
    if script == "word_lm.py":
        return {m: (v.get("valid_ppl"), v.get("test_ppl"), v.get("history")) for m, v in r["models"].items()}
    if script == "sentiment.py":
        return r["lstm"]["dev_acc"], r["lstm"]["test_acc"], r["lstm"]["history"], r["verdicts"]
    return [(x["model"], x["T"], x["curve"], x["test_mse"]) for x in r["runs"]]


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


RESUME_LINE = re.compile(r"^(interrupted|stopped) at step (\d+).*; resume with: (.+)$", re.M)


@pytest.mark.parametrize("script", sorted(TINY))
def test_stop_and_resume_equals_a_straight_run(script, tmp_path):
    flags = [*TINY[script], "--quiet", "--save-every", "3"]
    ok(run_raw(script, *flags, "--out", str(tmp_path / "straight"), timeout=300))
    straight = results(tmp_path / "straight")

    out = tmp_path / "pieces"
    k = STOP_AFTER[script]
    proc = ok(run_raw(script, *flags, "--stop-after", str(k), "--out", str(out), timeout=300))
    assert not (out / "results.json").exists()  # it stopped before the end
    m = RESUME_LINE.search(proc.stderr)
    assert m and m.group(1) == "stopped" and int(m.group(2)) == k, proc.stderr
    cmd = shlex.split(m.group(3))
    assert cmd[:2] == ["python", os.path.relpath(EXAMPLES / script, ROOT)]
    assert cmd[-2:] == ["--resume", str(out / "train_state.npz")]
    state = tr.load(out / "train_state.npz")
    assert state["example"] == script[:-3] and state["ranks"] == 1
    # continue in fresh processes until the run ends, exactly as the printed line says
    for _ in range(20):
        proc = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
        ok(proc)
        if (out / "results.json").exists():
            break
    resumed = results(out)
    assert step_losses(script, resumed) == step_losses(script, straight)  # bit for bit (JSON keeps every float digit)
    assert all(len(x) > k // 3 for x in step_losses(script, straight))
    assert outcome(script, resumed) == outcome(script, straight)


def test_char_lm_resumes_into_another_folder(tmp_path):
    """The best-validation model travels in the state: a resumed run in a new --out ends with the same numbers."""
    flags = [*TINY["char_lm.py"], "--quiet"]
    ok(run_raw("char_lm.py", *flags, "--out", str(tmp_path / "a"), timeout=300))
    ok(run_raw("char_lm.py", *flags, "--stop-after", "20", "--out", str(tmp_path / "b"), timeout=300))
    ok(run_raw("char_lm.py", *flags, "--out", str(tmp_path / "c"), "--resume", str(tmp_path / "b" / "train_state.npz"),
               timeout=300))
    a, c = results(tmp_path / "a"), results(tmp_path / "c")
    assert c["losses"] == a["losses"] and outcome("char_lm.py", c) == outcome("char_lm.py", a)
    assert (tmp_path / "c" / "samples.txt").read_text() == (tmp_path / "a" / "samples.txt").read_text()


def one_error_line(proc: subprocess.CompletedProcess, script: str, *needles: str) -> str:
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"{script}: error: argument --resume: "), proc.stderr
    for n in needles:
        assert n in last, f"{n!r} not in {last!r}"
    return last


@pytest.fixture(scope="module")
def char_state(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("char_state")
    ok(run_raw("char_lm.py", *TINY["char_lm.py"], "--quiet", "--stop-after", "3", "--out", str(out), timeout=300))
    return str(out / "train_state.npz")


def test_bad_resume_paths_and_files(tmp_path, char_state):
    flags = [*TINY["char_lm.py"], "--quiet", "--out", str(tmp_path / "o")]
    one_error_line(run_raw("char_lm.py", *flags, "--resume", str(tmp_path / "nope.npz")), "char_lm.py",
                   "no training state at", "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a checkpoint at all")
    one_error_line(run_raw("char_lm.py", *flags, "--resume", str(junk)), "char_lm.py", "junk.npz")
    model_only = tmp_path / "model.npz"  # a file tr.load reads, but not a training state
    tr.save({"model": {"w": tr.zeros(2)}}, model_only)
    one_error_line(run_raw("char_lm.py", *flags, "--resume", str(model_only)), "char_lm.py", "is not a training state")


def test_resume_refuses_other_flags_and_other_examples(tmp_path, char_state):
    flags = [*TINY["char_lm.py"], "--quiet", "--out", str(tmp_path / "o")]
    bigger = [*flags, "--hidden", "32"]  # argparse: the last --hidden wins
    one_error_line(run_raw("char_lm.py", *bigger, "--resume", char_state), "char_lm.py", "--hidden 16", "--hidden 32")
    one_error_line(run_raw("char_lm.py", *flags, "--max-chars", "3000", "--resume", char_state), "char_lm.py",
                   "--max-chars")
    one_error_line(run_raw("word_lm.py", *TINY["word_lm.py"], "--quiet", "--out", str(tmp_path / "w"), "--resume", char_state),
                   "word_lm.py", "saved by char_lm.py, not word_lm.py")
    assert not (tmp_path / "o" / "results.json").exists()


def test_ctrl_c_saves_and_exits_130_with_the_resume_command(tmp_path):
    out = tmp_path / "run"
    flags = ["--max-chars", "30000", "--steps", "100000", "--eval-every", "100000", "--hidden", "16", "--emb", "8",
             "--seq", "16", "--batch", "4", "--dropout", "0.1", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "char_lm.py"), *flags], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    try:
        for line in proc.stdout:  # the line printed just before the training loop starts
            if line.startswith("'train' ="):
                break
        time.sleep(1.0)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    lines = RESUME_LINE.findall(stderr)
    assert len(lines) == 1 and lines[0][0] == "interrupted", stderr
    step = int(lines[0][1])
    state = tr.load(out / "train_state.npz")
    assert state["step"] == step > 0 and len(state["losses"]) == step
    cmd = shlex.split(lines[0][2])
    assert cmd[-2:] == ["--resume", str(out / "train_state.npz")] and "--steps" in cmd
    # the printed command continues where it stopped (here for 3 more steps only)
    again = subprocess.run([sys.executable, *cmd[1:], "--stop-after", "3"], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    ok(again)
    assert f"resuming at step {step} " in again.stdout
    m = RESUME_LINE.search(again.stderr)
    assert m and int(m.group(2)) == step + 3, again.stderr
    assert tr.load(out / "train_state.npz")["losses"][:step] == state["losses"]


def test_resume_command_drops_the_old_resume_flag(tmp_path):
    from _examples import example_module

    common = example_module("_common")
    run = common.start(common.make_parser("demo", "d", save_every=5), ["--out", str(tmp_path), "--quiet"])
    run.argv = ["--seed", "3", "--resume", "old.npz", "--resume=older.npz", "--out", "x y"]
    cmd = shlex.split(run.resume_command(str(tmp_path / "s.npz")))
    assert cmd[2:] == ["--seed", "3", "--out", "x y", "--resume", str(tmp_path / "s.npz")]


@pytest.mark.parametrize("script", sorted(TINY))
@pytest.mark.parametrize("flag,value,needle", [("--save-every", "-1", "must be 0 or more"),
                                               ("--stop-after", "x", "expected an integer")])
def test_checkpoint_flags_are_checked(script, flag, value, needle, tmp_path):
    proc = run_raw(script, flag, value, "--out", str(tmp_path))
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith(f"{script}: error: argument {flag}: {needle}")
