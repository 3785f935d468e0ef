#!/bin/bash
# Thread B: gsm16 testbed, quickstart lambda=0.4 (flips+EMA), then the Fashion denoiser baseline.
set -x
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
E=/work/exp
date
dsmctl train recipes/gsm16.yaml --out $E/gsm16 > $E/gsm16.train.log 2>&1
date
dsmctl eval-nll $E/gsm16 --per-image $E/gsm16.os.csv --json > $E/gsm16.os.json 2> $E/gsm16.os.log
date
dsmctl eval-nll $E/gsm16 --estimator pf-ode --probes 4 --n-images 100 --per-image $E/gsm16.pf.csv --json > $E/gsm16.pf.json 2> $E/gsm16.pf.log
date
