#!/bin/bash
# Session 20 thread B round 3: seed replicates of the quickstart flips+EMA variants (lambda=1, then lambda=0), seed 1.
set -x
while pgrep -f s6B.sh > /dev/null; do sleep 10; done
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
E=/work/exp
for L in 1 0; do
R=q-fe-c${L}-s1
date
dsmctl train recipes/quickstart.yaml --out $E/$R --set data.hflip=true --set train.ema=0.999 --set loss.consistency_weight=$L --set train.seed=1 > $E/$R.train.log 2>&1
date
dsmctl eval-nll $E/$R --per-image $E/$R.os.csv --json > $E/$R.os.json 2> $E/$R.os.log
date
dsmctl eval-nll $E/$R --estimator pf-ode --probes 4 --n-images 200 --batch-size 100 --per-image $E/$R.pf.csv --json > $E/$R.pf.json 2> $E/$R.pf.log
date
done
