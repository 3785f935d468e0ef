#!/usr/bin/env bash
# the denoiser push again with the noise floor at 1e-8 (same recipe, steps, seed as fm-denpush-s0 otherwise);
# dequantized PF-ODE from t = 1e-8 on the first 1,000 test images, paired with fm-denpush-s0's out/denpush-pf1000
[ -e /work/runs/fm-denpush8-s0/DONE ] || { /work/runs/launch.sh fm-denpush8-s0 --set model.kind=denoiser --set loss.mode=single --set model.base=none --set train.steps=12000 --set noise.t_min=1e-8 --set train.ckpt_every=2000 --set train.keep_last=10 && touch /work/runs/fm-denpush8-s0/DONE; }
echo "laneH trained" >> /work/runs/laneH.out
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
TIMEFORMAT="user %U sys %S real %R"
O=/work/runs/out/denpush8-pf1000; mkdir -p $O
[ -s $O/pf0.json ] || { time dsmctl eval-nll /work/runs/fm-denpush8-s0 --estimator pf-ode --dequantize --probes 1 --rtol 1e-4 --atol 1e-4 --n-images 1000 --batch-size 50 --no-baseline --per-image $O/pf0.csv --json > $O/pf0.json 2> $O/pf0.log; } 2> $O/pf0.cpu
echo "laneH done" >> /work/runs/laneH.out
