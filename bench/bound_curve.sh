#!/usr/bin/env bash
# The bound against training steps (and so CPU time) of one run, from its kept checkpoints (docs/fashion-mnist.md).
#   bench/bound_curve.sh RUN OUT [T] [N]    T: the bound's t (default 1e-6), N: test images (default 1000)
set -euo pipefail
RUN="${1:?usage: bench/bound_curve.sh RUN OUT [T] [N]}"; OUT="${2:?}"; T="${3:-1e-6}"; N="${4:-1000}"
mkdir -p "$OUT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
for ck in "$RUN"/checkpoints/step-*; do
  s=$(basename "$ck")
  [ -s "$OUT/curve-$s.json" ] || dsmctl eval-nll "$ck" --bound-t "$T" --draws 4 --n-images "$N" --no-baseline \
      --json > "$OUT/curve-$s.json" 2> "$OUT/curve-$s.log"
  python - "$OUT/curve-$s.json" "$s" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); n = d["nll"]
print(f"{sys.argv[2]}: bound {n['bits_per_dim']:.4f} ± {n['bits_per_dim_stderr']:.4f}, plug-in {d['one_shot']['bits_per_dim']:.4f}")
PY
done
