#!/bin/bash
# Session 20 thread A round 2: gsm16 + EMA, 6000 steps (4x the recipe) vs truth (after s5A).
set -x
while pgrep -f s5A.sh > /dev/null; do sleep 10; done
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
E=/work/exp; R=gsm16-e6k
date
dsmctl train recipes/gsm16.yaml --out $E/$R --set train.ema=0.999 --set train.steps=6000 --set train.ckpt_every=1000 > $E/$R.train.log 2>&1
date
dsmctl eval-nll $E/$R --per-image $E/$R.os.csv --json > $E/$R.os.json 2> $E/$R.os.log
date
dsmctl eval-nll $E/$R --estimator pf-ode --probes 4 --n-images 100 --per-image $E/$R.pf.csv --json > $E/$R.pf.json 2> $E/$R.pf.log
date
