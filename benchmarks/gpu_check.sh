#!/bin/bash
# The GPU check of the course profile, in one script (<= 8 minutes on one H100/H200):
#
#   bash benchmarks/gpu_check.sh [--device cuda|cpu] [--quick] [--as-gpu-image] [OUT_DIR]   (default outputs/gpu_check)
#   bash benchmarks/gpu_check.sh --fetch-wheels      # on a machine with pip: the wheels the GPU image lacks -> ./.whl
#
# (a) installs the wheels of benchmarks/gpu_wheels.txt from ./.whl when it holds any and python is 3.12 (diffusers and
#     what the notebooks need: the GPU image has torch, transformers, accelerate, safetensors, huggingface_hub,
#     matplotlib, ... but not these): pip install --no-index --no-deps --target $SITE, then PYTHONPATH;
# (b) runs the CUDA tests (pytest -m cuda: tests/test_cuda.py) and the six notebooks in the course profile in smoke mode
#     with the tiny local CLIP/VAE of tests/conftest.py (tests/test_notebooks.py, the course-profile test);
# (c) benchmarks/train_levers.py: training samples/s of the reference UNet at 256 px, global batch 64, bf16, each speed
#     lever on/off, MFU, the encode-every-step course loop beside it, the course run estimated;
# (d) benchmarks/generate_throughput.py: 1,063 prompts batched vs one at a time (a subset), 50 DDIM steps.
# Results: OUT_DIR/{summary.md, train.json, generate.json, env.json, steps.tsv, gpu_check.log, RESULTS.md}, where
# RESULTS.md is benchmarks/RESULTS.md with this run's sections; without --quick it is copied back to
# benchmarks/RESULTS.md (on a lent machine only OUT_DIR comes back: copy OUT_DIR/RESULTS.md there by hand).
# --quick shrinks every step (tiny UNet, few steps) so that `--device cpu --quick` runs on a laptop CPU in minutes;
# --as-gpu-image (CPU) refuses every package the GPU image and the wheels do not provide (gpu_check.py as-gpu-image).
# The steps share a deadline (GPU_CHECK_SECONDS, default 470 s; 1800 s with --quick): one that runs out of time is
# stopped and reported, and the others still run. Exit status 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
DEVICE=cuda QUICK=0 AS_IMAGE=0 OUT=outputs/gpu_check
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --device=*) DEVICE=${1#*=}; shift ;;
    --quick) QUICK=1; shift ;;
    --as-gpu-image) AS_IMAGE=1; shift ;;
    --fetch-wheels)
      grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
      exec python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d .whl -r benchmarks/gpu_wheels.txt ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUT=$1; shift ;;
  esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "--device must be cuda or cpu, not $DEVICE" >&2; exit 2 ;; esac
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/{summary.md,train.json,generate.json,env.json,steps.tsv,gpu_check.log}
cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
LOG=$OUT/gpu_check.log
START=$(date +%s)
DEADLINE=$((START + ${GPU_CHECK_SECONDS:-$([ $QUICK = 1 ] && echo 1800 || echo 470)}))
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=$REPO/.venv/bin/python; else PY=python3; fi
export PYTHONUNBUFFERED=1 PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}  # (the notebook kernels import helpers too)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1  # every model here is built locally

# (a) the wheels the GPU image lacks
SITE=${SITE:-/tmp/gpu-check-site}
PY_VERSION=$($PY -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if compgen -G ".whl/*.whl" > /dev/null && [ "$PY_VERSION" != 3.12 ]; then
  echo "not installing .whl: its wheels are for Python 3.12 (the GPU image), this is Python $PY_VERSION" | tee -a "$LOG"
elif compgen -G ".whl/*.whl" > /dev/null; then
  echo "installing $(ls .whl/*.whl | wc -l) wheels from .whl into $SITE" | tee -a "$LOG"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    >> "$LOG" 2>&1 || { echo "pip install of .whl failed (see $LOG)" | tee -a "$LOG"; exit 2; }
  export PYTHONPATH=$PYTHONPATH:$SITE
fi
if [ $AS_IMAGE = 1 ]; then
  $PY benchmarks/gpu_check.py as-gpu-image /tmp/gpu-check-image-only | cut -c1-300 | tee -a "$LOG"
  export PYTHONPATH=/tmp/gpu-check-image-only:$PYTHONPATH
fi

step() {  # step NAME LIMIT_S COMMAND...: run with the smaller of LIMIT_S and the time left; log; record the result
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - $(date +%s) - 15)) t0=$(date +%s) rc
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 20 ]; then
    printf '%s\tskipped\t0\n' "$name" >> "$OUT/steps.tsv"; echo "== $name: skipped (no time left)" | tee -a "$LOG"
    return
  fi
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
  timeout --kill-after=15 "$limit" "$@" >> "$LOG" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >> "$OUT/steps.tsv"
  echo "== $name: exit $rc after $(($(date +%s) - t0)) s" | tee -a "$LOG"
}

$PY benchmarks/gpu_check.py preflight --device "$DEVICE" --out "$OUT" >> "$LOG" 2>&1
PRE=$?
grep -E '^MISSING|"gpu"|"torch"|"diffusers"' "$LOG" | head -5
if [ $PRE = 2 ]; then
  echo "preflight failed: the training modules or the GPU are missing (see $LOG)"; exit 2
fi

if [ $QUICK = 1 ]; then
  TRAIN_ARGS=(--quick) GEN_ARGS=(--preset tiny --prompts 12 --single-prompts 2 --steps 3 --batch-size 4 --rounds 1)
  NOTEBOOK_LIMIT=900  # the six chapters take 3-7 min on a 2-core CPU
else
  TRAIN_ARGS=() GEN_ARGS=(--prompts 1063 --single-prompts 16 --steps 50 --rounds 1)
  NOTEBOOK_LIMIT=300
fi
PYTEST=($PY -m pytest -q -p no:cacheprovider)
# (b) the CUDA tests (skipped without a GPU: exit 0)
step pytest_cuda 180 "${PYTEST[@]}" -m cuda tests/test_cuda.py
# (c) training throughput, the levers, the MFU
step train_levers 300 $PY benchmarks/train_levers.py --device "$DEVICE" "${TRAIN_ARGS[@]}" --json "$OUT/train.json" \
  --results "$OUT/RESULTS.md"
# (d) generation
step generate 150 $PY benchmarks/generate_throughput.py --device "$DEVICE" "${GEN_ARGS[@]}" \
  --json "$OUT/generate.json" --results "$OUT/RESULTS.md"
# (b) the six chapters in the course profile, smoke mode, tiny local CLIP + SD VAE
if [ $PRE = 0 ]; then
  step notebooks_course $NOTEBOOK_LIMIT "${PYTEST[@]}" tests/test_notebooks.py -k course_profile_with_local_models
else
  printf 'notebooks_course\tskipped\t0\n' >> "$OUT/steps.tsv"
  echo "== notebooks_course: skipped (their modules are missing: see MISSING above)" | tee -a "$LOG"
fi

$PY benchmarks/gpu_check.py summary "$OUT" --results "$OUT/RESULTS.md" && STATUS=0 || STATUS=1
[ $QUICK = 1 ] || cp "$OUT/RESULTS.md" benchmarks/RESULTS.md  # (quick numbers measure nothing: not recorded)
echo "gpu_check: $([ $STATUS = 0 ] && echo passed || echo FAILED) in $(($(date +%s) - START)) s; results in $OUT"
exit $STATUS
