#!/usr/bin/env bash
# Leave-one-class-out on one GPU (docs/ood.md): bench/fashion_loco.sh's protocol with the models trained far longer.
# All ten class-K-held-out models of recipes/fashion-mnist-gpu.yaml (first 59,000 training images without class K)
# train at once on the one GPU for TRAIN_S seconds (the same step count for every class, set from a timed probe of
# all ten at once), then `dsmctl score` fits each detector on the class-!=K images among training images
# 59,000-59,999 (never trained on) and scores 500 test images of the nine classes against 500 of class K and
# against the built-in shifts (upside-down, digits, patches, inverted, noise, constant), with every orientation
# feature (--transforms vflip,rot90,rot270), so that any detector can be refitted from per_image.csv (its "fit" rows).
# The full-data GPU energy of docs/fashion-mnist.md (bench/results/2026-12-04-gpu/energy.safetensors) is scored the
# same way. Not in the paper: this project's recipe and benchmark.
#
#   IDX=data/fm-idx DIGITS=data/digits/digits.csv.gz OUT=/tmp/o bash bench/gpu_loco.sh
#       IDX: the four Fashion-MNIST .gz files; DIGITS: scikit-learn's digits.csv.gz (docs/ood.md)
#   DEVICE=cpu TRAIN_S=10 PROBE=4 WIDTHS=8,16 MID=16 B=8 N=20 CLASSES="0 8" bash bench/gpu_loco.sh   # CPU smoke test
# Outputs in $OUT: results.tgz (logs, recipes, metrics, every score JSON, detectors), perimage-*.tgz (every
# per_image.csv) and modelK.tgz for K in KEEP (runK/model.safetensors, EMA weights with the Gaussian base,
# ~10 MB each: the device returns at most 8 files of 16 MiB).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PYTHON:-python3}
IDX=${IDX:-data/fm-idx}
DIGITS=${DIGITS:-data/digits/digits.csv.gz}
FULL=${FULL-bench/results/2026-12-04-gpu/energy.safetensors}
KEEP=${KEEP-1 8}
SETS=upside-down,digits:$DIGITS,patches,inverted,noise,constant
OUT=${OUT:-$(mktemp -d -t dsmctl-gpu-loco-XXXX)}
DEVICE=${DEVICE:-cuda}
TRAIN_S=${TRAIN_S:-320}      # training wall-clock (all ten at once)
PROBE=${PROBE:-30}           # probe steps (timed) per model
HARD_S=${HARD_S:-550}        # everything still running then is stopped, then results are packed
WIDTHS=${WIDTHS:-64,128}; MID=${MID:-256}; B=${B:-256}; N=${N:-500}
CLASSES=${CLASSES:-0 1 2 3 4 5 6 7 8 9}
W=$(mktemp -d -t dsmctl-gpu-loco-work-XXXX)
NAME=gpu_loco; source bench/gpu_lib.sh
finish() {
    log "packing results"
    (cd "$W" && tar czf "$OUT/results.tgz" --exclude='*.safetensors' --exclude='checkpoints' --exclude='./data' \
        --exclude='./probe*' --exclude='per_image.csv' . )
    (cd "$W" && tar czf "$OUT/perimage-a.tgz" score[0-3]/per_image.csv 2>/dev/null)
    (cd "$W" && tar czf "$OUT/perimage-b.tgz" score[4-7]/per_image.csv 2>/dev/null)
    (cd "$W" && tar czf "$OUT/perimage-c.tgz" score[8-9]/per_image.csv score-full/per_image.csv 2>/dev/null)
    for K in $KEEP; do [ -s "$W/run$K/model.safetensors" ] && (cd "$W" && tar czf "$OUT/model$K.tgz" "run$K/model.safetensors"); done
    ls -la "$OUT" >&2
}
trap finish EXIT

prepare_fashion

common=(--set "data.source=$W/data" --set "model.widths=[$WIDTHS]" --set "model.mid_width=$MID"
        --set "train.batch_size=$B" --set data.subset=first:59000 --set train.log_every=10 --quiet)
train_all() {  # PREFIX STEPS: every class's model at once, into $W/PREFIXrunK
    for K in $CLASSES; do
        timeout "$(left)" $PY -m dsmctl train recipes/fashion-mnist-gpu.yaml "${common[@]}" --set "data.exclude_labels=[$K]" \
            --set train.steps=$2 --set train.ckpt_every=$2 --out "$W/$1run$K" 2> "$W/$1train$K.log" &
    done
    wait
}
rate() {  # images per second of a run's last logged window
    $PY -c "import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])['img_per_s'])" "$1/metrics.jsonl"
}
log "probe: $PROBE steps of every model at once (classes $CLASSES)"
train_all probe- "$PROBE"
R=$(for K in $CLASSES; do rate "$W/probe-run$K"; done | sort -g | head -1) || { log "probe failed"; tail -5 "$W"/probe-train*.log >&2; exit 1; }
STEPS=$($PY -c "print(max(20, int($TRAIN_S * $R / $B)))") || { log "probe failed"; tail -5 "$W"/probe-train*.log >&2; exit 1; }
log "slowest probe rate $R img/s; training: $STEPS steps of batch $B per class, widths [$WIDTHS] mid $MID"
train_all "" "$STEPS"
for K in $CLASSES; do log "class $K: $(tail -1 "$W/run$K/metrics.jsonl" | cut -c1-100)"; done

for K in $CLASSES; do
    NF=$($PY -c "import numpy as np,sys; l=np.load(sys.argv[1]+'/train_labels.npy'); print(int((l[59000:]!=int(sys.argv[2])).sum()))" "$W/data" "$K")
    timeout "$(left)" $PY -m dsmctl score "$W/run$K" --outliers "class:$K,$SETS" --n "$N" --fit-images "last:$NF" --batch-size 500 \
        --transforms vflip,rot90,rot270 --out "$W/score$K" --no-plot --json > "$W/loco$K.json" 2> "$W/score$K.log" &
done
[ -s "$FULL" ] && timeout "$(left)" $PY -m dsmctl score "$FULL" --data "$W/data" --outliers "$SETS" --n "$N" \
    --fit-images last:1000 --batch-size 500 --transforms vflip,rot90,rot270 --out "$W/score-full" --no-plot --json \
    > "$W/full.json" 2> "$W/score-full.log" &
wait
$PY bench/loco_table.py "$W" | tee "$W/loco_table.md" >&2
log "done"
