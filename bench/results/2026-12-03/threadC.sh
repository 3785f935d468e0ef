#!/bin/bash
# Thread C: quickstart flips+EMA with the learned time offset g(t) (lambda=0), one-shot + PF-ODE on the first 200 patches.
set -x
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
E=/work/exp
date
dsmctl train recipes/quickstart.yaml --out $E/q-fe-g --set data.hflip=true --set train.ema=0.999 --set model.time_offset=learned > $E/q-fe-g.train.log 2>&1
date
dsmctl eval-nll $E/q-fe-g --per-image $E/q-fe-g.os.csv --json > $E/q-fe-g.os.json 2> $E/q-fe-g.os.log
dsmctl eval-nll $E/q-fe-g --estimator pf-ode --probes 4 --n-images 200 --batch-size 100 --per-image $E/q-fe-g.pf.csv --json > $E/q-fe-g.pf.json 2> $E/q-fe-g.pf.log
date
