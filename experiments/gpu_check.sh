#!/usr/bin/env bash
# GPU check for anyone with a lent GPU, under 10 minutes: builds ops._C with its CUDA kernels, runs the CUDA tests
# (the ops against the reference path, fp16 blocks, host reads of training steps), prints the ops and
# training-step benchmarks against the reference path, and writes everything to OUT_DIR (summary.txt + a log per
# step). Every step runs under a time budget; the whole check stops starting steps after DEADLINE_S seconds.
#
#   experiments/gpu_check.sh [OUT_DIR]            # from anywhere; .venv with a CUDA build of torch, nvcc on PATH
#
# Environment:
#   PY                    interpreter (default: .venv/bin/python of the repository)
#   TORCH_CUDA_ARCH_LIST  architectures to build (default: the visible GPU's compute capability only, fastest)
#   MAX_JOBS              parallel compile jobs (default: nproc)
#   GPU_CHECK_SKIP_BUILD  1: keep the extension already built (it must have CUDA kernels)
#   DEADLINE_S            overall budget in seconds (default 570)
#   GPU_CHECK_CPU_SELFTEST 1: exercise this script on a machine without a GPU (no build, CPU tests and tiny
#                         CPU benchmarks); nothing it prints is a GPU result
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT_ARG=${1:-gpu_check_$(date +%Y%m%d_%H%M%S)}
mkdir -p "$OUT_ARG"
OUT=$(cd "$OUT_ARG" && pwd)
cd "$ROOT"
PY=${PY:-$ROOT/.venv/bin/python}
DEADLINE_S=${DEADLINE_S:-570}
SELFTEST=${GPU_CHECK_CPU_SELFTEST:-0}
SUMMARY=$OUT/summary.txt
START=$(date +%s)
FAILED=()
: >"$SUMMARY"

log() { echo "[gpu_check +$(($(date +%s) - START))s] $*" | tee -a "$SUMMARY"; }

die() {
  log "ABORTED: $*"
  exit 2
}

# run_step NAME BUDGET_S CMD...: the command's output goes to OUT/NAME.log; ok / FAILED / TIMEOUT / SKIPPED go
# to the summary with the elapsed time and, on failure, the log's last lines. Never aborts the script.
run_step() {
  local name=$1 budget=$2
  shift 2
  local left=$((DEADLINE_S - ($(date +%s) - START)))
  if ((left < 15)); then
    log "SKIPPED $name: the ${DEADLINE_S}s budget of the whole check is spent"
    FAILED+=("$name(skipped)")
    return 0
  fi
  if ((budget > left)); then
    budget=$left
  fi
  local logf=$OUT/$name.log t0 rc=0
  t0=$(date +%s)
  log "step $name (budget ${budget}s): $*"
  timeout --kill-after=10 "$budget" "$@" >"$logf" 2>&1 || rc=$?
  local dt=$(($(date +%s) - t0))
  if ((rc == 0)); then
    log "  ok in ${dt}s (log: $logf)"
    return 0
  fi
  if ((rc == 124 || rc == 137)); then
    log "  TIMEOUT after ${dt}s (budget ${budget}s); last lines of $logf:"
  else
    log "  FAILED with exit code $rc after ${dt}s; last lines of $logf:"
  fi
  tail -n 20 "$logf" | sed 's/^/    /' | tee -a "$SUMMARY"
  FAILED+=("$name")
}

# ------------------------------------------------------------------------------------------------ preflight
log "repository $ROOT at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); output $OUT"
[[ -x $PY ]] || die "no interpreter at $PY: build the environment first (make venv) or set PY"
if [[ $SELFTEST == 1 ]]; then
  log "CPU SELF-TEST MODE (GPU_CHECK_CPU_SELFTEST=1): no GPU is used; the numbers below are not GPU results"
  DEVICE=cpu
else
  DEVICE=cuda
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/  GPU: /' |
      tee -a "$SUMMARY"
  fi
  if ! "$PY" - 2>&1 <<'EOF' | tee -a "$SUMMARY"; then
import sys
import torch
print(f"  torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available {torch.cuda.is_available()}")
if torch.version.cuda is None:
    sys.exit("  torch is a CPU build: install the CUDA build of the pinned torch version into this environment")
if not torch.cuda.is_available():
    sys.exit("  torch has CUDA but sees no GPU (driver, CUDA_VISIBLE_DEVICES?)")
print(f"  device 0: {torch.cuda.get_device_name(0)}, capability {torch.cuda.get_device_capability(0)}")
EOF
    die "no usable CUDA device from $PY (see above)"
  fi
  NVCC=$(command -v nvcc || true)
  if [[ -z $NVCC && -n ${CUDA_HOME:-} && -x ${CUDA_HOME:-}/bin/nvcc ]]; then
    NVCC=$CUDA_HOME/bin/nvcc
  fi
  if [[ ${GPU_CHECK_SKIP_BUILD:-0} != 1 && -z $NVCC ]]; then
    die "nvcc not found (PATH or CUDA_HOME): needed to build the CUDA kernels (or set GPU_CHECK_SKIP_BUILD=1)"
  fi
  if [[ -n $NVCC ]]; then
    log "nvcc: $("$NVCC" --version | tail -n 1)"
  fi
fi

# ------------------------------------------------------------------------------------------------ build
if [[ $SELFTEST == 1 || ${GPU_CHECK_SKIP_BUILD:-0} == 1 ]]; then
  log "build skipped (self-test or GPU_CHECK_SKIP_BUILD=1): using the extension as built"
else
  ARCH=${TORCH_CUDA_ARCH_LIST:-$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))')}
  run_step build 300 env SUITE_OPS_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" -m pip install --no-build-isolation --no-deps -e "$ROOT"
fi
if ! "$PY" -c 'import sys, ops; sys.exit(0 if ops.extension_available() else 1)' 2>/dev/null; then
  die "ops._C does not import after the build (see $OUT/build.log)"
fi
if [[ $DEVICE == cuda ]] && ! "$PY" -c 'import sys, ops; sys.exit(0 if ops.cuda_kernels_built() else 1)'; then
  die "ops._C was built without CUDA kernels (see $OUT/build.log)"
fi

# ------------------------------------------------------------------------------------------------ tests
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736}
export WANDB_MODE=disabled
if [[ $DEVICE == cuda ]]; then
  # CUDA-marked tests: the compiled CUDA ops against the reference path (values, gradients, fp16/bf16, the
  # masked bias_act), and StyleGAN2's fp16 blocks on the GPU.
  run_step test_cuda_ops_fp16 150 "$PY" -m pytest -q -p no:cacheprovider -m cuda -rs tests/ops \
    tests/networks/test_stylegan2.py
else
  run_step test_cuda_ops_fp16 150 "$PY" -m pytest -q -p no:cacheprovider -x tests/ops/test_cuda.py \
    tests/networks/test_stylegan2.py -k "fp16 and not nvcc"
fi
HOST_SYNC=tests/lightning_modules/test_host_sync.py
if [[ -f $HOST_SYNC ]]; then
  run_step test_host_sync 120 env SUITE_TEST_DEVICE=$DEVICE "$PY" -m pytest -q -p no:cacheprovider -x "$HOST_SYNC"
else
  log "FAILED test_host_sync: $HOST_SYNC is missing"
  FAILED+=(test_host_sync)
fi

# ------------------------------------------------------------------------------------------------ benchmarks
if [[ $SELFTEST == 1 ]]; then
  run_step bench_ops 60 "$PY" experiments/bench_ops.py --device cpu --repeats 1 --batch 1
  run_step bench_train 120 "$PY" experiments/bench_train.py --device cpu --res 32 --backends auto \
    --allocators tuned --repeats 1 --iters 1
else
  run_step bench_ops 60 "$PY" experiments/bench_ops.py --device cuda --repeats 20
  run_step bench_train 150 "$PY" experiments/bench_train.py --device cuda --res 32 64 --backends ref auto \
    --allocators stock --repeats 2
fi
for name_pattern in "bench_ops:^torch |^case |x$" "bench_train:^res |^ratios"; do
  name=${name_pattern%%:*}
  if [[ -f $OUT/$name.log ]]; then
    log "$name results:"
    grep -E "${name_pattern#*:}" "$OUT/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY" || true
  fi
done

# ------------------------------------------------------------------------------------------------ summary
if ((${#FAILED[@]} == 0)); then
  log "RESULT: all steps passed in $(($(date +%s) - START))s on $DEVICE; summary in $SUMMARY"
  exit 0
fi
log "RESULT: ${#FAILED[@]} step(s) did not pass: ${FAILED[*]} ($(($(date +%s) - START))s); summary in $SUMMARY"
exit 1
