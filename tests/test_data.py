"""Tests for tinygrad_rnn.data: vocabularies, shipped datasets, batching."""

import gzip
import json
import shutil

import numpy as np
import pytest

from tinygrad_rnn.data import (
    CHECKSUMS,
    DATA_DIR,
    Vocab,
    batchify,
    bptt_batches,
    bucket_batches,
    load_ptb,
    load_sst2,
    load_tinyshakespeare,
    pad_batch,
    split_text,
)

# ---------------------------------------------------------------------------
# Vocab
# ---------------------------------------------------------------------------


def test_word_vocab_specials_order_and_unknown():
    v = Vocab.words("b a c a b a <unk>".split(), eos="<eos>")
    assert v.itos[:3] == ["<pad>", "<unk>", "<eos>"]
    assert (v.pad_id, v.unk_id, v.eos_id) == (0, 1, 2)
    # by frequency (a:3, b:2), ties alphabetical; "<unk>" in the corpus is not added twice
    assert v.itos[3:] == ["a", "b", "c"]
    assert v.encode(["a", "never-seen", "c"]).tolist() == [3, 1, 5]
    assert v.encode(["a"]).dtype == np.int64
    assert v.encode([]).shape == (0,)


def test_vocab_min_freq_and_max_size_count_specials():
    tokens = "a a a b b c".split()
    assert Vocab(tokens, min_freq=2).itos == ["<pad>", "<unk>", "a", "b"]
    assert Vocab(tokens, max_size=3).itos == ["<pad>", "<unk>", "a"]
    with pytest.raises(ValueError, match="max_size"):
        Vocab(tokens, max_size=1)
    with pytest.raises(ValueError, match="min_freq"):
        Vocab(tokens, min_freq=0)


def test_char_vocab_has_no_specials_and_rejects_unknown():
    v = Vocab.chars("hello")
    assert v.itos == ["e", "h", "l", "o"]
    assert v.pad_id is None and v.unk_id is None
    assert "".join(v.decode(v.encode("hole"))) == "hole"
    with pytest.raises(ValueError, match="'z'"):
        v.encode("hz")


def test_vocab_round_trip_through_json():
    v = Vocab.words("the cat sat on the mat".split(), eos="<eos>")
    w = Vocab.from_dict(json.loads(json.dumps(v.to_dict())))
    assert w == v and w.stoi == v.stoi and w.eos_id == v.eos_id
    ids = v.encode("the dog sat".split())
    assert w.decode(ids) == ["the", "<unk>", "sat"]


def test_vocab_from_dict_validates():
    with pytest.raises(ValueError, match="id 0"):
        Vocab.from_itos(["a", "<pad>"], pad="<pad>")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        Vocab.from_dict({"itos": ["a"], "unk": "<unk>"})
    with pytest.raises(ValueError, match="duplicate"):
        Vocab.from_itos(["a", "a"])


def test_decode_rejects_out_of_range_ids():
    v = Vocab.chars("ab")
    with pytest.raises(ValueError, match="id 2 is out of range"):
        v.decode([0, 2])
    with pytest.raises(TypeError):
        v.decode(np.array([0.5]))


# ---------------------------------------------------------------------------
# Shipped datasets
# ---------------------------------------------------------------------------


def test_every_shipped_file_has_a_checksum():
    shipped = sorted(p.name.removesuffix(".gz") for p in DATA_DIR.glob("*.gz"))
    assert shipped == sorted(CHECKSUMS)


def test_ptb_token_counts_and_vocab():
    counts = {split: len(load_ptb(split)) for split in ("train", "valid", "test")}
    assert counts == {"train": 929589, "valid": 73760, "test": 82430}
    train = load_ptb("train")
    assert train[-1] == "<eos>" and train.count("<eos>") == 42068
    v = Vocab.words(train, pad=None, eos="<eos>")
    assert len(v) == 10000 and v.itos[:2] == ["<unk>", "<eos>"]
    # valid/test use only training words (OOVs are already <unk> in the files)
    assert set(load_ptb("test")) <= set(v.stoi)


def test_sst2_splits():
    sizes = {}
    for split in ("train", "dev", "test"):
        docs, labels = load_sst2(split)
        assert len(docs) == len(labels) and labels.dtype == np.int64
        sizes[split] = (len(docs), int(labels.sum()))
    assert sizes == {"train": (6920, 3610), "dev": (872, 444), "test": (1821, 909)}
    docs, _ = load_sst2("dev")
    assert docs[0] == "one long string of cliches .".split()
    assert all(tok for doc in docs for tok in doc)  # no empty tokens from double spaces
    phrases, labels = load_sst2("train", phrases=True)
    assert len(phrases) == 77189 and int(labels.sum()) == 42404
    with pytest.raises(ValueError, match="train split only"):
        load_sst2("dev", phrases=True)
    with pytest.raises(ValueError, match="'validation'"):
        load_sst2("validation")


def test_tinyshakespeare_and_split():
    text = load_tinyshakespeare()
    assert len(text) == 1115394 and len(Vocab.chars(text)) == 65
    train, val, test = split_text(text)
    assert (len(train), len(val), len(test)) == (1003856, 55769, 55769)
    assert train + val + test == text
    train95, val5, empty = split_text(text, val_fraction=0.05, test_fraction=0.0)
    assert empty == "" and train95 + val5 == text
    with pytest.raises(ValueError, match="test_fraction"):
        split_text(text, test_fraction=1.5)


def test_checksum_verification_catches_corruption(tmp_path):
    original = gzip.decompress((DATA_DIR / "ptb.valid.txt.gz").read_bytes())
    shutil.copy(DATA_DIR / "ptb.valid.txt.gz", tmp_path / "ptb.valid.txt.gz")
    assert len(load_ptb("valid", data_dir=tmp_path, verify=True)) == 73760
    # flip one word: same length, different hash
    corrupted = original.replace(b" consumers ", b" consumerz ", 1)
    assert corrupted != original
    (tmp_path / "ptb.valid.txt.gz").write_bytes(gzip.compress(corrupted))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_ptb("valid", data_dir=tmp_path, verify=True)
    assert load_ptb("valid", data_dir=tmp_path, verify=False)[0] == "consumerz"


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "ptb.test.txt.gz")):
        load_ptb("test", data_dir=tmp_path)


# ---------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------


def test_batchify_is_contiguous_rows():
    data = batchify(np.arange(10), 3)
    assert data.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert data.dtype == np.int64
    with pytest.raises(ValueError, match="batch_size"):
        batchify(np.arange(10), 0)
    with pytest.raises(ValueError, match="batch_size=11"):
        batchify(np.arange(10), 11)
    with pytest.raises(TypeError, match="integer"):
        batchify(np.linspace(0, 1, 10), 2)


@pytest.mark.parametrize("drop_last", [False, True])
def test_bptt_windows_shift_and_cover(drop_last):
    data = batchify(np.arange(2 * 12), 2)  # rows 0..11 and 12..23
    windows = list(bptt_batches(data, 5, drop_last=drop_last))
    # 11 predictable steps per row: windows of 5, 5, then 1 (dropped with drop_last)
    assert [x.shape for x, _ in windows] == [(2, 5), (2, 5)] + ([] if drop_last else [(2, 1)])
    for x, y in windows:
        assert x.shape == y.shape and x.flags.c_contiguous
        np.testing.assert_array_equal(y, x + 1)  # next token of an arange stream
    targets = np.concatenate([y for _, y in windows], axis=1)
    expected = data[:, 1 : 11 if drop_last else 12]
    np.testing.assert_array_equal(targets, expected)


def test_bptt_validates_eagerly():
    data = batchify(np.arange(20), 2)  # (2, 10): 9 predictable steps
    with pytest.raises(ValueError, match="seq_len=10"):
        bptt_batches(data, 10)
    with pytest.raises(ValueError, match="seq_len"):
        bptt_batches(data, 0)
    with pytest.raises(ValueError, match="2-D"):
        bptt_batches(np.arange(20), 5)
    with pytest.raises(ValueError, match="fewer than 2 steps"):
        bptt_batches(np.zeros((3, 1), dtype=np.int64), 1)


def test_pad_batch():
    ids, lengths = pad_batch([[5, 6, 7], np.array([8]), []], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert lengths.tolist() == [3, 1, 0]
    assert ids.dtype == lengths.dtype == np.int64
    ids, _ = pad_batch([[1], [2, 3]], pad_id=-1)
    assert ids.tolist() == [[1, -1], [2, 3]]
    with pytest.raises(ValueError, match="empty batch"):
        pad_batch([])
    with pytest.raises(TypeError, match="seqs\\[1\\]"):
        pad_batch([[1], ["a", "b"]])


@pytest.mark.parametrize("shuffle", [False, True])
def test_bucket_batches_cover_every_example_once(shuffle):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, size=103)
    # each sequence's first id is its index, so we can recover which examples came out
    seqs = [np.concatenate([[i], np.full(n - 1, 7)]) for i, n in enumerate(lengths)]
    labels = np.arange(103) % 2
    seen = []
    for ids, lens, ys in bucket_batches(seqs, labels, 16, shuffle=shuffle, seed=1):
        assert ids.shape == (len(lens), lens.max()) and len(ys) <= 16
        index = ids[:, 0]
        np.testing.assert_array_equal(lens, lengths[index])
        np.testing.assert_array_equal(ys, labels[index])
        assert (ids[np.arange(ids.shape[1]) >= lens[:, None]] == 0).all()  # padded with pad_id
        seen += index.tolist()
    assert sorted(seen) == list(range(103))
    padding = sum((ids.shape[1] - lens).sum() for ids, lens, _ in bucket_batches(seqs, labels, 16, shuffle=shuffle, seed=1))
    _, unsorted_lens = pad_batch(seqs)
    assert padding < (lengths.max() - unsorted_lens).sum() / 4  # bucketing pads far less


def test_bucket_batches_shuffle_and_validation():
    seqs = [[i] * (i % 7 + 1) for i in range(50)]  # first id = example index
    labels = np.zeros(50, dtype=np.int64)

    def epoch(**kwargs):
        return [ids[:, 0].tolist() for ids, _, _ in bucket_batches(seqs, labels, 8, **kwargs)]

    assert epoch(seed=3) == epoch(seed=3)  # an int seed repeats the epoch
    rng = np.random.default_rng(0)
    assert epoch(seed=rng) != epoch(seed=rng)  # a Generator moves on between epochs
    in_order = [max(len(seqs[i]) for i in batch) for batch in epoch(shuffle=False)]
    assert in_order == sorted(in_order)
    assert [len(b) for b in epoch(drop_last=True, seed=0)] == [8] * 6
    with pytest.raises(ValueError, match="labels of shape"):
        bucket_batches(seqs, labels[:-1], 8)
    with pytest.raises(ValueError, match="batch_size"):
        bucket_batches(seqs, labels, -1)
    with pytest.raises(ValueError, match="yields no batch"):
        bucket_batches(seqs, labels, 64, drop_last=True)
