"""Datasets, vocabularies and batching for the examples: NumPy only, no engine import.

Example: ``ids = Vocab.chars(text := load_tinyshakespeare()).encode(text)``.
"""

from tinygrad_rnn.data.batching import BPTTBatches, BucketBatches, batchify, bptt_batches, bucket_batches, pad_batch
from tinygrad_rnn.data.datasets import (
    CHECKSUMS,
    DATA_DIR,
    load_ptb,
    load_sst2,
    load_tinyshakespeare,
    read_text,
    split_text,
)
from tinygrad_rnn.data.distributed import DistributedSampler, distributed_batchify
from tinygrad_rnn.data.vocab import Vocab

__all__ = [
    "BPTTBatches",
    "BucketBatches",
    "CHECKSUMS",
    "DATA_DIR",
    "DistributedSampler",
    "Vocab",
    "batchify",
    "bptt_batches",
    "bucket_batches",
    "distributed_batchify",
    "load_ptb",
    "load_sst2",
    "load_tinyshakespeare",
    "pad_batch",
    "read_text",
    "split_text",
]
