#!/usr/bin/env bash
cd /work/runs
until [ -f fm-shipped-s0/model.safetensors ] && [ -f fm-both-s0/model.safetensors ]; do sleep 15; done
nohup ./launch.sh fm-deq-s0 --set data.dequantize=true > /dev/null 2>&1 &
nohup ./launch.sh fm-tmin-s0 --set noise.t_min=1e-6 > /dev/null 2>&1 &
nohup ./launch.sh fm-both-s1 --set data.dequantize=true --set noise.t_min=1e-6 --set train.seed=1 > /dev/null 2>&1 &
. /work/main/.venv/bin/activate
export OMP_NUM_THREADS=1
mkdir -p out
/work/main/bench/fashion_bounds.sh fm-shipped-s0 out/shipped-s0 > out/shipped-s0.log 2>&1 &
/work/main/bench/fashion_bounds.sh fm-both-s0 out/both-s0 > out/both-s0.log 2>&1 &
wait
