"""End-to-end runs of examples/word_lm.py, sentiment.py and seq2seq.py on tiny settings."""
import math

import numpy as np
import pytest
from _examples import example_module, results, run  # noqa: E402, I001  (tests/ helper)

import tinygrad_rnn as tr


@pytest.mark.parametrize("script", ["word_lm.py", "sentiment.py", "seq2seq.py"])
def test_help(script):
    out = run(script, "--help")
    for flag in ("--device", "--seed", "--epochs", "--out"):
        assert flag in out


def test_word_lm_all_models(tmp_path):
    out = run("word_lm.py", "--model", "all", "--limit-tokens", "3000", "--max-steps", "3", "--epochs", "2",
              "--baseline-epochs", "2", "--evals-per-epoch", "1", "--hidden", "16", "--window-emb", "8", "--window-hidden", "16",
              "--out", str(tmp_path), "--quiet")
    assert "PTB word-level perplexity" in out
    for label in ("Kneser-Ney 5-gram", "window NNLM (n=5)", "RNN 2x16", "LSTM 2x16", "paper test", "114.5", "141.2"):
        assert label in out, label
    r = results(tmp_path)
    assert set(r["models"]) == {"ngram", "window", "rnn", "lstm"} and r["vocab_size"] == 10000
    for name in ("window", "rnn", "lstm"):
        m = r["models"][name]
        assert math.isfinite(m["valid_ppl"]) and math.isfinite(m["test_ppl"]) and len(m["history"]) == 2
        assert m["valid_ppl"] == min(h["valid_ppl"] for h in m["history"])  # the best checkpoint is the one tested
        assert (tmp_path / f"{name}.npz").exists()
    assert r["models"]["rnn"]["history"][1]["lr"] == pytest.approx(0.5 * r["models"]["rnn"]["history"][0]["lr"])
    assert (tmp_path / "valid_ppl.png").exists()

    mod = example_module("word_lm")
    state, meta = tr.nn.load(tmp_path / "lstm.npz")
    cfg = meta["config"]
    model = mod.RecurrentLM(cfg["cell"], 10000, cfg["emb_size"], cfg["hidden_size"], cfg["num_layers"])
    model.load_state_dict(state)  # strict: every key and shape matches the model the example builds
    assert meta["valid_ppl"] == pytest.approx(r["models"]["lstm"]["valid_ppl"])


def test_word_lm_scores_every_token_once():
    """All models are compared on the same N tokens: window contexts start from <eos> padding."""
    mod = example_module("word_lm")
    ids = np.arange(5, 12)
    ctx = mod.window_contexts(ids, 3, eos_id=0)
    assert ctx.shape == (7, 3)
    assert ctx[0].tolist() == [0, 0, 0] and ctx[1].tolist() == [0, 0, 5] and ctx[-1].tolist() == [8, 9, 10]
    tr.manual_seed(0)
    lm = mod.RecurrentLM("lstm", 20, 4, 4, 1)
    # windows of 3 over 7 tokens: the last one is shorter, perplexity stays finite and matches one pass
    one = mod.eval_recurrent(lm, ids, 0, "cpu", window=100)
    assert mod.eval_recurrent(lm, ids, 0, "cpu", window=3) == pytest.approx(one, rel=1e-5)


def test_sentiment_nb_vs_lstm(tmp_path):
    out = run("sentiment.py", "--limit", "400", "--epochs", "1", "--emb", "16", "--hidden", "8", "--batch-size", "100",
              "--evals-per-epoch", "2", "--bidirectional", "--out", str(tmp_path), "--quiet")
    for text in ("SST-2 binary sentence classification", "naive Bayes (sentences)", "naive Bayes (phrases)", "BiLSTM",
                 "81.8", "87.5", "verdicts", "The concert was boring", "not bad"):
        assert text in out, text
    r = results(tmp_path)
    for key in ("naive_bayes", "lstm", "published", "verdicts", "args"):
        assert key in r
    assert r["lstm"]["name"] == "BiLSTM" and 0.0 <= r["lstm"]["test_acc"] <= 1.0
    assert r["lstm"]["dev_acc"] == max(h["dev_acc"] for h in r["lstm"]["history"])
    assert r["verdicts"][0]["tokens"][-3:] == ["terribly", "exciting", "."]
    assert all(0.0 <= v["nb_p_positive"] <= 1.0 and 0.0 <= v["lstm_p_positive"] <= 1.0 for v in r["verdicts"])
    assert (tmp_path / "dev_accuracy.png").exists()

    mod = example_module("sentiment")
    state, meta = tr.nn.load(tmp_path / "lstm.npz")
    model = mod.SentimentLSTM(len(meta["vocab"]["itos"]), meta["emb"], meta["hidden"], meta["bidirectional"], 0.0, 0.0)
    model.load_state_dict(state)
    assert model.lstm.bidirectional and meta["dev_acc"] == pytest.approx(r["lstm"]["dev_acc"])


def test_sst_tokenizer_matches_the_treebank():
    mod = example_module("sentiment")
    assert mod.sst_tokenize("It isn't (very) good, is it?") == \
        ["it", "is", "n't", "-lrb-", "very", "-rrb-", "good", ",", "is", "it", "?"]
    assert mod.sst_tokenize("The film's plot.") == ["the", "film", "'s", "plot", "."]


def test_seq2seq_numbers(tmp_path):
    out = run("seq2seq.py", "--train-size", "300", "--test-size", "50", "--epochs", "2", "--hidden", "16", "--emb", "8",
              "--out", str(tmp_path), "--quiet")
    assert "held-out translations" in out and "test exact %" in out and "test token %" in out
    assert "greedy output  verdict" in out  # every column has a header
    r = results(tmp_path)
    for key in ("test_exact", "test_token", "valid_exact", "history", "examples", "args"):
        assert key in r
    assert 0.0 <= r["test_exact"] <= r["test_token"] <= 1.0 and len(r["history"]) == 2
    assert (tmp_path / "valid_accuracy.png").exists()

    mod = example_module("seq2seq")
    state, meta = tr.nn.load(tmp_path / "seq2seq.npz")
    model = mod.Seq2Seq(len(meta["src_itos"]), len(meta["tgt_itos"]), meta["emb"], meta["hidden"], meta["layers"])
    model.load_state_dict(state)


def test_seq2seq_task_generators():
    mod = example_module("seq2seq")
    assert " ".join(mod.number_words(705012)) == "seven hundred five thousand twelve"
    assert " ".join(mod.number_words(90)) == "ninety" and mod.number_words(0) == ["zero"]
    srcs, tgts, _, _ = mod.make_task("sort", 50, 5, np.random.default_rng(0))
    assert all(t == sorted(s) for s, t in zip(srcs, tgts)) and len({" ".join(s) for s in srcs}) == 50
    srcs, tgts, _, _ = mod.make_task("numbers", 30, 6, np.random.default_rng(0))
    assert all("".join(t) == str(int("".join(t))) for t in tgts)  # no leading zeros
