"""Forcing each code path of the recurrent layers, shared by the RNN test files.

The CPU backend picks one of five recurrence branches per call from its size thresholds: the
whole time loop in one Numba kernel with the recurrent product in plain loops (small layers) or
by BLAS called from the kernel -- with oneMKL, on row blocks of the batch in parallel threads
for large layers -- or, where BLAS cannot be called from Numba, a Python loop of
one NumPy matmul + one pointwise kernel per step (Numba, or NumPy's vectorised ufuncs on wide
float64 layers). Overriding the thresholds forces one.
"""
from __future__ import annotations

import contextlib

import tinygrad_rnn as tr
from tinygrad_rnn.backend import blas

MODES = ("rnn_tanh", "rnn_relu", "lstm", "gru")
BRANCHES = {
    # small-layer kernel, the input projection made in its loops per step (training passes too)
    "sequence_kernel": {"SMALL_STEP_MACS": 1 << 62, "FUSE_INPUT_PROJECTION_TRAIN": True},
    "sequence_kernel_blas": {"SMALL_STEP_MACS": 0, "SEQ_KERNEL_BLAS": True, "VECTOR_STEP_ELEMENTS": 1 << 62,
                             "FUSE_INPUT_PROJECTION": False,
                             "FUSE_INPUT_PROJECTION_TRAIN": False},
    # BLAS kernel on row blocks in parallel threads (oneMKL only), forced down to one row per block,
    # each block making its own input projection per step
    "sequence_kernel_rows": {"SMALL_STEP_MACS": 0, "SEQ_KERNEL_BLAS": True, "VECTOR_STEP_ELEMENTS": 1 << 62,
                             "SPLIT_MIN_ROWS": 1, "SPLIT_MIN_MACS": 0,
                             "ROW_THREADS": 2, "FUSE_INPUT_PROJECTION": True,
                             "FUSE_INPUT_PROJECTION_TRAIN": True, "STEP_PROVIDER": "mkl"},
    "per_step": {"SMALL_STEP_MACS": 0, "SEQ_KERNEL_BLAS": False, "VECTOR_STEP_ELEMENTS": 1 << 62},
    "per_step_vectorised": {"SMALL_STEP_MACS": 0, "SEQ_KERNEL_BLAS": False, "VECTOR_STEP_ELEMENTS": 0},
}
if not blas.available():  # TINYGRAD_RNN_BLAS=none, or a NumPy whose BLAS Numba cannot reach
    del BRANCHES["sequence_kernel_blas"]
if "mkl" not in blas.PROVIDERS:  # row blocks need one-thread GEMMs (oneMKL run sequential)
    del BRANCHES["sequence_kernel_rows"]
PATHS = tuple(f"fused-{b}" for b in BRANCHES) + ("composite",)


@contextlib.contextmanager
def cpu_branch(name: str):
    """Force one branch of the CPU backend's recurrence (its thresholds pick one per call)."""
    be = tr.get_backend("cpu")
    overrides = BRANCHES[name]
    saved = {k: be.__dict__[k] for k in overrides if k in be.__dict__}
    try:
        for k, v in overrides.items():
            setattr(be, k, v)
        yield
    finally:
        for k in overrides:
            if k in saved:
                setattr(be, k, saved[k])
            else:
                delattr(be, k)


@contextlib.contextmanager
def on_path(m: tr.nn.Module, path: str):
    """Run ``m`` on ``path`` (one of PATHS) and check afterwards that it did."""
    m.fused = path.startswith("fused")
    with cpu_branch(path.split("-", 1)[1] if m.fused else "sequence_kernel"):
        yield
    assert m.last_path == ("fused" if m.fused else "composite")


def make_layer(mode: str, input_size: int, hidden_size: int, dtype=tr.float64, seed: int = 0, **kw) -> tr.nn.Module:
    """``nn.RNN`` (mode ``rnn_tanh``/``rnn_relu``), ``nn.LSTM`` or ``nn.GRU``, seeded, float64 by default."""
    if mode.startswith("rnn_"):
        return tr.nn.RNN(input_size, hidden_size, nonlinearity=mode[4:], dtype=dtype, seed=seed, **kw)
    return {"lstm": tr.nn.LSTM, "gru": tr.nn.GRU}[mode](input_size, hidden_size, dtype=dtype, seed=seed, **kw)
