"""Tests for the count-based baselines in tinygrad_rnn.classic."""

import itertools
from collections import Counter

import numpy as np
import pytest

from tinygrad_rnn.classic import KneserNeyLM, MultinomialNB
from tinygrad_rnn.data import load_ptb, load_sst2

# ---------------------------------------------------------------------------
# Multinomial naive Bayes
# ---------------------------------------------------------------------------

TOY_DOCS = [["good", "good", "fun"], ["bad", "boring"], ["good", "bad"]]
TOY_LABELS = [1, 0, 1]


def test_nb_matches_hand_computed_posterior():
    nb = MultinomialNB(alpha=1.0).fit(TOY_DOCS, TOY_LABELS)
    # class 1: good 3, fun 1, bad 1 (5 tokens); class 0: bad 1, boring 1 (2 tokens); |V| = 4
    # P(good|1) = 4/9, P(boring|1) = 1/9, P(good|0) = 1/6, P(boring|0) = 2/6, priors 2/3, 1/3
    # joint: class 1 = 2/3 * 4/9 * 1/9 = 16/486, class 0 = 1/3 * 1/6 * 2/6 = 9/486
    proba = nb.predict_proba([["good", "boring", "never-seen"]])  # unseen words are ignored
    np.testing.assert_allclose(proba, [[9 / 25, 16 / 25]], rtol=1e-12)
    np.testing.assert_allclose(np.exp(nb.feature_log_prob_[1, nb.feature_index["good"]]), 4 / 9)
    assert nb.predict([["boring"], ["fun"]]).tolist() == [0, 1]
    assert nb.score(TOY_DOCS, TOY_LABELS) == 1.0


def test_nb_empty_document_gets_the_prior():
    nb = MultinomialNB().fit(TOY_DOCS, TOY_LABELS)
    np.testing.assert_allclose(nb.predict_proba([[]]), [[1 / 3, 2 / 3]])


def test_nb_binary_and_bigrams():
    binary = MultinomialNB(binary=True).fit(TOY_DOCS, TOY_LABELS)
    assert binary.feature_count_[1, binary.feature_index["good"]] == 2  # once per document
    bigram = MultinomialNB(ngram=2).fit(TOY_DOCS, TOY_LABELS)
    assert "good fun" in bigram.feature_index and len(bigram.features) == 4 + 4


def test_nb_string_labels_and_top_features():
    nb = MultinomialNB().fit(TOY_DOCS, ["pos", "neg", "pos"])
    assert nb.predict([["boring"]]).tolist() == ["neg"]
    top = nb.top_features(1)
    assert top["pos"][0][0] == "good" and top["neg"][0][0] == "boring"


def test_nb_validates_input():
    with pytest.raises(ValueError, match="labels of shape"):
        MultinomialNB().fit(TOY_DOCS, [1, 0])
    with pytest.raises(TypeError, match="list of tokens"):
        MultinomialNB().fit(["good fun", "bad"], [1, 0])
    with pytest.raises(RuntimeError, match="not fitted"):
        MultinomialNB().predict([["good"]])
    with pytest.raises(ValueError, match="alpha"):
        MultinomialNB(alpha=0)


def test_nb_sst2_accuracy():
    nb = MultinomialNB(alpha=1.0).fit(*load_sst2("train"))
    test_acc = nb.score(*load_sst2("test"))
    assert 0.79 < test_acc < 0.85  # 0.8177 measured; Socher et al. 2013 report 81.8


# ---------------------------------------------------------------------------
# Kneser-Ney
# ---------------------------------------------------------------------------

TOY_CORPUS = (
    "the cat sat on the mat <eos> the dog sat on the log <eos> a cat saw the dog <eos> "
    "the dog sat <eos> a dog saw a cat on the mat <eos> the cat sat <eos>"
).split()


def reference_kn(tokens, order, discount, history, word):
    """Interpolated KN straight from the definition, with dicts (slow, obviously right)."""
    vocab = sorted(set(tokens) | {"<unk>"})
    grams = {k: Counter(tuple(tokens[i : i + k]) for i in range(len(tokens) - k + 1)) for k in range(1, order + 1)}

    def count(k, gram):
        if k == order:
            return grams[k][gram]
        return len({g[0] for g in grams[k + 1] if g[1:] == gram})  # continuation count

    def prob(k, hist):
        if k == 0:
            return 1 / len(vocab)
        lower = prob(k - 1, hist[1:])
        counts = {v: count(k, (*hist, v)) for v in vocab}
        denom = sum(counts.values())
        if denom == 0:
            return lower
        gamma = discount * sum(c > 0 for c in counts.values())
        return (max(counts[word] - discount, 0) + gamma * lower) / denom

    # None stands for "before the stream start": no n-gram contains it, so such contexts are unseen
    padded = [None] * order + list(history)
    hist = tuple(padded[len(padded) - (order - 1) :]) if order > 1 else ()
    return prob(order, hist)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_kn_matches_reference_definition(order):
    lm = KneserNeyLM(order=order, discount=0.6).fit(TOY_CORPUS)
    words = sorted(set(TOY_CORPUS))
    histories = [list(h) for n in range(order) for h in itertools.product([*words, "<unk>"], repeat=n)]
    for history in histories:
        for word in [*words, "<unk>"]:
            expected = reference_kn(TOY_CORPUS, order, 0.6, list(history), word)
            assert lm.logprob(list(history), word) == pytest.approx(np.log(expected), abs=1e-12)


@pytest.mark.parametrize("discount,modified", [(None, True), (None, False), (0.75, True)])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_kn_normalises_for_every_context(order, discount, modified):
    lm = KneserNeyLM(order=order, discount=discount, modified=modified).fit(TOY_CORPUS)
    words = [*sorted(set(TOY_CORPUS)), "<unk>", "never-seen"]
    contexts = [list(c) for n in range(order) for c in itertools.product(words, repeat=n)]
    for context in contexts[:400]:
        dist = lm.next_word_distribution(context)
        assert dist.shape == (len(lm.vocab),) and (dist > 0).all()
        assert dist.sum() == pytest.approx(1.0, abs=1e-12), context


def test_kn_unknown_word_maps_to_unk():
    lm = KneserNeyLM(order=2).fit(TOY_CORPUS)
    assert "<unk>" in lm.vocab
    assert lm.logprob(["the"], "zebra") == lm.logprob(["the"], "<unk>")
    assert np.isfinite(lm.perplexity("the zebra sat on a mat <eos>".split()))


def test_kn_validates_input():
    with pytest.raises(ValueError, match="order"):
        KneserNeyLM(order=0)
    with pytest.raises(ValueError, match="discount"):
        KneserNeyLM(discount=1.5)
    with pytest.raises(TypeError, match="str"):
        KneserNeyLM(order=2).fit("the cat sat")
    with pytest.raises(RuntimeError, match="not fitted"):
        KneserNeyLM().perplexity(["a"])


@pytest.fixture(scope="module")
def ptb_kn5():
    return KneserNeyLM(order=5).fit(load_ptb("train"))


def test_kn5_ptb_perplexity(ptb_kn5):
    # 141.06 measured (Mikolov et al. 2011, KN5: 141.2); the lower bound catches leaked mass
    assert 130 < ptb_kn5.perplexity(load_ptb("test")) < 150
    assert len(ptb_kn5.vocab) == 10000


def test_kn5_ptb_normalises_on_random_contexts(ptb_kn5):
    test = load_ptb("test")
    rng = np.random.default_rng(0)
    for start in rng.integers(0, len(test) - 4, size=4):
        context = test[start : start + 4]
        assert ptb_kn5.next_word_distribution(context).sum() == pytest.approx(1.0, abs=1e-9)
    assert ptb_kn5.next_word_distribution(["never", "seen", "zzz", "qqq"]).sum() == pytest.approx(1.0, abs=1e-9)
