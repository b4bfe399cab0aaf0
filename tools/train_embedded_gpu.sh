#!/usr/bin/env bash
# Continue training the embedded model on one GPU, in one go (about 8 minutes of training):
#   1. install    pip install -c constraints.txt -e '.[test]' (kept going if the environment
#                 already imports what training needs)
#   2. calibrate  60 iterations from the packaged weights, to time one step on this GPU
#   3. train      from the packaged weights, as many iterations as fit in TRAIN_SECONDS (default
#                 420): LR BASE_LR (0.02) with steps at 75 % and 92 % of the run, IMS_PER_BATCH
#                 images per step (8), checkpoints every 500 iterations (a cut run resumes with
#                 --resume from $RESULTS/train, the same command line)
#   4. evaluate   python -m workbench.demo on the new weights (the 500 held-out images, on CUDA)
# The weights land in $RESULTS/train/model_final.pth; on the development machine, check them on
# the CPU and ship them with
#   python -m workbench.demo --weights <model_final.pth>
#   python tools/export_embedded.py <model_final.pth> --note "<the command and its figures>"
# $RESULTS is $OUT if set, else output/gpu_train. Exit status: 0 done, 1 a step failed, 2 no CUDA.
set -u
cd "$(dirname "$0")/.."
RESULTS="${OUT:-output/gpu_train}"
mkdir -p "$RESULTS"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi
CONFIG=workbench/model_zoo/configs/Shapes/panoptic_kp_R_50_FPN_small.yaml
WEIGHTS=workbench/model_zoo/weights/Shapes/panoptic_kp_R_50_FPN_small.pth
TRAIN_SECONDS="${TRAIN_SECONDS:-420}"
IMS_PER_BATCH="${IMS_PER_BATCH:-8}"
BASE_LR="${BASE_LR:-0.02}"
WORKERS="${WORKERS:-6}"

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)" 2> /dev/null
[ $? -eq 3 ] && { echo "No CUDA device visible to $PY: nothing to train."; exit 2; }
timeout 240 "$PY" -m pip install -c constraints.txt -e '.[test]' > "$RESULTS/install.log" 2>&1 || true
"$PY" -c "import torch, torchvision, yacs, omegaconf, pycocotools, workbench" || exit 1
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)" || {
    echo "No CUDA device after the install."; exit 2; }

train() {  # train OUTPUT_DIR MAX_ITER STEPS [extra KEY VALUE...]
    local dir=$1 iters=$2 steps=$3; shift 3
    local flags=() opts=()
    for a in "$@"; do if [[ $a == --* ]]; then flags+=("$a"); else opts+=("$a"); fi; done
    "$PY" tools/train_net.py --config-file "$CONFIG" --num-gpus 1 "${flags[@]}" \
        OUTPUT_DIR "$dir" MODEL.DEVICE cuda MODEL.WEIGHTS "$WEIGHTS" \
        SOLVER.IMS_PER_BATCH "$IMS_PER_BATCH" SOLVER.BASE_LR "$BASE_LR" SOLVER.MAX_ITER "$iters" \
        SOLVER.STEPS "$steps" SOLVER.WARMUP_ITERS 100 SOLVER.CHECKPOINT_PERIOD 500 \
        DATALOADER.NUM_WORKERS "$WORKERS" TEST.EVAL_PERIOD 0 "${opts[@]}"
}

t0=$SECONDS
train "$RESULTS/calibrate" 60 "(1000,)" DATASETS.TEST "()" > "$RESULTS/calibrate.log" 2>&1 || { tail -20 "$RESULTS/calibrate.log"; exit 1; }
STEP_S=$("$PY" - "$RESULTS/calibrate/metrics.json" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
times = [r["time"] for r in rows if "time" in r][-3:]
print(f"{statistics.median(times):.4f}")
EOF
)
ITERS=$("$PY" -c "print(max(500, int($TRAIN_SECONDS / $STEP_S) // 100 * 100))")
STEPS="($(( ITERS * 75 / 100 )), $(( ITERS * 92 / 100 )))"
echo "calibration: $STEP_S s per step of $IMS_PER_BATCH images ($((SECONDS - t0)) s); training $ITERS iterations, steps $STEPS" \
    | tee "$RESULTS/summary.txt"
t1=$SECONDS
train "$RESULTS/train" "$ITERS" "$STEPS" --resume > "$RESULTS/train.log" 2>&1 || { tail -20 "$RESULTS/train.log"; exit 1; }
echo "trained $ITERS iterations in $((SECONDS - t1)) s: $RESULTS/train/model_final.pth" | tee -a "$RESULTS/summary.txt"
"$PY" -m workbench.demo --weights "$RESULTS/train/model_final.pth" --output-dir "$RESULTS/demo" --device cuda \
    > "$RESULTS/demo.log" 2>&1 || { tail -20 "$RESULTS/demo.log"; exit 1; }
grep -E "AP|PQ|mIoU" "$RESULTS/demo.log" | head -20 | tee -a "$RESULTS/summary.txt"
