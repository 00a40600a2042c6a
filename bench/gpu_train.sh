#!/usr/bin/env bash
# The prepared GPU run (issue 18): one command on the lent GPU machine trains crl-base gray and
# colour within a time budget, validates them, calibrates them and measures GPU inference.
# Everything it returns lands in $OUT (at most 8 files of at most 16 MiB each).
#
#   here, once:   python bench/gpu_data.py                  # builds the git-ignored .gpu-data/
#   device run:   bash bench/gpu_train.sh                    # carry [".gpu-data"], timeout_s 590
#   CPU trial:    BUDGET=60 VAL_LIMIT=2 PATCH=48 BATCH=4 CAL_CROPS=2 INFER_MP=0.1 \
#                 OUT=runs/gpu-trial bash bench/gpu_train.sh
#
# Continue a returned model on a later lease: INIT_GRAY=... INIT_COLOR=... (weights from $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder that comes back}
BUDGET=${BUDGET:-400}          # seconds of training in all, both colour types and both stages
DATA=${DATA:-.gpu-data}
PATCH=${PATCH:-128}            # restorer patch side (encoder: half of it)
BATCH=${BATCH:-32}
VAL_LIMIT=${VAL_LIMIT:-68}
PY=${PYTHON:-python3}
WORKERS=${WORKERS:-$(( $(nproc) - 2 > 1 ? $(nproc) - 2 : 1 ))}
RUNS=${RUNS:-/tmp/jr-runs}
mkdir -p "$OUT" "$RUNS"
LOG="$OUT/train-log.txt"

# The package without its dependencies into this machine's Python (its torch stays).
SITE=/tmp/jr-site
$PY -m pip install -q --no-deps --no-build-isolation --no-index --target "$SITE" . >/dev/null
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
JR=("$PY" -m napari_jpeg_restore.core.cli)
DEVICE=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
{ echo "# $(date -u +%FT%TZ) device=$DEVICE budget=${BUDGET}s patch=$PATCH batch=$BATCH workers=$WORKERS"
  cat "$DATA/SUMMARY.txt"; if command -v nvidia-smi >/dev/null; then nvidia-smi -L; fi; } | tee "$LOG"

train() {  # STAGE NAME CHANNELS SECONDS [more train options]
  local stage=$1 name=$2 channels=$3 seconds=$4; shift 4
  "${JR[@]}" train "$stage" --data "$DATA/train" --out "$RUNS/$name" --preset base \
    --channels "$channels" --device "$DEVICE" --precision auto --loader-workers "$WORKERS" \
    --time-budget "$seconds" --steps 1000000 --log-every 25 --ckpt-every 1000000 "$@" 2>&1 \
    | tr '\r' '\n' | grep -v '^train:' | sed "s/^/[$name] /" | tee -a "$LOG"
}

for kind in gray color; do
  channels=$([ $kind = gray ] && echo 1 || echo 3)
  init_var="INIT_${kind^^}"
  if [ -n "${!init_var:-}" ]; then  # continue a returned restorer: its encoder stays frozen
    train restorer "crl-base-$kind" "$channels" $(( BUDGET / 2 )) --patch "$PATCH" --batch "$BATCH" \
      --init "${!init_var}" --lr 1e-4 --half-weights
  else
    train encoder "cqe-base-$kind" "$channels" $(( BUDGET / 10 )) --patch $(( PATCH / 2 )) \
      --batch $(( BATCH * 2 )) --lr 1e-3
    train restorer "crl-base-$kind" "$channels" $(( BUDGET / 2 - BUDGET / 10 )) --patch "$PATCH" \
      --batch "$BATCH" --encoder "$RUNS/cqe-base-$kind/model.pt" --lr 2e-4 --half-weights
  fi
  weights="$RUNS/crl-base-$kind/model.pt"
  "${JR[@]}" calibrate "$weights" --data "$DATA/train" --device "$DEVICE" --crops "${CAL_CROPS:-48}" 2>/dev/null | tee -a "$LOG"
  cp "$weights" "$OUT/crl-base-$kind.pt"
  cp "$RUNS/crl-base-$kind/model.calibration.json" "$OUT/crl-base-$kind.calibration.json"
  val=$([ $kind = gray ] && echo val-gray || echo val-color)
  "${JR[@]}" eval --model "$weights" --data "$DATA/$val" --limit "$VAL_LIMIT" --device "$DEVICE" \
    --quality 10 20 30 40 50 60 70 80 90 95 100 --json "$OUT/val-$kind.json" 2>/dev/null | tee -a "$LOG"
done

$PY bench/gpu_inference.py --out "$OUT/gpu-inference.md" --megapixels "${INFER_MP:-4}" \
  --weights "$RUNS/crl-base-gray/model.pt" "$RUNS/crl-base-color/model.pt" 2>&1 | tee -a "$LOG"
ls -la "$OUT"
