#!/usr/bin/env bash
# Leave-one-class-out novelty benchmark on Fashion-MNIST (docs/ood.md): for each class K, train the shipped recipe
# for LOCO_STEPS steps on the first 59,000 training images without class K, fit `dsmctl score`'s detector on the
# class-≠K images among the last 1,000 training images (never trained on), and score 500 test images of the other
# nine classes against 500 of class K. Resumable and shareable: a class is claimed by mkdir, so two copies of this
# script (one thread each) split the classes between them; finished classes are skipped.
#   bench/fashion_loco.sh DATA WORK [K ...]        (default: classes 0..9)
#   bench/fashion_loco.sh data/fashion-mnist runs/loco 0 1 2 & bench/fashion_loco.sh data/fashion-mnist runs/loco 3 4 5 &
# Then: python bench/loco_table.py WORK
set -euo pipefail
DATA="${1:?usage: bench/fashion_loco.sh DATA WORK [K ...]}"; WORK="${2:?}"; shift 2
CLASSES="${*:-0 1 2 3 4 5 6 7 8 9}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STEPS="${LOCO_STEPS:-500}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$WORK"
for K in $CLASSES; do
  [ -s "$WORK/loco$K.json" ] && continue
  mkdir "$WORK/claim$K" 2>/dev/null || { [ -f "$WORK/claim$K/pid" ] && kill -0 "$(cat "$WORK/claim$K/pid")" 2>/dev/null && continue; }
  echo $$ > "$WORK/claim$K/pid"
  dsmctl train "$ROOT/recipes/fashion-mnist.yaml" --set data.source="$DATA" --set train.steps="$STEPS" \
      --set data.subset=first:59000 --set "data.exclude_labels=[$K]" --set train.ckpt_every=100 \
      --out "$WORK/run$K" --resume auto > "$WORK/train$K.log" 2>&1
  # the fit images: the class-≠K images among training images 59,000..59,999 (outside the training subset)
  N=$(python -c "import numpy as np,sys; l=np.load(sys.argv[1]+'/train_labels.npy'); print(int((l[59000:]!=int(sys.argv[2])).sum()))" "$DATA" "$K")
  dsmctl score "$WORK/run$K" --outliers "class:$K" --n 500 --fit-images "last:$N" --batch-size 100 \
      --out "$WORK/score$K" --json > "$WORK/loco$K.json.tmp"
  mv "$WORK/loco$K.json.tmp" "$WORK/loco$K.json"
done
