"""CPU backend: NumPy arrays, BLAS for matrix products, Numba for the fused kernels."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import Backend, bf16, blas, calibration, cpu_kernels, memory, optim_kernels, precision, rnn_kernels, threads
from .recurrence import GATES, alloc_forward, last_state, recurrence_backward, recurrence_forward

__all__ = ["CPUBackend"]

memory.tune_malloc()  # a step's large arrays reuse heap pages instead of faulting fresh ones (memory.py)

# under autocast, mm takes float32 operands and ones mm_operand already rounded to bfloat16 (uint16 bits)
_BF16_OPERANDS = (np.dtype(np.float32), np.dtype(np.uint16))
# the activation kernels' typed 1 per dtype they run for (others take the generic NumPy path)
_ONE = {np.dtype(np.float32): np.float32(1), np.dtype(np.float64): np.float64(1)}


class CPUBackend(Backend):
    name = "cpu"
    xp = np
    is_device = False

    def to_host(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def from_host(self, a: np.ndarray, copy: bool = False) -> np.ndarray:
        return np.array(a, copy=True) if copy else np.asarray(a)

    def mm(self, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        if precision.bf16_active() and a.dtype in _BF16_OPERANDS and b.dtype in _BF16_OPERANDS and a.ndim == b.ndim == 2:
            return bf16.matmul(a, b, bias)  # autocast: bfloat16 products, float32 accumulation
        return blas.matmul(a, b, bias)

    def mm_operand(self, a: np.ndarray) -> np.ndarray:
        if precision.bf16_active() and a.dtype == np.float32 and a.ndim == 2:
            return bf16.to_bf16_operand(a)
        return a

    def gemm(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, beta: int) -> None:
        if precision.bf16_active() and a.dtype == b.dtype == out.dtype == np.float32 and out.flags.c_contiguous:
            bf16.gemm_into(a, b, out, float(beta))
        elif (blas.available() and out.dtype in (np.float32, np.float64) and a.dtype == b.dtype == out.dtype
                and a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous):
            # BLAS's own beta (no temporary product), on the calibrated provider, split over threads where
            # that pays (a NumPy matmul here would wake OpenBLAS's spinning threads beside MKL's)
            blas.gemm_into(a, b, out, float(beta))
        elif not beta:
            np.matmul(a, b, out=out)
        else:
            out += a @ b

    # -- fused kernels -------------------------------------------------------------------
    # Softmax cross-entropy runs over blocks of about this many logits, so the float64 block
    # of shifted logits / exps stays in cache between the passes over it.
    XENT_BLOCK = 1 << 17
    # From this many classes, the row max uses NumPy's SIMD max (Numba's max loop is scalar).
    XENT_NUMPY_MAX_COLS = 512

    def softmax_xent(self, logits: np.ndarray, targets: np.ndarray, ignore_index: int):
        """Rows of (loss, row_max, log_sum) for 2-D logits and int64 targets.

        row_max and log_sum = log(sum(exp(logits - row_max))) are float64 and kept apart (their
        sum is the log-sum-exp): backward rebuilds softmax from them exactly even where adding
        them would round (|logits| >= 1e14). row_max is exact; log_sum is exact to float64 rounding
        for float64 logits (the shift and the exp run in float64), and for float32 logits it sums
        float32 exps (as their backward makes them) in float64; loss has the logits' dtype and is 0
        on ignored rows. Per block of rows: max (NumPy's SIMD max on long rows); float64, shift
        (Numba), exp (NumPy, SIMD), row sums, log and gather (Numba); float32, one Numba pass.
        """
        logits = np.ascontiguousarray(logits)
        n, c = logits.shape
        loss = np.empty(n, dtype=logits.dtype)
        row_max = np.empty(n, dtype=np.float64)
        log_sum = np.empty(n, dtype=np.float64)
        targets = np.ascontiguousarray(targets, dtype=np.int64)
        ignore_index = int(ignore_index)
        numpy_max = c >= self.XENT_NUMPY_MAX_COLS
        step = max(1, self.XENT_BLOCK // max(c, 1))

        def rows(r0: int, r1: int) -> None:  # rows are independent: threads take disjoint ranges
            if logits.dtype == np.float32 and c:  # one pass per row: float32 exps, float64 sums
                tmp = np.empty(c, dtype=np.float32)
                for a in range(r0, r1, step):
                    b = min(a + step, r1)
                    row_max[a:b] = logits[a:b].max(axis=1)  # NumPy's SIMD max; the pass reads the rows from cache
                    cpu_kernels.xent_rows_f32(logits, a, b, targets, ignore_index, row_max, log_sum, loss, tmp)
                return
            buf = np.empty((min(step, r1 - r0), c))
            for a in range(r0, r1, step):
                block = buf[: min(step, r1 - a)]
                if numpy_max:  # per block: the shift below reads these rows again from cache, not memory
                    row_max[a: a + len(block)] = logits[a: a + len(block)].max(axis=1)
                cpu_kernels.xent_shift_rows(logits, a, not numpy_max, row_max, block)
                np.exp(block, out=block)
                cpu_kernels.xent_finish_rows(block, a, logits, targets, ignore_index, row_max, log_sum, loss)

        self._split(rows, n, c)
        return loss, row_max, log_sum

    def softmax_xent_backward(self, logits, row_max, log_sum, targets, ignore_index, grad_rows):
        """(softmax(logits) - onehot(targets)) * grad_rows[:, None], zero on ignored rows.

        exp(logits - row_max) in the logits' dtype (the row max is one of the logits, so it is
        exact in their dtype), then the row scaling by grad_rows * exp(-log_sum) (float64) and
        the target and ignored-row fix-ups: float32, all in one Numba pass per row; float64, per
        block of rows NumPy's exp then one Numba pass while the block is in cache.
        """
        logits = np.ascontiguousarray(logits)
        n, c = logits.shape
        out = np.empty_like(logits)
        row_max = np.ascontiguousarray(row_max, dtype=np.float64)
        shift = row_max.astype(logits.dtype, copy=False)
        log_sum = np.ascontiguousarray(log_sum, dtype=np.float64)
        g = np.ascontiguousarray(np.broadcast_to(grad_rows, (n,)), dtype=np.float64)
        targets = np.ascontiguousarray(targets, dtype=np.int64)
        ignore_index = int(ignore_index)
        step = max(1, self.XENT_BLOCK // max(c, 1))

        def rows(r0: int, r1: int) -> None:
            if logits.dtype == np.float32:  # one pass: float32 exp, scaling and fix-ups per row
                cpu_kernels.xent_grad_rows_f32(logits, r0, r1, row_max, log_sum, targets, ignore_index, g, out)
                return
            for a in range(r0, r1, step):
                b = min(a + step, r1)
                block = out[a:b]
                np.subtract(logits[a:b], shift[a:b, None], out=block)
                np.exp(block, out=block)
                cpu_kernels.xent_grad_rows(block, a, log_sum, targets, ignore_index, g)

        self._split(rows, n, c)
        return out

    def log_softmax(self, a: np.ndarray, axis: int) -> np.ndarray:
        """float32 along the last axis of a C-contiguous array: one Numba pass per row (float32 exps, float64
        row sums), rows over threads; otherwise NumPy."""
        if not _last_axis_f32(a, axis):
            return super().log_softmax(a, axis)
        shape = a.shape
        a = a.reshape(-1, shape[-1])
        out = np.empty_like(a)
        row_max = np.empty(a.shape[0], dtype=np.float32)

        def rows(r0: int, r1: int) -> None:
            np.max(a[r0:r1], axis=1, out=row_max[r0:r1])  # NumPy's SIMD max (Numba's loop is scalar)
            cpu_kernels.log_softmax_rows_f32(a, row_max, r0, r1, out)

        self._split(rows, a.shape[0], a.shape[1])
        return out.reshape(shape)

    def log_softmax_backward(self, out: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
        if not (_last_axis_f32(out, axis) and g.dtype == np.float32 and g.shape == out.shape):
            return super().log_softmax_backward(out, g, axis)
        shape = out.shape
        out, g = out.reshape(-1, shape[-1]), np.ascontiguousarray(g).reshape(-1, shape[-1])
        grad = np.empty_like(out)
        self._split(lambda r0, r1: cpu_kernels.log_softmax_rows_backward_f32(out, g, r0, r1, grad), out.shape[0],
                    out.shape[1])
        return grad.reshape(shape)

    # Row-wise and elementwise work (cross-entropy rows, optimizer steps, squared norms) is split
    # over tr.get_num_threads() threads with oneMKL's provider (our pool; see blas.row_parallel),
    # each part at least this many elements.
    PARALLEL_MIN_ELEMENTS = 1 << 17

    def _split(self, fn: Any, n: int, per_item: int = 1) -> None:
        """``fn(a, b)`` over ``range(n)``: in one call, or in contiguous parts on parallel threads."""
        parts = 1
        if n > 1 and blas.row_parallel(self.STEP_PROVIDER):
            parts = max(1, min(threads.get_num_threads(), n * per_item // self.PARALLEL_MIN_ELEMENTS, n))
        threads.run_ranges(fn, n, parts)

    def scatter_add_rows(self, num_rows: int, idx: np.ndarray, src: np.ndarray) -> np.ndarray:
        """zeros((num_rows, D)) with src's rows added at idx (duplicates accumulate)."""
        src = np.ascontiguousarray(src)
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        if idx.ndim != 1 or src.ndim != 2 or idx.shape[0] != src.shape[0]:
            raise ValueError(f"scatter_add_rows: need ids (N,) and rows (N, D), got {idx.shape} and {src.shape}")
        out = np.zeros((num_rows, src.shape[1]), dtype=src.dtype)
        bad = cpu_kernels.scatter_add_rows(out, idx, src)
        if bad >= 0:
            raise IndexError(f"scatter_add_rows: id {int(idx[bad])} at position {bad} is out of range for "
                             f"{num_rows} rows (was the id array changed after the forward pass?)")
        return out

    def index_add(self, out: np.ndarray, index: Any, src: np.ndarray) -> None:
        """out[index] += src with repeated indices accumulating (general advanced indexing).

        ``np.add.at`` checks every index itself; its error is rewrapped to name the shapes."""
        try:
            np.add.at(out, index, src)
        except IndexError as e:
            raise IndexError(f"index_add: an index is out of range for a tensor of shape {out.shape}: {e}") from None

    # -- recurrent layers (see recurrence.py for the layout) -----------------------------------
    # The whole time loop of a layer runs inside one Numba kernel (``rnn_kernels.*_seq_*``): below
    # this many multiply-adds per step the recurrent product is plain loops in the kernel (a BLAS
    # call would cost more than the arithmetic), above it BLAS called from the kernel (blas.py).
    SMALL_STEP_MACS = 1 << 16
    # Call BLAS from inside the kernels when a CBLAS is bound (blas.py). False: layers above
    # SMALL_STEP_MACS run the time loop per step in Python (recurrence.py), one NumPy matmul and one
    # step kernel per step -- the fallback where NumPy's BLAS cannot be reached from Numba.
    SEQ_KERNEL_BLAS = blas.available()
    # With oneMKL: pack W_hh once per pass for the per-step products (blas.pack_b), rather than
    # letting every step's GEMM pack it again.
    PACK_WEIGHTS = True
    # ... for passes of at least this many steps and (batch rows x steps): packing costs about one pass
    # over the weights, which a short pass (a generation loop's T = 1) does not earn back. LSTM(64, 256),
    # 1 thread, no_grad forward: B=1 T=1 424 us packed vs 102 us unpacked, B=32 T=1 428 vs 329, B=4 T=8
    # 436 vs 542, B=1 T=100 1637 vs 2301, B=1 T=32 842 vs 774 (the one loss of this rule).
    PACK_MIN_STEPS = 4
    PACK_MIN_ROW_STEPS = 32
    # Batch rows are independent sequences: with oneMKL (one-thread GEMMs, blas.row_parallel) and
    # several threads (tr.set_num_threads), the sequence kernel runs on row blocks of at least
    # SPLIT_MIN_ROWS rows in parallel threads with no synchronisation between steps -- so the
    # pointwise gate math uses every core too, not only the GEMMs. Only for layers of at least
    # SPLIT_MIN_MACS multiply-adds per pass (T * B * G * H * H), where the thread hand-off (tens of
    # microseconds) is small.
    SPLIT_MIN_ROWS = 8
    SPLIT_MIN_MACS = 1 << 22
    # row-block threads: None = tr.get_num_threads()
    ROW_THREADS: int | None = None
    # The recurrent step's BLAS ("mkl" or "numpy"): None = the one calibration measured faster at this
    # thread count (blas.step_provider), which also decides row blocks, packing and _split's threads.
    STEP_PROVIDER: str | None = None
    # Forward-only passes (and, with the _TRAIN flag, training ones): the sequence kernel makes each
    # step's input projection itself (_fused_input_forward) -- in its loops for small layers, by BLAS
    # per row block with oneMKL -- instead of one (T*B, D) x (D, G*H) GEMM for the whole sequence
    # before the loop: no (T, B, G*H) array (the last one that grew with T), one call less. Measured
    # 3-13% faster for inference; a wash for training, which keeps the one large GEMM.
    FUSE_INPUT_PROJECTION = True
    FUSE_INPUT_PROJECTION_TRAIN = False
    # Under bf16 autocast, training too: oneMKL's bf16 GEMM is slow at the projection's K = D (64: 230
    # GFLOP/s) and W_ih packed once per pass beats it. LSTM (32, 64, 64, 256), 1 thread: training 15.2 ->
    # 14.1-15.0 ms, inference 5.4 -> 4.9 ms; 2 threads 10.5 -> 10.5-11.0 and 3.7 -> 3.35 ms.
    FUSE_INPUT_PROJECTION_BF16 = True
    FUSE_INPUT_PROJECTION_BF16_TRAIN = True

    # float64: from this many elements per step, the gate activations use NumPy's vectorised
    # (SIMD) tanh/exp per step, as the Numba kernels call scalar libm for float64 (exact to rounding).
    # Not float32: the Numba kernels' own activations are vectorised there, and one fused pass beat
    # a dozen NumPy calls at every width measured.
    VECTOR_STEP_ELEMENTS = 1 << 12

    def _vectorised(self, dtype: Any, elements: int) -> bool:
        return dtype == np.float64 and elements >= self.VECTOR_STEP_ELEMENTS

    def rnn_step_forward(self, mode, xw, hw, b_hn, h_prev, c_prev, mask, store, h_out, c_out):
        if self._vectorised(xw.dtype, xw.size):
            return _step_forward_vectorised(mode, xw, hw, b_hn, h_prev, c_prev, mask, store, h_out, c_out)
        if mode == "lstm":
            rnn_kernels.lstm_step_forward(xw, hw, h_prev, c_prev, mask, store, h_out, c_out)
        elif mode == "gru":
            rnn_kernels.gru_step_forward(xw, hw, b_hn, h_prev, mask, store, h_out)
        else:
            rnn_kernels.rnn_step_forward(xw, hw, h_prev, mask, mode == "rnn_relu", h_out)

    def rnn_step_backward(self, mode, store, h_prev, h_t, c_prev, c_t, mask, dout, dh_carry, dc_carry,
                          dxw, dhw, dh_pass, dc_prev):
        if mode == "lstm":
            rnn_kernels.lstm_step_backward(store, c_prev, np.tanh(c_t), mask, dout, dh_carry, dc_carry, dxw, dh_pass,
                                           dc_prev)
        elif mode == "gru":
            rnn_kernels.gru_step_backward(store, h_prev, mask, dout, dh_carry, dxw, dhw, dh_pass)
        else:
            rnn_kernels.rnn_step_backward(h_t, mask, mode == "rnn_relu", dout, dh_carry, dxw, dh_pass)

    def _seq_kernel(self, mode: str, dtype: Any, b: int, h: int) -> tuple[bool, bool]:
        """``(whole-sequence kernel?, BLAS inside it?)`` for a layer of this size and dtype."""
        if self._bf16(dtype):  # every step's product in bfloat16: oneMKL's inside the kernel, else per step
            return (True, True) if bf16.NATIVE else (False, False)
        if b * GATES[mode] * h * h <= self.SMALL_STEP_MACS:
            return True, False
        if not (self.SEQ_KERNEL_BLAS and blas.available()) or self._vectorised(dtype, b * GATES[mode] * h):
            return False, False
        return True, True

    def rnn_forward(self, mode, x, w_ih, bias, w_hh, b_hn, h0, c0, mask, train=True):
        """``(h_all, c_all, store)`` from the layer's input x (T, B, D), as in ``Backend.rnn_forward``.
        Where ``_fuses_input`` says so, the sequence kernel makes each step's input projection itself;
        otherwise one whole-sequence GEMM makes it first. ``train=False``: no store, no per-step c."""
        fused = self._fused_input_forward(mode, x, w_ih, bias, w_hh, b_hn, h0, c0, mask, train)
        if fused is not None:
            return fused
        t_, b_, d_ = x.shape
        xw = self.mm(np.ascontiguousarray(x).reshape(t_ * b_, d_), w_ih.T, bias)  # the bias is the GEMM's start
        # explicit last axis: reshape(..., -1) cannot infer it for a batch of 0
        return self._projected_forward(mode, xw.reshape(t_, b_, w_ih.shape[0]), w_hh, b_hn, h0, c0, mask, train)

    def rnn_forward_projected(self, mode, xw, w_hh, b_hn, h0, c0, mask, train=True):
        return self._projected_forward(mode, xw, w_hh, b_hn, h0, c0, mask, train)

    def _projected_forward(self, mode, xw, w_hh, b_hn, h0, c0, mask, train):
        t_, b_, _ = xw.shape
        seq, use_blas = self._seq_kernel(mode, xw.dtype, b_, h0.shape[1])
        if not seq:
            return recurrence_forward(self, mode, xw, w_hh, b_hn, h0, c0, mask, train)
        return self._seq_forward(mode, xw, None, None, None, w_hh, b_hn, h0, c0, mask, train, use_blas)

    @staticmethod
    def _bf16(dtype: Any) -> bool:
        """Autocast's bfloat16 products for this layer (float32 only; float64 is never autocast)."""
        return dtype == np.float32 and precision.bf16_active()

    def _fused_input_forward(self, mode, x, w_ih, bias, w_hh, b_hn, h0, c0, mask, train):
        """The sequence kernel making each step's input projection (bias + x_t W_ih^T) itself, per row
        block, so no (T, B, G*H) projection is stored and every thread projects its own rows; None where
        this layer does not take that path (see FUSE_INPUT_PROJECTION)."""
        if self._bf16(x.dtype):
            if not (self.FUSE_INPUT_PROJECTION_BF16_TRAIN if train else self.FUSE_INPUT_PROJECTION_BF16):
                return None
        elif not (self.FUSE_INPUT_PROJECTION_TRAIN if train else self.FUSE_INPUT_PROJECTION):
            return None
        t_, b_, _ = x.shape
        h_ = h0.shape[1]
        seq, use_blas = self._seq_kernel(mode, x.dtype, b_, h_)
        if not seq or (use_blas and not blas.row_parallel(self.STEP_PROVIDER)):
            return None
        bias = np.zeros(w_ih.shape[0], dtype=x.dtype) if bias is None else np.ascontiguousarray(bias)
        return self._seq_forward(mode, None, np.ascontiguousarray(x), w_ih, bias, w_hh, b_hn, h0, c0, mask, train,
                                 use_blas)

    def _seq_forward(self, mode, xw, x, w_ih, bias, w_hh, b_hn, h0, c0, mask, train, use_blas):
        t_, b_ = mask.shape
        h_ = h0.shape[1]
        dt = h0.dtype
        g = GATES[mode] * h_
        fuse = x is not None
        h_all, c_all, store = alloc_forward(np, mode, t_, b_, h_, dt, train)
        pack = self._packing(use_blas, t_, b_)
        # the kernels' plain loops take W^T (D or H, G*H); under BLAS they take W itself and read it
        # transposed (no transposed copy), or W packed by MKL with an empty placeholder in W's slot
        w_t = np.empty((0, g), dtype=dt) if pack else np.ascontiguousarray(w_hh if use_blas else w_hh.T)
        weights = [(np.ascontiguousarray(w_hh), True)]
        if fuse:
            wi_t = np.empty((0, g), dtype=dt) if pack else np.ascontiguousarray(w_ih if use_blas else w_ih.T)
            weights.append((np.ascontiguousarray(w_ih), True))
            xw = np.empty((0, b_, g), dtype=dt)
        else:
            x, wi_t, bias = np.empty((0, b_, 0), dtype=dt), np.empty((0, g), dtype=dt), np.empty(g, dtype=dt)
        if mode == "lstm":
            def fn(b0, b1, wp, wip=blas.NOT_PACKED):
                rnn_kernels.lstm_seq_forward(xw, x, wi_t, wip, bias, fuse, w_t, wp, h0, c0, mask, store, h_all, c_all, use_blas,
                                   b0, b1)
        elif mode == "gru":
            def fn(b0, b1, wp, wip=blas.NOT_PACKED):
                rnn_kernels.gru_seq_forward(xw, x, wi_t, wip, bias, fuse, w_t, wp, b_hn, h0, mask, store, h_all, use_blas, b0, b1)
        else:
            relu = mode == "rnn_relu"

            def fn(b0, b1, wp, wip=blas.NOT_PACKED):
                rnn_kernels.rnn_seq_forward(xw, x, wi_t, wip, bias, fuse, w_t, wp, h0, mask, relu, h_all, use_blas, b0, b1)
        self._over_rows(fn, mode, t_, b_, h_, use_blas, weights)
        return h_all, last_state(c_all, t_), store if train else None

    def rnn_backward(self, mode, w_hh, store, h_all, c_all, mask, dout, dh_n, dc_n):
        t_, b_, h_ = dout.shape
        seq, use_blas = self._seq_kernel(mode, dout.dtype, b_, h_)
        if not seq:
            return recurrence_backward(self, mode, w_hh, store, h_all, c_all, mask, dout, dh_n, dc_n)
        w_hh = np.ascontiguousarray(w_hh)
        dh0 = np.empty_like(dh_n)
        if mode == "lstm":
            dxw = np.empty((t_, b_, 4 * h_), dtype=dout.dtype)
            dc0 = np.empty_like(dc_n)
            tanh_c = np.tanh(c_all[1:])
            self._over_rows(lambda b0, b1, wp: rnn_kernels.lstm_seq_backward(w_hh, wp, store, c_all, tanh_c, mask, dout,
                                                                             dh_n, dc_n, dxw, dh0, dc0, use_blas, b0, b1),
                            mode, t_, b_, h_, use_blas, [(w_hh, False)])
            return dxw, dxw, dh0, dc0
        if mode == "gru":
            dxw = np.empty((t_, b_, 3 * h_), dtype=dout.dtype)
            dhw = np.empty_like(dxw)
            self._over_rows(lambda b0, b1, wp: rnn_kernels.gru_seq_backward(w_hh, wp, store, h_all, mask, dout, dh_n, dxw,
                                                                            dhw, dh0, use_blas, b0, b1),
                            mode, t_, b_, h_, use_blas, [(w_hh, False)])
            return dxw, dhw, dh0, None
        dpre = np.empty((t_, b_, h_), dtype=dout.dtype)
        relu = mode == "rnn_relu"
        self._over_rows(lambda b0, b1, wp: rnn_kernels.rnn_seq_backward(w_hh, wp, h_all, mask, relu, dout, dh_n, dpre, dh0,
                                                              use_blas, b0, b1), mode, t_, b_, h_, use_blas, [(w_hh, False)])
        return dpre, dpre, dh0, None

    def _row_blocks(self, mode: str, t: int, b: int, h: int, use_blas: bool) -> int:
        """How many row blocks the sequence kernel runs on (1: the whole batch in this thread)."""
        if (not use_blas or not blas.row_parallel(self.STEP_PROVIDER) or b < 2 * self.SPLIT_MIN_ROWS
                or t * b * GATES[mode] * h * h < self.SPLIT_MIN_MACS):
            return 1
        n = threads.get_num_threads() if self.ROW_THREADS is None else self.ROW_THREADS
        return max(1, min(n, b // self.SPLIT_MIN_ROWS))

    def _packing(self, use_blas: bool, t: int, b: int) -> bool:
        """Whether the sequence kernels get W_hh (and W_ih) packed by oneMKL (see PACK_WEIGHTS, PACK_MIN_STEPS)."""
        return (use_blas and t >= self.PACK_MIN_STEPS and t * b >= self.PACK_MIN_ROW_STEPS and self.PACK_WEIGHTS
                and blas.can_pack(self.STEP_PROVIDER))

    def _over_rows(self, fn: Any, mode: str, t: int, b: int, h: int, use_blas: bool,
                   weights: list[tuple[np.ndarray, bool]]) -> None:
        """``fn(b0, b1, *packed_weights)`` over the batch: once, or on row blocks in parallel threads
        (see SPLIT_MIN_ROWS). ``weights`` are (W, transposed) pairs, packed by MKL for each block's row
        count (NOT_PACKED when not packing)."""
        if use_blas:
            blas.step_provider(self.STEP_PROVIDER)  # the kernels' GEMM entry points go to the step's provider
        pack = self._packing(use_blas, t, b)
        n = self._row_blocks(mode, t, b, h, use_blas)
        bounds = threads.even_bounds(b, n)
        bf = use_blas and self._bf16(weights[0][0].dtype)  # autocast: W rounded to bfloat16, packed by oneMKL

        def packer(w: np.ndarray, m: int, trans: bool) -> np.ndarray:
            if bf:
                return bf16.pack_b(w, m, trans)
            return blas.pack_b(w, m, trans) if pack else blas.NOT_PACKED

        packs = {m: [packer(w, m, trans) for w, trans in weights] for m in {bounds[i + 1] - bounds[i] for i in range(n)}}

        def block(b0: int, b1: int) -> None:
            if bf:
                bf16.thread_ready()  # oneMKL's first packed bf16 product in a thread (see thread_ready)
            fn(b0, b1, *packs[b1 - b0])

        threads.run_ranges(block, b, n)

    # -- activations: one Numba pass in place of two to four NumPy ones (same bits; see cpu_kernels) ---
    def sigmoid(self, a: np.ndarray) -> np.ndarray:
        dt = a.dtype
        if dt not in _ONE or a.ndim == 0 or not a.flags.c_contiguous:  # (other layouts: NumPy keeps them)
            return super().sigmoid(a)
        e = np.empty_like(a)
        cpu_kernels.neg_abs(a, e)
        np.exp(e, out=e)  # NumPy's SIMD exp: Numba's would not give the same bits
        cpu_kernels.sigmoid_finish(a, e, _ONE[dt])
        return e

    def sigmoid_backward(self, y: np.ndarray, g: np.ndarray) -> np.ndarray:
        dt = y.dtype
        if dt not in _ONE or g.dtype != dt or g.shape != y.shape or y.ndim == 0 \
                or not (y.flags.c_contiguous and g.flags.c_contiguous):
            return super().sigmoid_backward(y, g)
        out = np.empty_like(y)
        cpu_kernels.sigmoid_backward(y, g, out, _ONE[dt])
        return out

    def tanh_backward(self, y: np.ndarray, g: np.ndarray) -> np.ndarray:
        dt = y.dtype
        if dt not in _ONE or g.dtype != dt or g.shape != y.shape or y.ndim == 0 \
                or not (y.flags.c_contiguous and g.flags.c_contiguous):
            return super().tanh_backward(y, g)
        out = np.empty_like(y)
        cpu_kernels.tanh_backward(y, g, out, _ONE[dt])
        return out

    # -- gradient clipping ----------------------------------------------------------------------
    def sum_squares(self, a: np.ndarray) -> float:
        """sum(a**2) accumulated in float64 (a float), without a float64 copy of ``a``."""
        flat = np.ascontiguousarray(a).reshape(-1)
        partial: list[float] = []
        self._split(lambda i, j: partial.append(float(cpu_kernels.sum_squares(flat[i:j]))), flat.size)
        return float(sum(partial))

    def vector_norms(self, arrays: list, p: float) -> list[float]:
        if p == 2.0:  # one pass per array, no float64 copy
            return [math.sqrt(self.sum_squares(a)) for a in arrays]
        return super().vector_norms(arrays, p)

    # -- optimizer steps (Numba kernels and the contract a GPU backend mirrors: optim_kernels.py) --
    def sgd_step(self, param: np.ndarray, grad: np.ndarray, momentum_buf: np.ndarray | None, *, lr: float,
                 momentum: float, dampening: float, weight_decay: float, nesterov: bool, first_step: bool) -> None:
        dt = param.dtype
        with optim_kernels.flat_param(param) as p:
            g, mb = optim_kernels.flat(grad, dt), optim_kernels.flat_state(momentum_buf, dt)
            self._split(lambda i, j: optim_kernels.sgd_step(p[i:j], g[i:j], _part(mb, i, j), float(lr), float(momentum),
                                                 float(dampening), float(weight_decay), bool(nesterov),
                                                 bool(first_step)), p.size)

    def adam_step(self, param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
                  max_exp_avg_sq: np.ndarray | None, *, beta1: float, beta2: float, eps: float, weight_decay: float,
                  decoupled_decay: float, step_size: float, bias_correction2_sqrt: float, amsgrad: bool) -> None:
        dt = param.dtype
        with optim_kernels.flat_param(param) as p:
            g = optim_kernels.flat(grad, dt)
            m, v = optim_kernels.flat_state(exp_avg, dt), optim_kernels.flat_state(exp_avg_sq, dt)
            vmax = optim_kernels.flat_state(max_exp_avg_sq, dt)
            self._split(lambda i, j: optim_kernels.adam_step(p[i:j], g[i:j], m[i:j], v[i:j], _part(vmax, i, j), float(beta1),
                                                  float(beta2), float(eps), float(weight_decay), float(decoupled_decay),
                                                  float(step_size), float(bias_correction2_sqrt), bool(amsgrad)), p.size)

    def rmsprop_step(self, param: np.ndarray, grad: np.ndarray, square_avg: np.ndarray, grad_avg: np.ndarray | None,
                     momentum_buf: np.ndarray | None, *, lr: float, alpha: float, eps: float, weight_decay: float,
                     momentum: float, centered: bool) -> None:
        dt = param.dtype
        with optim_kernels.flat_param(param) as p:
            g = optim_kernels.flat(grad, dt)
            sq, ga = optim_kernels.flat_state(square_avg, dt), optim_kernels.flat_state(grad_avg, dt)
            mb = optim_kernels.flat_state(momentum_buf, dt)
            self._split(lambda i, j: optim_kernels.rmsprop_step(p[i:j], g[i:j], sq[i:j], _part(ga, i, j), _part(mb, i, j),
                                                     float(lr), float(alpha), float(eps), float(weight_decay), float(momentum),
                                                     bool(centered)), p.size)

    def adagrad_step(self, param: np.ndarray, grad: np.ndarray, state_sum: np.ndarray, *, clr: float, eps: float,
                     weight_decay: float) -> None:
        dt = param.dtype
        with optim_kernels.flat_param(param) as p:
            g, ss = optim_kernels.flat(grad, dt), optim_kernels.flat_state(state_sum, dt)
            self._split(lambda i, j: optim_kernels.adagrad_step(p[i:j], g[i:j], ss[i:j], float(clr), float(eps),
                                                     float(weight_decay)), p.size)


def _last_axis_f32(a: np.ndarray, axis: int) -> bool:
    """Whether ``axis`` is the last of a float32 C-contiguous array with at least one column (rows for a kernel)."""
    return a.dtype == np.float32 and a.ndim >= 1 and axis in (-1, a.ndim - 1) and a.flags.c_contiguous and a.shape[-1] > 0


def _part(state: np.ndarray, i: int, j: int) -> np.ndarray:
    """Elements i:j of an optimizer state, or the empty placeholder of an unused one as it is."""
    return state[i:j] if state.size else state


# ---------------------------------------------------------------------------------------------
# vectorised per-step gate math (same results and stored values as the Numba step kernels)


def _sigmoid_(a: np.ndarray) -> np.ndarray:
    """In-place logistic sigmoid (float64 only: CPUBackend._vectorised), the exp(-|a|) form, exact to
    rounding even where the sigmoid is tiny (gradient checks run there)."""
    e = np.exp(-np.abs(a))
    # numerator 1 where a >= 0, else e: max(e, a >= 0) as e <= 1 (NaN stays NaN); np.where with a
    # scalar ran 6x slower than this whole function's other passes together
    num = np.maximum(e, a >= 0)
    e += 1.0
    np.divide(num, e, out=a)
    return a


def _step_forward_vectorised(mode, xw, hw, b_hn, h_prev, c_prev, mask, store, h_out, c_out):
    h = h_prev.shape[1]
    masked = not bool(mask.all())
    keep = mask[:, None] != 0
    if mode == "lstm":
        np.add(xw, hw, out=store)
        _sigmoid_(store[:, : 2 * h])
        np.tanh(store[:, 2 * h: 3 * h], out=store[:, 2 * h: 3 * h])
        _sigmoid_(store[:, 3 * h:])
        i, f, g, o = store[:, :h], store[:, h: 2 * h], store[:, 2 * h: 3 * h], store[:, 3 * h:]
        np.multiply(f, c_prev, out=c_out)
        c_out += i * g
        if masked:
            np.copyto(c_out, c_prev, where=~keep)
        np.multiply(o, np.tanh(c_out), out=h_out)
    elif mode == "gru":
        r, z, n, hn = store[:, :h], store[:, h: 2 * h], store[:, 2 * h: 3 * h], store[:, 3 * h:]
        np.add(xw[:, : 2 * h], hw[:, : 2 * h], out=store[:, : 2 * h])
        _sigmoid_(store[:, : 2 * h])
        np.add(hw[:, 2 * h:], b_hn, out=hn)
        np.multiply(r, hn, out=n)
        n += xw[:, 2 * h:]
        np.tanh(n, out=n)
        # h' = (1 - z) n + z h = n + z (h - n)
        np.subtract(h_prev, n, out=h_out)
        h_out *= z
        h_out += n
    else:
        np.add(xw, hw, out=h_out)
        if mode == "rnn_relu":
            np.maximum(h_out, 0, out=h_out)
        else:
            np.tanh(h_out, out=h_out)
    if masked:
        np.copyto(h_out, h_prev, where=~keep)


# calibration times the recurrent step through this backend's kernels; blas asks calibration for its picks
calibration.STEP_BACKEND = CPUBackend
blas.set_chooser(calibration.choose)
