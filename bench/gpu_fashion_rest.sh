#!/usr/bin/env bash
# More test images for the models bench/gpu_fashion.sh brought back: dequantized PF-ODE shards, all at once on
# one GPU, each stopped at HARD_S seconds (a stopped shard is lost, the others are kept). Same flags and the same
# per-index noise and probes as bench/gpu_fashion.sh, so shards of both scripts make one evaluation.
#   OUT=/tmp/o MODELS=data/gpu-models JOBS="denoiser:2000:2000 energy:500:1500" bash bench/gpu_fashion_rest.sh
#   (a job is MODEL:START:N, MODEL a file MODELS/MODEL.safetensors; IDX: the four Fashion-MNIST .gz files)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
PY=${PYTHON:-python3}; IDX=${IDX:-data/fm-idx}; OUT=${OUT:?set OUT}; MODELS=${MODELS:-data/gpu-models}
JOBS=${JOBS:?set JOBS}; HARD_S=${HARD_S:-170}; BATCH=${BATCH:-1000}
W=$(mktemp -d -t dsmctl-gpu-rest-XXXX)
NAME=gpu_fashion_rest; source bench/gpu_lib.sh
trap '(cd "$W" && tar czf "$OUT/rest.tgz" --exclude=./data .); ls -la "$OUT" >&2' EXIT
$PY -m dsmctl prepare "fashion-mnist:$IDX" --out "$W/data" 2> "$W/prepare.log" || { log "prepare failed"; exit 1; }
log "data prepared; jobs: $JOBS"
for job in $JOBS; do
    IFS=: read -r m s n <<< "$job"
    ( timeout $(( HARD_S - $(el) )) $PY -m dsmctl eval-nll "$MODELS/$m.safetensors" --data "$W/data" --split test \
        --estimator pf-ode --dequantize --probes 1 --rtol 1e-4 --atol 1e-4 --batch-size "$BATCH" --no-baseline \
        --start "$s" --n-images "$n" --per-image "$W/$m-pf$s.csv" --json > "$W/$m-pf$s.json" 2> "$W/$m-pf$s.log" \
      && log "$m $s+$n: $(nll "$W/$m-pf$s.json")" || log "$m $s+$n: failed or stopped" ) &
done
wait
log "done"
