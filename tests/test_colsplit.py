"""The column-split LSTM forward (backend/colsplit.py, an experiment of issue 17, not wired into the layers)
gives the sequence kernel's results (to float32 rounding; bit for bit where measured), for any number of slices."""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_rnn as tr
from tinygrad_rnn.backend import blas, colsplit

BE = tr.get_backend("cpu")


@pytest.mark.skipif(not blas.available(), reason="TINYGRAD_RNN_BLAS=none: no BLAS is bound to call")
@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("shape", [(5, 4, 24), (9, 17, 64)])  # (T, B, H): slices of uneven width too
def test_column_split_matches_the_sequence_kernel(shape, n_threads):
    t_, b_, h_ = shape
    rng = np.random.default_rng(h_)
    xw = rng.standard_normal((t_, b_, 4 * h_)).astype(np.float32)
    w = (rng.standard_normal((4 * h_, h_)) / np.sqrt(h_)).astype(np.float32)
    h0, c0 = rng.standard_normal((b_, h_)).astype(np.float32), rng.standard_normal((b_, h_)).astype(np.float32)
    mask = np.ones((t_, b_), np.float32)
    saved = {k: BE.__dict__[k] for k in ("SMALL_STEP_MACS", "STEP_PROVIDER") if k in BE.__dict__}
    try:
        BE.SMALL_STEP_MACS = 0  # the BLAS sequence kernel, as colsplit uses BLAS
        BE.STEP_PROVIDER = "mkl" if "mkl" in blas.PROVIDERS else None
        ref_h, ref_c, _ = BE.rnn_forward_projected("lstm", xw, w, None, h0, c0, mask, False)
        h, c = colsplit.lstm_forward_cols(xw, w, h0, c0, n_threads)
    finally:
        for k in ("SMALL_STEP_MACS", "STEP_PROVIDER"):
            BE.__dict__.pop(k, None)
        BE.__dict__.update(saved)
    np.testing.assert_allclose(h, ref_h, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c, ref_c[-1], rtol=1e-6, atol=1e-6)
