#!/usr/bin/env bash
# after the denoiser push run: dequantized PF-ODE on 200 test images per kept checkpoint, then the final model on 1,000
while ! grep -q "laneD trained" /work/runs/laneD.out 2>/dev/null; do sleep 20; done
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1
CURVE_PF=1 bench/bound_curve.sh /work/runs/fm-denpush-s0 /work/runs/out/denpush-curve - 200 > /work/runs/out/denpush-curve.log 2>&1
PF_N=1000 PF_SHARDS=1 bench/fashion_bounds.sh /work/runs/fm-denpush-s0 /work/runs/out/denpush-pf1000 pfode > /work/runs/out/denpush-pf1000.log 2>&1
echo "laneD2 done" >> /work/runs/laneD2.out
