#!/bin/bash
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
E=/work/exp; R=q-fe-c0-s1
dsmctl eval-nll $E/$R --estimator pf-ode --probes 4 --start 200 --n-images 150 --batch-size 75 --per-image $E/$R.pf2.csv --json > $E/$R.pf2.json 2> $E/$R.pf2.log &
dsmctl eval-nll $E/$R --estimator pf-ode --probes 4 --start 350 --n-images 150 --batch-size 75 --per-image $E/$R.pf3.csv --json > $E/$R.pf3.json 2> $E/$R.pf3.log &
wait
date
