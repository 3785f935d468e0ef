#!/usr/bin/env bash
# The bound against training steps (and so CPU time) of one run, from its kept checkpoints (docs/fashion-mnist.md).
#   bench/bound_curve.sh RUN OUT [T] [N]    T: the bound's t (default 1e-6), N: test images (default 1000)
#   CURVE_PF=1 bench/bound_curve.sh RUN OUT - N   the dequantized PF-ODE instead (a denoiser has no one-shot bound)
set -euo pipefail
RUN="${1:?usage: bench/bound_curve.sh RUN OUT [T] [N]}"; OUT="${2:?}"; T="${3:-1e-6}"; N="${4:-1000}"
mkdir -p "$OUT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
for ck in "$RUN"/checkpoints/step-*; do
  s=$(basename "$ck")
  if [ -n "${CURVE_PF:-}" ]; then
    [ -s "$OUT/curve-$s.json" ] || dsmctl eval-nll "$ck" --estimator pf-ode --dequantize --probes 1 --rtol 1e-4 \
        --atol 1e-4 --n-images "$N" --batch-size 50 --no-baseline --json > "$OUT/curve-$s.json" 2> "$OUT/curve-$s.log"
  else
    [ -s "$OUT/curve-$s.json" ] || dsmctl eval-nll "$ck" --bound-t "$T" --draws 4 --n-images "$N" --no-baseline \
        --json > "$OUT/curve-$s.json" 2> "$OUT/curve-$s.log"
  fi
  python - "$OUT/curve-$s.json" "$s" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); n = d["nll"]
plug = f", plug-in {d['one_shot']['bits_per_dim']:.4f}" if d.get("one_shot") else ""
print(f"{sys.argv[2]}: bound {n['bits_per_dim']:.4f} ± {n['bits_per_dim_stderr']:.4f}{plug}")
PY
done
