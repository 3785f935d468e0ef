#!/usr/bin/env bash
# All benchmarks at the paper's settings on one CUDA GPU (batch 128, 3x64x64, the paper UNet, fp32), in
# about 6-8 minutes on an H100-class GPU; prints one table and appends it to bench/RESULTS.md.
#
#   bash bench/gpu.sh                 # device cuda:0 (or CUDA_VISIBLE_DEVICES)
#   MODEL=runs/imagenet64-xxxx bash bench/gpu.sh   # also time eval-nll on a trained model (else untrained)
#   STEPS=50 bash bench/gpu.sh        # fewer timed steps per model (default 120)
#   DEVICE=cpu SIDE=16 BATCH=2 STEPS=2 NLL_IMAGES=2 NO_APPEND=1 bash bench/gpu.sh   # smoke test on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
SIDE=${SIDE:-64}
BATCH=${BATCH:-128}
NLL_IMAGES=${NLL_IMAGES:-128}
if [[ $DEVICE == cuda* ]] && ! $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "bench/gpu.sh: no CUDA device visible to torch (torch.cuda.is_available() is False); this script needs one GPU." >&2
    echo "On a CPU use the scripts one by one (see docs/benchmarks.md)." >&2
    exit 2
fi
STEPS=${STEPS:-120}
OUT=${OUT:-$(mktemp -d -t dsmctl-gpu-bench-XXXX)}
mkdir -p "$OUT"
start=$(date +%s)
log() { echo "[gpu.sh $(( $(date +%s) - start ))s] $*" >&2; }

common=(--device "$DEVICE" --sides "$SIDE" --batches "$BATCH" --no-append)
log "1/5 energy vs denoiser step, fused and plain-autograd norm interleaved, $STEPS steps each"
$PY bench/step.py "${common[@]}" --repeats "$STEPS" --warmup 3 --also-reference --json "$OUT/step.json"
log "2/5 the same in channels-last"
$PY bench/step.py "${common[@]}" --repeats $(( (STEPS + 1) / 2 )) --warmup 2 --channels-last --json "$OUT/step-channels-last.json"
log "3/5 scaling with image size and width"
$PY bench/scaling.py --device "$DEVICE" --batches "$BATCH" --width-mults 0.5,1 --repeats $(( (STEPS + 7) / 8 )) \
    --warmup 2 --no-append --json "$OUT/scaling.json"
log "4/5 eval-nll: one-shot vs PF-ODE"
if [[ -n "${MODEL:-}" ]]; then
    $PY bench/nll.py --device "$DEVICE" --model "$MODEL" --n-images "$NLL_IMAGES" --batch-size "$BATCH" --no-append \
        --json "$OUT/nll.json"
else
    # An untrained network is not a consistent density: its flow can be stiff, so cap the solver (cost only).
    $PY bench/nll.py --device "$DEVICE" --channels 3 --side "$SIDE" --widths 64,128,256,512 --n-images "$NLL_IMAGES" \
        --batch-size "$BATCH" --max-steps 100 --no-append --json "$OUT/nll.json"
fi
log "5/5 loader (host side, 2 cores)"
$PY bench/loader.py --steps $(( STEPS > 200 ? 200 : STEPS + 10 )) --repeats 3 --no-append --json "$OUT/loader.json"
log "done; summary:"
$PY bench/summary.py "$OUT" ${NO_APPEND:+--no-append} --note "bench/gpu.sh, $(( $(date +%s) - start )) s in all"
