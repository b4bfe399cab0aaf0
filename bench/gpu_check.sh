#!/usr/bin/env bash
# The GPU check of issue 21 in one go, about 8 minutes on one H100:
#   1. install        pip install -c constraints.txt -e '.[test]' (kept going if it fails but the
#                     environment already imports everything the tests need)
#   2. tests          the device audit and GPU-switch tests on CUDA (tests/devices), the CUDA
#                     bench's harness, and the model / structure / layer unit tests
#   3. parity         tests/parity with WORKBENCH_DEVICE=cuda: the fixtures' tolerances, TF32 off
#   4. bench          bench/cuda_bench.py: workbench vs torchvision, fp32 / TF32 / bf16, batch
#                     1 / 8 / 16, peak GPU memory; trace overhead and extraction rate on the GPU
# Each step has its own time limit; a step that fails or times out does not stop the next ones.
# Logs, JUnit XML, cuda_bench.json and summary.txt go to $OUT if set, else bench/results/gpu_check/.
#
#   bash bench/gpu_check.sh                 # PYTHON=/path/to/python to choose the interpreter
#
# Exit status: 0 when every step passed, 1 otherwise, 2 without a CUDA device.
set -u
cd "$(dirname "$0")/.."
RESULTS="${OUT:-bench/results/gpu_check}"
mkdir -p "$RESULTS"
SUMMARY="$RESULTS/summary.txt"
: > "$SUMMARY"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi
export OMP_WAIT_POLICY=PASSIVE
STATUS=0

step() {  # step NAME LIMIT_SECONDS COMMAND...: run, log, time, record the outcome
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS rc
    echo "== $name (limit ${limit}s): $*" | tee -a "$SUMMARY"
    timeout --kill-after=10 "$limit" "$@" > "$RESULTS/$name.log" 2>&1
    rc=$?
    local verdict=ok
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then verdict="TIMED OUT"; elif [ $rc -ne 0 ]; then verdict="FAILED (exit $rc)"; fi
    echo "   $verdict after $((SECONDS - t0))s; last lines of $RESULTS/$name.log:" | tee -a "$SUMMARY"
    tail -n 5 "$RESULTS/$name.log" | sed 's/^/   | /' | tee -a "$SUMMARY"
    return $rc
}

no_cuda() {
    echo "No CUDA device visible to $PY (torch.cuda.is_available() is False): nothing to check." | tee -a "$SUMMARY"
    exit 2
}
CUDA_CHECK="import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)"
"$PY" -c "$CUDA_CHECK" 2> /dev/null
[ $? -eq 3 ] && no_cuda  # torch is there and sees no GPU: do not even install

step install 240 "$PY" -m pip install -c constraints.txt -e '.[test]'
if ! "$PY" -c "import torch, torchvision, pytest, yacs, omegaconf, pycocotools" 2> "$RESULTS/imports.log"; then
    echo "The environment cannot import the test dependencies (see install.log, imports.log)." | tee -a "$SUMMARY"
    exit 1
fi
"$PY" -c "$CUDA_CHECK" || no_cuda
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'torchvision', torchvision.__version__, '|', torch.cuda.get_device_name(0))" | tee -a "$SUMMARY"

step tests 180 "$PY" -m pytest -q -p no:cacheprovider -rfE --junitxml="$RESULTS/tests.xml" \
    tests/devices tests/bench/test_cuda_bench.py tests/modeling tests/structures tests/layers \
    || STATUS=1
WORKBENCH_DEVICE=cuda step parity 240 "$PY" -m pytest -q -p no:cacheprovider -rfE -s \
    --junitxml="$RESULTS/parity.xml" tests/parity || STATUS=1
step bench 300 "$PY" bench/cuda_bench.py --out "$RESULTS/cuda_bench.json" || STATUS=1

if [ -f "$RESULTS/cuda_bench.json" ]; then
    "$PY" - "$RESULTS/cuda_bench.json" <<'EOF' | tee -a "$SUMMARY"
import json, sys
res = json.load(open(sys.argv[1]))
for name, ok in res.get("meets_targets", {}).items():
    print(("MET   " if ok else "MISSED"), name)
if "inspect_error" in res:
    print("inspection bench:", res["inspect_error"][:300])
EOF
fi
echo "summary: $SUMMARY (status $STATUS)"
exit $STATUS
