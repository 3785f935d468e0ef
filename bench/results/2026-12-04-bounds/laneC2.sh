#!/usr/bin/env bash
# after laneC: the t_min-only arm with the floor at 3e-7 (sigma = 0.14 bins), testing the ideal-model prediction
while ! grep -q "laneC done" /work/runs/laneC.out 2>/dev/null; do sleep 20; done
/work/runs/arm.sh tmin3e7-s0 --set data.dequantize=false --set noise.t_min=3e-7
echo "laneC2 done" >> /work/runs/laneC2.out
