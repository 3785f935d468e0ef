#!/usr/bin/env bash
# push run: the denoiser (PF-ODE) at 12,000 steps (2.6x the CPU of den-s0), checkpoints every 2,000 kept for a curve
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
[ -e /work/runs/fm-denpush-s0/DONE ] || { /work/runs/launch.sh fm-denpush-s0 --set model.kind=denoiser --set loss.mode=single --set model.base=none --set train.steps=12000 --set train.ckpt_every=2000 --set train.keep_last=10 && touch /work/runs/fm-denpush-s0/DONE; }
echo "laneD trained" >> /work/runs/laneD.out
