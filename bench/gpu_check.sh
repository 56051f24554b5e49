#!/usr/bin/env bash
# The GPU check, one command for a machine with a CUDA GPU (about 3-5 minutes, capped under 6):
#   1. the whole test suite except the slow tests, GPU tests enabled (tests/test_cuda.py runs them
#      when CuPy sees a GPU), in parallel when pytest-xdist is installed;
#   2. bench/gpu_check.py: every op and recurrent layer on the GPU against the CPU backend, and
#      LSTM/GRU/RNN training-step timings against PyTorch's cuDNN layers, one table.
#
#     bash bench/gpu_check.sh
#
# Needs python3 (or $PYTHON) with numpy, numba, cupy, pytest, hypothesis, and torch for the cuDNN
# baseline. Runs from this checkout (PYTHONPATH=.), installs nothing. The table goes to
# bench/results/gpu_check_<card>.txt, and with the logs to $OUT when OUT is set.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
LOGS="${OUT:-}"
log() { if [ -n "$LOGS" ]; then tee "$LOGS/$1"; else cat; fi; }

echo "== $(date -u +%FT%TZ)  $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
"$PY" -c "import sys, tinygrad_rnn as tr; print('python', sys.version.split()[0], '| tr.cuda.is_available():',
tr.cuda.is_available(), tr.cuda.unavailable_reason() or '')"

PAR=()
if "$PY" -c "import xdist" 2>/dev/null; then
    PAR=(-n 8)
fi
echo "== 1/2  python -m pytest -q -m 'not slow' ${PAR[*]}   (budget 210 s)"
timeout 210 "$PY" -m pytest -q -m "not slow" --maxfail=30 -p no:cacheprovider -p no:benchmark "${PAR[@]}" 2>&1 \
    | log pytest.log
rc_tests=${PIPESTATUS[0]}

echo "== 2/2  python bench/gpu_check.py   (budget 130 s)"
timeout 130 "$PY" bench/gpu_check.py 2>&1 | log gpu_check.log
rc_check=${PIPESTATUS[0]}

echo "== done in ${SECONDS} s: tests exit ${rc_tests}, gpu_check exit ${rc_check} (124 = hit its time budget)"
[ "$rc_tests" -eq 0 ] && [ "$rc_check" -eq 0 ]
rc_gpu=$?

# 3. distributed on the GPU: the NCCL path of tinygrad_rnn.distributed and DistributedDataParallel at
#    world size 1 (no mpiexec needed; prints SKIPPED when mpi4py is not installed).
echo "== 3/3  python tests/mpi/gpu_nccl.py   (budget 60 s)"
timeout 60 "$PY" tests/mpi/gpu_nccl.py 2>&1 | log gpu_nccl.log
rc_nccl=${PIPESTATUS[0]}
echo "== distributed check exit ${rc_nccl}"
[ "$rc_gpu" -eq 0 ] && [ "$rc_nccl" -eq 0 ]
