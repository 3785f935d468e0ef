#!/usr/bin/env bash
# second seed of the t_min-only arm (train, bound on 10,000, PF-ODE on 200)
/work/runs/arm.sh tmin-s1 --set data.dequantize=false --set train.seed=1
echo "laneC done" >> /work/runs/laneC.out
