#!/usr/bin/env bash
# usage: arm.sh ARM [--set ...]: train fm-ARM, bound on 10,000, PF-ODE on 200
arm=$1; shift
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
[ -s /work/runs/fm-$arm/DONE ] || { /work/runs/launch.sh fm-$arm "$@" && touch /work/runs/fm-$arm/DONE; }
TIMEFORMAT="user %U sys %S real %R"
{ time bench/fashion_bounds.sh /work/runs/fm-$arm /work/runs/out/$arm bound > /work/runs/out/$arm.log 2>&1 ; } 2>> /work/runs/out/$arm.cpu
{ time PF_N=200 PF_SHARDS=1 bench/fashion_bounds.sh /work/runs/fm-$arm /work/runs/out/$arm-pf200 pfode > /work/runs/out/$arm-pf.log 2>&1 ; } 2>> /work/runs/out/$arm-pf.cpu
