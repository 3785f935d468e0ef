#!/usr/bin/env bash
# usage: launch.sh NAME [--set k=v ...]   (one thread; resumable with --resume auto); CPU seconds into NAME.cpu
name=$1; shift
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
TIMEFORMAT="user %U sys %S real %R"
{ time dsmctl train recipes/fashion-mnist.yaml --set data.source=/work/data/fashion-mnist "$@" --out /work/runs/$name --resume auto > /work/runs/$name.log 2>&1 ; } 2>> /work/runs/$name.cpu
