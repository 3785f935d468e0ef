#!/usr/bin/env bash
# after laneC2: the truncated-normal proposal (scale chosen on training images) for the two t_min-only arms
while ! grep -q "laneC2 done" /work/runs/laneC2.out 2>/dev/null; do sleep 20; done
cd /work/main && . .venv/bin/activate
for a in tmin3e7-s0 tmin-s0; do bench/fashion_bounds.sh /work/runs/fm-$a /work/runs/out/$a truncnorm > /work/runs/out/$a-tn.log 2>&1; done
echo "laneC3 done" >> /work/runs/laneC3.out
