"""Count-based baselines from the lecture: multinomial naive Bayes and Kneser-Ney n-grams.

NumPy only (no autograd engine): they are the numbers an RNN has to beat.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _checks


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


# ---------------------------------------------------------------------------
# Multinomial naive Bayes
# ---------------------------------------------------------------------------


class MultinomialNB:
    """Bag-of-words multinomial naive Bayes with additive (Laplace/Lidstone) smoothing.

    ``log P(c | doc) ∝ log P(c) + Σ_tokens log P(token | c)`` with
    ``P(w | c) = (count(w, c) + alpha) / (Σ_w' count(w', c) + alpha·|V|)``, where
    |V| is the training vocabulary. Features unseen in training are ignored at
    prediction time (as sklearn's ``CountVectorizer`` + ``MultinomialNB`` do):
    they carry no evidence about the class. ``ngram=2`` adds bigram features
    ("BiNB" in Socher et al. 2013); ``binary=True`` counts each feature at most
    once per document (Wang & Manning 2012).

    Example: ``MultinomialNB().fit(docs, labels).score(test_docs, test_labels)`` -> ``0.81...``.
    """

    def __init__(self, alpha: float = 1.0, *, ngram: int = 1, binary: bool = False) -> None:
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        _checks.positive_int("ngram", ngram)
        self.alpha = float(alpha)
        self.ngram = ngram
        self.binary = binary
        self.features: list[str] = []
        self.feature_index: dict[str, int] = {}
        self.classes_: np.ndarray = np.empty(0, dtype=np.int64)
        self.class_log_prior_: np.ndarray = np.empty(0)
        self.feature_log_prob_: np.ndarray = np.empty((0, 0))
        self.feature_count_: np.ndarray = np.empty((0, 0))

    def _features(self, doc: Sequence[str]) -> list[str]:
        if isinstance(doc, str):
            raise TypeError(f"a document must be a list of tokens, got the str {doc[:40]!r} (use .split())")
        feats = list(doc)
        for n in range(2, self.ngram + 1):
            feats += [" ".join(doc[i : i + n]) for i in range(len(doc) - n + 1)]
        return list(dict.fromkeys(feats)) if self.binary else feats

    def _encode(self, docs: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Flatten known features to (doc index, feature id) pairs."""
        index = self.feature_index
        doc_ids: list[int] = []
        feat_ids: list[int] = []
        for d, doc in enumerate(docs):
            ids = [index[f] for f in self._features(doc) if f in index]
            feat_ids += ids
            doc_ids += [d] * len(ids)
        return np.array(doc_ids, dtype=np.int64), np.array(feat_ids, dtype=np.int64)

    def fit(self, docs: Sequence[Sequence[str]], labels: Sequence[int] | np.ndarray) -> MultinomialNB:
        """Count features per class; returns self.

        Example: ``nb = MultinomialNB(alpha=1.0).fit([["good"], ["bad"]], [1, 0])``.
        """
        labels = np.asarray(labels)
        if len(docs) == 0:
            raise ValueError("fit needs at least one document")
        if labels.shape != (len(docs),):
            raise ValueError(f"got {len(docs)} documents but labels of shape {labels.shape}")
        self.classes_, y = np.unique(labels, return_inverse=True)
        index: dict[str, int] = {}
        for doc in docs:
            for f in self._features(doc):
                index.setdefault(f, len(index))
        self.feature_index = index
        self.features = list(index)
        doc_ids, feat_ids = self._encode(docs)
        n_classes, n_feats = len(self.classes_), len(index)
        flat = y[doc_ids] * n_feats + feat_ids
        self.feature_count_ = np.bincount(flat, minlength=n_classes * n_feats).reshape(n_classes, n_feats)
        smoothed = self.feature_count_ + self.alpha
        self.feature_log_prob_ = np.log(smoothed) - np.log(smoothed.sum(axis=1, keepdims=True))
        class_count = np.bincount(y, minlength=n_classes)
        self.class_log_prior_ = np.log(class_count) - np.log(len(y))
        return self

    def _check_fitted(self) -> None:
        if self.feature_log_prob_.size == 0:
            raise RuntimeError("this MultinomialNB is not fitted yet; call fit(docs, labels) first")

    def predict_log_proba(self, docs: Sequence[Sequence[str]]) -> np.ndarray:
        """Log posteriors, shape (n_docs, n_classes), columns in ``classes_`` order.

        Example: ``nb.predict_log_proba([["good", "fun"]])``.
        """
        self._check_fitted()
        doc_ids, feat_ids = self._encode(docs)
        n = len(docs)
        joint = np.empty((n, len(self.classes_)))
        for c in range(len(self.classes_)):
            joint[:, c] = np.bincount(doc_ids, weights=self.feature_log_prob_[c, feat_ids], minlength=n)
        joint += self.class_log_prior_
        return joint - _logsumexp(joint, axis=1)[:, None]

    def predict_proba(self, docs: Sequence[Sequence[str]]) -> np.ndarray:
        """Posterior probabilities, shape (n_docs, n_classes); rows sum to 1.

        Example: ``nb.predict_proba([["good"]])[0, 1]`` -> P(class ``classes_[1]`` | doc).
        """
        return np.exp(self.predict_log_proba(docs))

    def predict(self, docs: Sequence[Sequence[str]]) -> np.ndarray:
        """Most probable class label per document.

        Example: ``nb.predict([["good"], ["bad"]])`` -> ``array([1, 0])``.
        """
        return self.classes_[np.argmax(self.predict_log_proba(docs), axis=1)]

    def score(self, docs: Sequence[Sequence[str]], labels: Sequence[int] | np.ndarray) -> float:
        """Accuracy on (docs, labels).

        Example: ``nb.score(*load_sst2("test"))`` -> ``0.81...``.
        """
        labels = np.asarray(labels)
        if labels.shape != (len(docs),):
            raise ValueError(f"got {len(docs)} documents but labels of shape {labels.shape}")
        return float(np.mean(self.predict(docs) == labels))

    def top_features(self, k: int = 10) -> dict[int, list[tuple[str, float]]]:
        """Per class, the k features with the largest log-likelihood ratio.

        The ratio is ``log P(w|c) - log mean_{c'≠c} P(w|c')``: for two classes,
        how many nats of evidence for ``c`` one occurrence of ``w`` adds.

        Example: ``nb.top_features(3)[1]`` -> ``[('powerful', 3.53), ...]``.
        """
        self._check_fitted()
        flp = self.feature_log_prob_
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError("top_features needs at least two classes")
        out: dict[int, list[tuple[str, float]]] = {}
        for c in range(n_classes):
            others = np.delete(flp, c, axis=0)
            ratio = flp[c] - (_logsumexp(others, axis=0) - np.log(n_classes - 1))
            best = np.argsort(-ratio, kind="stable")[:k]
            out[self.classes_[c].item()] = [(self.features[i], float(ratio[i])) for i in best]
        return out


# ---------------------------------------------------------------------------
# Interpolated Kneser-Ney n-gram language model
# ---------------------------------------------------------------------------


class KneserNeyLM:
    """Interpolated (modified) Kneser-Ney n-gram language model over word tokens.

    Chen & Goodman (1998)'s interpolated form, bottom up from a uniform
    distribution over the vocabulary::

        p_0(w)     = 1 / |V|
        p_k(w | h) = ( max(c_k(h w) - D_k(c_k(h w)), 0) + gamma_k(h) · p_{k-1}(w | h') ) / Σ_v c_k(h v)
        gamma_k(h) = Σ_{j=1,2,3+} D_k(j) · #{v : c_k(h v) = j}

    where ``h'`` drops the oldest word of ``h``; ``c_k`` is the raw count at
    the highest order and the continuation count ``#{u : c(u h w) > 0}``
    below it. A context with no counts (never seen) passes ``p_{k-1}``
    through unchanged. Because the discounts removed from the seen words are
    exactly ``gamma_k(h)``, every ``p_k(· | h)`` sums to 1 over the vocabulary.

    ``discount=None`` estimates the discounts per order from the counts-of-
    counts ``n_j``: with ``Y = n_1 / (n_1 + 2 n_2)``, modified KN uses
    ``D(1) = 1 - 2Y n_2/n_1``, ``D(2) = 2 - 3Y n_3/n_2``, ``D(3+) = 3 - 4Y n_4/n_3``;
    ``modified=False`` uses the single ``D = Y``; an order with no count-1 or count-2
    n-grams (toy corpora) falls back to 0.75. A float ``discount`` is used
    for every count and order (plain interpolated KN, e.g. 0.75).

    The training tokens are one stream (context crosses ``<eos>``, as it does
    for an RNN LM). The vocabulary is the training types plus ``unk``; at
    query time an unknown word is mapped to ``unk``. If ``unk`` never occurs
    in training it gets only its share of the uniform mass.

    Example: ``KneserNeyLM(order=5).fit(load_ptb("train")).perplexity(load_ptb("test"))`` -> ``~141``.
    """

    def __init__(self, order: int = 5, discount: float | None = None, *, modified: bool = True, unk: str = "<unk>") -> None:
        _checks.positive_int("order", order)
        if discount is not None and not 0.0 < discount < 1.0:
            raise ValueError(f"a fixed discount must be in (0, 1), got {discount!r}")
        self.order = order
        self.discount = discount
        self.modified = modified
        self.unk = unk
        self.vocab: list[str] = []
        self.word_index: dict[str, int] = {}
        # per order k = 1..order (index k-1):
        self._keys: list[np.ndarray] = []  # sorted k-gram keys: id(first k-1 words) * |V| + last word
        self._counts: list[np.ndarray] = []  # c_k per k-gram (raw at the top order, continuation below)
        self._denom: list[np.ndarray] = []  # Σ_v c_k(h v), indexed by the context's (k-1)-gram id
        self._gamma: list[np.ndarray] = []  # gamma_k(h), same index
        self.discounts: list[np.ndarray] = []  # D_k(0), D_k(1), D_k(2), D_k(3+) per order

    # -- fitting ----------------------------------------------------------------

    def fit(self, tokens: Sequence[str]) -> KneserNeyLM:
        """Count all 1..order-grams of the token stream; returns self.

        Example: ``lm = KneserNeyLM(order=3).fit("a b a b <eos>".split())``.
        """
        if isinstance(tokens, str):
            raise TypeError("fit expects a sequence of word tokens, got a str (use .split())")
        if len(tokens) < self.order:
            raise ValueError(f"need at least order={self.order} tokens to fit, got {len(tokens)}")
        self.vocab = sorted(set(tokens) | {self.unk})
        self.word_index = {w: i for i, w in enumerate(self.vocab)}
        n_vocab = len(self.vocab)
        ids = np.array([self.word_index[t] for t in tokens], dtype=np.int64)
        n_tokens = len(ids)
        if n_tokens * n_vocab >= 2**62:
            raise ValueError(f"corpus too large for int64 n-gram keys: {n_tokens} tokens x {n_vocab} types")

        # ngram_id[k-1][i]: id of the k-gram starting at position i; keys built from
        # the (k-1)-gram id keep every key below n_tokens * |V| (no overflow at any order).
        keys, first_pos, raw_counts, ngram_id = [], [], [], []
        prev = None
        for k in range(1, self.order + 1):
            key = ids if k == 1 else prev[: n_tokens - k + 1] * n_vocab + ids[k - 1 :]
            uniq, first, inverse, count = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
            keys.append(uniq)
            first_pos.append(first)
            raw_counts.append(count)
            ngram_id.append(inverse)
            prev = inverse

        counts = []
        for k in range(1, self.order + 1):
            if k == self.order:
                counts.append(raw_counts[k - 1])
            else:
                # continuation count: distinct words u seen before the k-gram g, i.e. the number
                # of distinct (k+1)-grams whose last k words are g
                suffix = ngram_id[k - 1][first_pos[k] + 1]
                counts.append(np.bincount(suffix, minlength=len(keys[k - 1])))

        self._keys, self._counts = keys, counts
        self._denom, self._gamma, self.discounts = [], [], []
        for k in range(1, self.order + 1):
            c = counts[k - 1]
            disc = self._estimate_discounts(c)
            ctx = keys[k - 1] // n_vocab if k > 1 else np.zeros(len(c), dtype=np.int64)
            n_ctx = len(keys[k - 2]) if k > 1 else 1
            self._denom.append(np.bincount(ctx, weights=c, minlength=n_ctx))
            self._gamma.append(np.bincount(ctx, weights=disc[np.minimum(c, 3)], minlength=n_ctx))
            self.discounts.append(disc)
        return self

    def _estimate_discounts(self, c: np.ndarray) -> np.ndarray:
        """[D(0)=0, D(1), D(2), D(3+)] for one order's counts."""
        if self.discount is not None:
            return np.array([0.0, self.discount, self.discount, self.discount])
        n1, n2, n3, n4 = (float(np.count_nonzero(c == j)) for j in (1, 2, 3, 4))
        if n1 == 0 or n2 == 0:
            # too little data for the estimate (toy corpora): fall back to the classic constant
            return np.array([0.0, 0.75, 0.75, 0.75])
        y = n1 / (n1 + 2 * n2)
        if not self.modified:
            return np.array([0.0, y, y, y])
        d1 = 1 - 2 * y * n2 / n1
        d2 = 2 - 3 * y * n3 / n2
        d3 = 3 - 4 * y * n4 / n3 if n3 > 0 else d2
        # keep 0 <= D(j) <= j so no probability goes negative
        return np.clip(np.array([0.0, d1, d2, d3]), 0.0, [0.0, 1.0, 2.0, 3.0])

    # -- scoring ----------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not self._keys:
            raise RuntimeError("this KneserNeyLM is not fitted yet; call fit(tokens) first")

    def _ids(self, tokens: Sequence[str]) -> np.ndarray:
        if isinstance(tokens, str):
            raise TypeError(f"expected a sequence of word tokens, got the str {tokens[:40]!r} (use .split())")
        unk = self.word_index[self.unk]
        return np.array([self.word_index.get(t, unk) for t in tokens], dtype=np.int64)

    def _lookup(self, k: int, prefix_id: np.ndarray, word: np.ndarray) -> np.ndarray:
        """Id of the k-gram (prefix (k-1)-gram, word) in the order-k table, -1 if unseen."""
        table = self._keys[k - 1]
        key = word if k == 1 else prefix_id * len(self.vocab) + word
        pos = np.minimum(np.searchsorted(table, key), len(table) - 1)
        ok = (table[pos] == key) & (word >= 0) & ((prefix_id >= 0) if k > 1 else True)
        return np.where(ok, pos, -1)

    def _context_id(self, hist: np.ndarray, m: int) -> np.ndarray:
        """Id of the m-gram formed by the last m columns of hist, -1 if unseen or cut off."""
        cols = hist[:, hist.shape[1] - m :]
        gid = self._lookup(1, np.zeros(len(hist), dtype=np.int64), cols[:, 0])
        for j in range(1, m):
            gid = self._lookup(j + 1, gid, cols[:, j])
        return gid

    def _log_probs(self, hist: np.ndarray, words: np.ndarray) -> np.ndarray:
        """Natural-log probabilities of words (n,) given histories (n, order-1); -1 pads missing history."""
        n = len(words)
        p = np.full(n, 1.0 / len(self.vocab))
        for k in range(1, self.order + 1):
            ctx = np.zeros(n, dtype=np.int64) if k == 1 else self._context_id(hist, k - 1)
            safe_ctx = np.maximum(ctx, 0)
            denom = self._denom[k - 1][safe_ctx]
            seen = (ctx >= 0) & (denom > 0)
            gid = self._lookup(k, ctx, words)
            c = np.where(gid >= 0, self._counts[k - 1][np.maximum(gid, 0)], 0)
            discounted = np.maximum(c - self.discounts[k - 1][np.minimum(c, 3)], 0.0)
            new_p = (discounted + self._gamma[k - 1][safe_ctx] * p) / np.where(seen, denom, 1.0)
            p = np.where(seen, new_p, p)
        return np.log(p)

    def _histories(self, ids: np.ndarray, context_ids: np.ndarray) -> np.ndarray:
        """Row t holds the order-1 ids before ids[t] (context first), -1 where there is none."""
        m = self.order - 1
        stream = np.concatenate([np.full(m, -1, dtype=np.int64), context_ids, ids])
        start = m + len(context_ids)
        cols = [stream[start - m + j : start - m + j + len(ids)] for j in range(m)]
        return np.stack(cols, axis=1) if m else np.empty((len(ids), 0), dtype=np.int64)

    def log_probs(self, tokens: Sequence[str], context: Sequence[str] = ()) -> np.ndarray:
        """Per-token natural-log probabilities of a stream, each given its preceding words.

        The first tokens see a shorter history (``context`` if given).

        Example: ``lm.log_probs("the cat <eos>".split())`` -> ``array([-4.38, -10.17, -3.10])`` (KN5 on PTB).
        """
        self._check_fitted()
        ids = self._ids(tokens)
        return self._log_probs(self._histories(ids, self._ids(context)), ids)

    def logprob(self, context: Sequence[str], word: str) -> float:
        """Natural-log probability of ``word`` after ``context`` (only its last order-1 words matter).

        Example: ``lm.logprob(["of", "the"], "company")`` -> ``-3.64`` (KN5 on PTB).
        """
        return float(self.log_probs([word], context)[0])

    def next_word_distribution(self, context: Sequence[str]) -> np.ndarray:
        """``P(w | context)`` for every word of ``self.vocab``; sums to 1.

        Example: ``lm.vocab[int(np.argmax(lm.next_word_distribution(["the"])))]`` -> ``'<unk>'``.
        """
        self._check_fitted()
        words = np.arange(len(self.vocab), dtype=np.int64)
        hist = self._histories(np.zeros(1, dtype=np.int64), self._ids(context))
        return np.exp(self._log_probs(np.repeat(hist, len(words), axis=0), words))

    def perplexity(self, tokens: Sequence[str], context: Sequence[str] = ()) -> float:
        """``exp(-mean log p)`` over all tokens (PTB convention: ``<eos>`` tokens count).

        Example: ``lm.perplexity(load_ptb("test"))`` -> ``~141``.
        """
        if len(tokens) == 0:
            raise ValueError("perplexity of an empty token sequence is undefined")
        return float(np.exp(-np.mean(self.log_probs(tokens, context))))
