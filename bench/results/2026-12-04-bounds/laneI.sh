#!/usr/bin/env bash
# the t_min 1e-8 denoiser's dequantized PF-ODE on test images 1,000-2,999 (two shards in parallel)
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
O=/work/runs/out/denpush8-pf1000
for k in 1 2; do
  [ -s $O/pf$k.json ] || dsmctl eval-nll /work/runs/fm-denpush8-s0 --estimator pf-ode --dequantize --probes 1 --rtol 1e-4 --atol 1e-4 --start $((k*1000)) --n-images 1000 --batch-size 50 --no-baseline --per-image $O/pf$k.csv --json > $O/pf$k.json 2> $O/pf$k.log &
done
wait; echo "laneI done" >> /work/runs/laneI.out
