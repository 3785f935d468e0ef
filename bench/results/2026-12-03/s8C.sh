#!/bin/bash
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1
cd /work/exp
for R in gsm16 gsm16-ec04 gsm16-g; do
  date; python /work/main/bench/score_errors.py $R --n 1000 --per-decade 3 > $R.errors.md 2> $R.errors.log
done
date
