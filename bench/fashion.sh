#!/usr/bin/env bash
# Fashion-MNIST end to end (docs/fashion-mnist.md): every number and figure of that page, in order.
#   bench/fashion.sh WORK [STAGE...]      stages: prepare train eval pfode figures ood (default: all)
# Resumable: training resumes from its newest checkpoint (--resume auto), and finished outputs are kept.
# Two trainings run side by side with one thread each (the paired comparison of the two objectives).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:?usage: bench/fashion.sh WORK [STAGE...]}"; shift || true
STAGES="${*:-prepare train eval pfode figures ood}"
mkdir -p "$WORK" && cd "$WORK"
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
has() { [[ " $STAGES " == *" $1 "* ]]; }
PF_N="${PF_N:-100}"          # PF-ODE images (4 Hutchinson probes each); the one-shot numbers use all 10,000
RECIPE="$ROOT/recipes/fashion-mnist.yaml"

if has prepare; then
  dsmctl prepare fashion-mnist:/usr/share/datasets/fashion-mnist --out data/fashion-mnist
fi
if has train; then
  # fm-c1: the shipped recipe (consistency penalty on); fm-c0: the same with the paper's objective (penalty off).
  dsmctl train "$RECIPE" --out runs/fm-c1 > fm-c1.log 2>&1 &
  dsmctl train "$RECIPE" --out runs/fm-c0 --set loss.consistency_weight=0 > fm-c0.log 2>&1 &
  wait
fi
if has eval; then
  for r in c0 c1; do
    [ -s out/$r.test.json ] || dsmctl eval-nll runs/fm-$r --per-image out/$r.os.csv --json > out/$r.test.json
    [ -s out/$r.train.json ] || dsmctl eval-nll runs/fm-$r --split train --n-images 10000 --json > out/$r.train.json
    [ -s out/$r.deq.json ] || dsmctl eval-nll runs/fm-$r --estimator dequantized --draws 4 --json > out/$r.deq.json
    [ -s out/$r.cons.json ] || dsmctl eval-nll runs/fm-$r --consistency --n-images "$PF_N" --json > out/$r.cons.json
  done
fi
if has pfode; then
  mkdir -p out
  for r in c0 c1; do
    [ -s out/$r.pf.json ] || dsmctl eval-nll runs/fm-$r --estimator pf-ode --probes 4 --n-images "$PF_N" \
      --batch-size 50 --per-image out/$r.pf.csv --json > out/$r.pf.json &
  done
  wait
  for r in c0 c1; do python "$ROOT/bench/paired.py" out/$r.pf.csv out/$r.os.csv; done
fi
if has figures; then
  python "$ROOT/bench/plot_metrics.py" figs/fashion-loss.png runs/fm-c1=consistency runs/fm-c0=paper
  dsmctl eval-nll runs/fm-c1 --no-baseline --plots figs/ > /dev/null
  dsmctl dimension runs/fm-c1 --t-grid 1e-4:10:11 --draws 100 --n-images 8 --plot figs/fashion-deff.png --json > out/dim.json
  dsmctl sample runs/fm-c1 --n 64 --out samples-ode --json > out/sample-ode.json
  dsmctl sample runs/fm-c1 --n 64 --sampler mala --out samples-mala --json > out/sample-mala.json
fi
if has ood; then
  python "$ROOT/bench/fashion_ood.py" runs/fm-c1 --fashion data/fashion-mnist --work ood --n 2000
fi
