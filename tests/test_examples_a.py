"""End-to-end runs of examples/hello.py, char_lm.py, vanishing_gradients.py and adding_problem.py on tiny settings."""
import math

import pytest
from _examples import results, run  # noqa: E402, I001  (tests/ helper)


@pytest.mark.parametrize("script", ["hello.py", "char_lm.py", "vanishing_gradients.py", "adding_problem.py"])
def test_help(script):
    out = run(script, "--help")
    for flag in ("--device", "--seed", "--epochs", "--out"):
        assert flag in out


def test_hello_learns_the_word(tmp_path):
    out = run("hello.py", "--epochs", "150", "--print-every", "50", "--out", str(tmp_path), "--quiet")
    assert "before training" in out and "after 150 passes" in out
    assert "hidden h(t)" in out and "y_hat(t) over [h e l o]" in out
    assert "predictions: e l l o ✓" in out
    assert "final loss" in out  # the results table
    r = results(tmp_path)
    assert r["correct"] is True and r["predictions"] == ["e", "l", "l", "o"]
    assert r["final_loss"] < 0.1 < r["initial_loss"] and len(r["losses"]) == 150
    assert (tmp_path / "model.npz").exists() and (tmp_path / "loss.png").exists()


TINY_LM = ["--max-chars", "30000", "--steps", "16", "--eval-every", "8", "--hidden", "24", "--emb", "8", "--seq", "16",
           "--batch", "8", "--length", "40", "--quiet"]


def test_char_lm_trains_checkpoints_and_samples(tmp_path):
    out = run("char_lm.py", *TINY_LM, "--out", str(tmp_path))
    assert "val bpc" in out and "test bpc" in out and "step    16" in out
    r = results(tmp_path)
    for key in ("val_bpc", "test_bpc", "history", "config", "steps", "seconds"):
        assert key in r
    assert r["steps"] == 16 and [h["step"] for h in r["history"]] == [8, 16]
    assert math.isfinite(r["val_bpc"]) and r["val_bpc"] < r["history"][0]["val_bpc"] + 1e-9  # best checkpoint
    assert r["history"][-1]["val_bpc"] < 6.0  # below the uniform log2(|V|) it starts at
    for name in ("model.npz", "samples.txt", "loss.png"):
        assert (tmp_path / name).exists(), name
    assert "temperature 0.8" in (tmp_path / "samples.txt").read_text()

    import tinygrad_rnn as tr
    state, meta = tr.nn.load(tmp_path / "model.npz")
    assert meta["config"]["model"] == "lstm" and meta["config"]["hidden"] == 24
    assert len(meta["vocab"]["itos"]) == meta["config"]["vocab_size"]
    assert meta["val_bpc"] == pytest.approx(r["val_bpc"])

    text = run("char_lm.py", "--sample", "--checkpoint", str(tmp_path / "model.npz"), "--prime", "ROMEO:",
               "--temperature", "0.8", "--length", "30", "--out", str(tmp_path))
    body = text.split("\n", 1)[1]  # after the '# checkpoint ...' line
    assert body.startswith("ROMEO:") and len(body.rstrip("\n")) >= len("ROMEO:") + 30 - 5


def test_char_lm_plain_rnn(tmp_path):
    run("char_lm.py", *TINY_LM, "--model", "rnn", "--steps", "8", "--out", str(tmp_path))
    assert results(tmp_path)["config"]["model"] == "rnn"


def test_vanishing_gradients(tmp_path):
    out = run("vanishing_gradients.py", "--steps", "30", "--hidden", "16", "--batch", "4", "--burn-in", "10",
              "--epochs", "6", "--out", str(tmp_path), "--quiet")
    assert "rate/step (h)" in out and "after clip_grad_norm_(1)" in out and "no clipping" in out
    r = results(tmp_path)
    rates = r["rates"]
    assert rates["tanh RNN, rho=0.8"] < 0.9 and rates["relu RNN, rho=1.2"] > 1.0
    assert rates["IRNN (relu, W_h = I)"] > rates["relu RNN, rho=1"]
    assert set(r["cell_rates"]) == {"LSTM, default init", "LSTM, forget bias 1", "LSTM, forget bias 3"}
    assert r["cell_rates"]["LSTM, forget bias 3"] > r["cell_rates"]["LSTM, default init"]
    clip = r["clipping"]
    assert all(c["after"] <= 1.0 + 1e-6 for c in clip) and clip[-1]["before"] > clip[0]["before"]
    for name in ("gradient_norms_rnn.png", "gradient_norms_lstm.png", "clipping.png", "clipping_training.png"):
        assert (tmp_path / name).exists(), name


def test_adding_problem(tmp_path):
    out = run("adding_problem.py", "--lengths", "6", "10", "--steps", "12", "--hidden", "8", "--test-size", "64",
              "--eval-every", "6", "--out", str(tmp_path), "--quiet")
    assert "test MSE" in out and "baseline" in out and "0.1667" in out and "millions of examples" in out
    r = results(tmp_path)
    assert r["baseline"] == pytest.approx(1 / 6)
    runs = {(x["model"], x["T"]) for x in r["runs"]}
    assert runs == {(m, t) for m in ("tanh", "irnn", "nprnn", "lstm") for t in (6, 10)}
    for x in r["runs"]:
        assert math.isfinite(x["test_mse"]) and [s for s, _ in x["curve"]] == [0, 6, 12]
    assert (tmp_path / "adding_T6.png").exists() and (tmp_path / "adding_T10.png").exists()
