#!/usr/bin/env bash
# The development rescoring of docs/ood.md ("Orientation features: measured", last table): the 500-step CPU
# leave-one-class-out models of bench/fashion_loco.sh (WORK/runK) scored with every orientation feature.
#   bash bench/results/2026-12-04-ood-dev/devscore.sh data/fashion-mnist runs/loco digits/digits.csv.gz 0 1 2 … 9
# then: python bench/ood_refit.py runs/loco/dev{0,1,2,3,4,5,6,7,8,9} --sets class --mean
set -euo pipefail
DATA=$1 WORK=$2 DIGITS=$3; shift 3
for K in "$@"; do
  N=$(python -c "import numpy as np,sys; l=np.load(sys.argv[1]+'/train_labels.npy'); print(int((l[59000:]!=int(sys.argv[2])).sum()))" "$DATA" "$K")
  SETS="class:$K"; [ "$K" = 8 ] && SETS="class:8,upside-down,digits:$DIGITS"
  [ -s "$WORK/dev$K.json" ] || { dsmctl score "$WORK/run$K" --outliers "$SETS" --n 500 --fit-images "last:$N" \
      --batch-size 250 --transforms vflip,rot90,rot270 --out "$WORK/dev$K" --no-plot --json > "$WORK/dev$K.json.tmp" \
      2> "$WORK/dev$K.log" && mv "$WORK/dev$K.json.tmp" "$WORK/dev$K.json"; }
done
