#!/bin/bash
# Session 20 thread B: gsm16 + EMA 0.999 (same steps, seed) vs truth.
set -x
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
E=/work/exp; R=gsm16-e
date
dsmctl train recipes/gsm16.yaml --out $E/$R --set train.ema=0.999 > $E/$R.train.log 2>&1
date
dsmctl eval-nll $E/$R --per-image $E/$R.os.csv --json > $E/$R.os.json 2> $E/$R.os.log
date
dsmctl eval-nll $E/$R --estimator pf-ode --probes 4 --n-images 100 --per-image $E/$R.pf.csv --json > $E/$R.pf.json 2> $E/$R.pf.log
date
