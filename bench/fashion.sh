#!/usr/bin/env bash
# Fashion-MNIST end to end (docs/fashion-mnist.md): every number and figure of that page, in order.
#   bench/fashion.sh WORK [STAGE...]      stages: prepare train eval pfode figures ood (default: all)
# Resumable: training resumes from its newest checkpoint (--resume auto), and finished outputs are kept.
# Two trainings run side by side with one thread each (the paired comparison of the two objectives).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:?usage: bench/fashion.sh WORK [STAGE...]}"; shift || true
STAGES="${*:-prepare train eval pfode figures ood}"
mkdir -p "$WORK" && cd "$WORK" && mkdir -p out figs
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
has() { [[ " $STAGES " == *" $1 "* ]]; }
PF_N="${PF_N:-64}"          # PF-ODE images (4 Hutchinson probes each); the one-shot numbers use all 10,000
RECIPE="$ROOT/recipes/fashion-mnist.yaml"

if has prepare; then
  [ -f data/fashion-mnist/manifest.json ] || dsmctl prepare fashion-mnist:/usr/share/datasets/fashion-mnist --out data/fashion-mnist
fi
if has train; then
  # fm-c0: the shipped recipe (the paper's objective); fm-c1: the same with the consistency penalty.
  dsmctl train "$RECIPE" --out runs/fm-c0 > fm-c0.log 2>&1 &
  dsmctl train "$RECIPE" --out runs/fm-c1 --set loss.consistency_weight=1 > fm-c1.log 2>&1 &
  wait
fi
if has eval; then
  for r in c0 c1; do
    [ -s out/$r.test.json ] || dsmctl eval-nll runs/fm-$r --per-image out/$r.os.csv --json > out/$r.test.json
    [ -s out/$r.deq.json ] || dsmctl eval-nll runs/fm-$r --estimator dequantized --draws 4 --json > out/$r.deq.json
    [ -s out/$r.train.json ] || dsmctl eval-nll runs/fm-$r --split train --n-images 10000 --no-baseline --json > out/$r.train.json
    [ -s out/$r.cons.json ] || dsmctl eval-nll runs/fm-$r --consistency --n-images "$PF_N" --json > out/$r.cons.json
  done
fi
if has pfode; then
  mkdir -p out
  for r in c0 c1; do
    [ -s out/$r.pf.json ] || dsmctl eval-nll runs/fm-$r --estimator pf-ode --probes 4 --n-images "$PF_N" \
      --batch-size 64 --per-image out/$r.pf.csv --json > out/$r.pf.json &
  done
  wait
  for r in c0 c1; do python "$ROOT/bench/paired.py" out/$r.pf.csv out/$r.os.csv; done
fi
if has figures; then
  python "$ROOT/bench/plot_metrics.py" figs/fashion-loss.png runs/fm-c0=paper-objective runs/fm-c1=consistency-penalty
  dsmctl eval-nll runs/fm-c0 --no-baseline --plots figs/ > /dev/null
  dsmctl dimension runs/fm-c0 --t-grid 1e-4:10:11 --draws 50 --n-images 8 --plot figs/fashion-deff.png --json > out/dim.json
  dsmctl sample runs/fm-c0 --n 64 --out samples-ode --json > out/sample-ode.json
  dsmctl sample runs/fm-c0 --n 64 --sampler mala --out samples-mala --json > out/sample-mala.json
fi
if has ood; then
  python "$ROOT/bench/fashion_ood.py" runs/fm-c0 --fashion data/fashion-mnist --work ood --n 2000
fi
