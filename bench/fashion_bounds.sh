#!/usr/bin/env bash
# The honest-likelihood numbers of one Fashion-MNIST model (docs/fashion-mnist.md, "Bounds"): every eval-nll run
# behind one row of the table, in order. Resumable: finished outputs are kept.
#   bench/fashion_bounds.sh RUN OUT [stages]     stages: bound conv truncnorm pfode (default: bound conv truncnorm)
#   PF_N=200 PF_SHARDS=2 bench/fashion_bounds.sh RUN OUT pfode   # dequantized PF-ODE, shards in parallel
set -euo pipefail
RUN="${1:?usage: bench/fashion_bounds.sh RUN OUT [stages]}"; OUT="${2:?}"; shift 2
STAGES="${*:-bound conv truncnorm}"
has() { [[ " $STAGES " == *" $1 "* ]]; }
mkdir -p "$OUT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# 1. The default bound on all 10,000 test images (t of p_t chosen on the last 256 training images), the plug-in
#    beside it, per image.
if has bound; then
  [ -s "$OUT/bound.json" ] || dsmctl eval-nll "$RUN" --bound-t auto --draws 4 --per-image "$OUT/bound.csv" --json > "$OUT/bound.json"
fi
# (t of the bound stage: needed by stages 2 and 3 only)
if has conv || has truncnorm; then
  T=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['nll']['bound_t'])" "$OUT/bound.json")
fi
# 2. Convergence in K (1, 4, 16, 64) on the first 500 test images, at the chosen t, and p_0's bound beside it.
if has conv; then
  [ -s "$OUT/conv.json" ] || dsmctl eval-nll "$RUN" --bound-t "$T" --draws 64 --n-images 500 --no-baseline --json > "$OUT/conv.json"
  [ -s "$OUT/conv_t0.json" ] || dsmctl eval-nll "$RUN" --bound-t 0 --draws 16 --n-images 500 --no-baseline --json > "$OUT/conv_t0.json"
fi
# 3. The truncated-normal proposal, its scale chosen on the same held-out training images.
if has truncnorm; then
  [ -s "$OUT/truncnorm.json" ] || dsmctl eval-nll "$RUN" --bound-t "$T" --proposal truncnorm --proposal-scale auto \
      --draws 16 --n-images 1000 --no-baseline --json > "$OUT/truncnorm.json"
fi
# 4. Dequantized PF-ODE (a bound for the ODE's density), paired with the one-shot K = 1 bound at the same x + u.
if has pfode; then
  N="${PF_N:-200}"; S="${PF_SHARDS:-2}"; per=$(( (N + S - 1) / S ))
  for k in $(seq 0 $((S - 1))); do
    [ -s "$OUT/pf$k.json" ] || dsmctl eval-nll "$RUN" --estimator pf-ode --dequantize --probes 1 --rtol 1e-4 --atol 1e-4 \
        --start $((k * per)) --n-images "$per" --batch-size 50 --no-baseline --per-image "$OUT/pf$k.csv" --json > "$OUT/pf$k.json" &
  done
  wait
fi
