#!/usr/bin/env bash
# PF-ODE start t_min for the denoiser's dequantized bound, chosen on the last 256 training images (never test)
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
O=/work/runs/out/denpush-tmin
one() { [ -s $O/train-$1.json ] || dsmctl eval-nll /work/runs/fm-denpush-s0 --split train --start 59744 --n-images 256 --estimator pf-ode --dequantize --t-min $1 --probes 1 --rtol 1e-4 --atol 1e-4 --batch-size 64 --no-baseline --per-image $O/train-$1.csv --json > $O/train-$1.json 2> $O/train-$1.log; }
one 1e-6 & one 1e-7 & wait
one 1e-8 & one 1e-9 & wait
echo done > $O/DONE
