#!/bin/bash
while pgrep -f s6A.sh > /dev/null; do sleep 10; done
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1
cd /work/exp && python /work/main/bench/score_errors.py gsm16-e6k --n 1000 --per-decade 3 > gsm16-e6k.errors.md 2> gsm16-e6k.errors.log
python /work/main/bench/score_errors.py gsm16-e --n 1000 --per-decade 3 > gsm16-e.errors.md 2> gsm16-e.errors.log
date
