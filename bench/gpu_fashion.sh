#!/usr/bin/env bash
# Fashion-MNIST on one GPU, inside a fixed wall-clock budget: an energy model and a denoiser trained side by side
# for TRAIN_S seconds each (steps set from a short timed probe of each), then their valid bounds on the test split:
# the energy's importance-weighted dequantized bound on all NTEST test images (and its dequantized PF-ODE on
# the first PF_E), the denoiser's dequantized PF-ODE on shards of 1,000 test images until DEADLINE_S.
# Not in the paper: this project's Fashion-MNIST recipe (docs/fashion-mnist.md) at a GPU's budget.
#
#   IDX=data/fm-idx OUT=/tmp/o bash bench/gpu_fashion.sh         # IDX: the four Fashion-MNIST .gz files
#   DEVICE=cpu TRAIN_S=15 PROBE=20 WIDTHS=8,16 MID=16 B=8 PF_E=8 SHARD=8 NSHARDS=2 NEVAL=50 NTEST=100 bash bench/gpu_fashion.sh
#                                                                # smoke test on a CPU
# Outputs in $OUT: results.tgz (logs, recipes, metrics, every eval-nll JSON and per-image CSV), energy.safetensors,
# denoiser.safetensors (EMA weights, with their normalization metadata).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
PY=${PYTHON:-python3}
IDX=${IDX:-data/fm-idx}
OUT=${OUT:-$(mktemp -d -t dsmctl-gpu-fashion-XXXX)}
DEVICE=${DEVICE:-cuda}
TRAIN_S=${TRAIN_S:-230}      # training wall-clock per model (both run at once)
PROBE=${PROBE:-80}           # probe steps (timed) per model
DEADLINE_S=${DEADLINE_S:-420}  # no new evaluation shard starts after this many seconds of the script
HARD_S=${HARD_S:-520}        # every evaluation still running then is stopped (its shard is lost), then results are packed
WIDTHS=${WIDTHS:-64,128}; MID=${MID:-256}; B=${B:-256}
PF_E=${PF_E:-500}; SHARD=${SHARD:-500}; NSHARDS=${NSHARDS:-20}; NEVAL=${NEVAL:-1000}; NTEST=${NTEST:-10000}
W=$(mktemp -d -t dsmctl-gpu-fashion-work-XXXX)
NAME=gpu_fashion; source bench/gpu_lib.sh
finish() {
    log "packing results"
    for m in energy denoiser; do
        [ -s "$W/$m/model.safetensors" ] && cp "$W/$m/model.safetensors" "$OUT/$m.safetensors"
    done
    (cd "$W" && tar czf "$OUT/results.tgz" --exclude='*.safetensors' --exclude='checkpoints' --exclude='./data' .)
    ls -la "$OUT" >&2
}
trap finish EXIT

prepare_fashion

common=(--set "data.source=$W/data" --set "model.widths=[$WIDTHS]" --set "model.mid_width=$MID"
        --set "train.batch_size=$B" --set "eval.n_images=$NEVAL" --set train.log_every=20 --quiet)
energy=()
denoiser=(--set model.kind=denoiser --set loss.mode=single --set model.base=none --set noise.t_min=1e-8)

rate() {  # images per second of the probe's last logged window
    $PY -c "import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])['img_per_s'])" "$1/metrics.jsonl"
}
train_both() {  # PREFIX ENERGY_STEPS DENOISER_STEPS: both models at once, into $W/PREFIXenergy and $W/PREFIXdenoiser
    dsm train recipes/fashion-mnist.yaml "${common[@]}" "${energy[@]}" --set train.steps=$2 --set train.ckpt_every=$2 \
        --out "$W/$1energy" 2> "$W/$1energy.log" &
    dsm train recipes/fashion-mnist.yaml "${common[@]}" "${denoiser[@]}" --set train.steps=$3 --set train.ckpt_every=$3 \
        --out "$W/$1denoiser" 2> "$W/$1denoiser.log" &
    wait
}
log "probe: $PROBE steps of each model at once"
train_both probe- "$PROBE" "$PROBE"
SE=$($PY -c "print(max(20, int($TRAIN_S * $(rate "$W/probe-energy") / $B)))") || { log "energy probe failed"; tail -5 "$W/probe-energy.log" >&2; exit 1; }
SD=$($PY -c "print(max(20, int($TRAIN_S * $(rate "$W/probe-denoiser") / $B)))") || { log "denoiser probe failed"; tail -5 "$W/probe-denoiser.log" >&2; exit 1; }
log "training: energy $SE steps, denoiser $SD steps, batch $B, widths [$WIDTHS] mid $MID"
train_both "" "$SE" "$SD"
log "trained: energy $(tail -1 "$W/energy/metrics.jsonl" | cut -c1-120)"
log "trained: denoiser $(tail -1 "$W/denoiser/metrics.jsonl" | cut -c1-120)"

pf=(--estimator pf-ode --dequantize --probes 1 --rtol 1e-4 --atol 1e-4 --batch-size 1000 --no-baseline)
(   # the energy: its default bound on all test images, then its dequantized PF-ODE on the first PF_E
    timeout "$(left)" $PY -m dsmctl eval-nll "$W/energy" --bound-t auto --draws 4 --n-images "$NTEST" --per-image "$W/energy-bound.csv" --json \
        > "$W/energy-bound.json" 2> "$W/energy-bound.log" && log "energy bound: $(nll "$W/energy-bound.json")"
    timeout "$(left)" $PY -m dsmctl eval-nll "$W/energy" "${pf[@]}" --n-images "$PF_E" --per-image "$W/energy-pf.csv" --json \
        > "$W/energy-pf.json" 2> "$W/energy-pf.log" && log "energy PF-ODE: $(nll "$W/energy-pf.json")"
) &
(   # the denoiser: shards of SHARD test images while time is left (a shard is started only before DEADLINE_S)
    for k in $(seq 0 $((NSHARDS - 1))); do
        [ "$(el)" -lt "$DEADLINE_S" ] || { log "denoiser: deadline, $k shards done"; break; }
        timeout "$(left)" $PY -m dsmctl eval-nll "$W/denoiser" "${pf[@]}" --start $((k * SHARD)) --n-images "$SHARD" --per-image "$W/den-pf$k.csv" \
            --json > "$W/den-pf$k.json" 2> "$W/den-pf$k.log" && log "denoiser PF-ODE shard $k: $(nll "$W/den-pf$k.json")"
    done
) &
wait
log "done"
