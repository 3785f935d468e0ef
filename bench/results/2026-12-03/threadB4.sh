#!/bin/bash
set -x
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
E=/work/exp
while kill -0 4513 2>/dev/null; do sleep 10; done
date
dsmctl eval-nll $E/gsm16-g --per-image $E/gsm16-g.os.csv --json > $E/gsm16-g.os.json 2> $E/gsm16-g.os.log
dsmctl eval-nll $E/gsm16-g --estimator pf-ode --probes 4 --n-images 100 --per-image $E/gsm16-g.pf.csv --json > $E/gsm16-g.pf.json 2> $E/gsm16-g.pf.log
date
# Denoiser at c0's compute: c0 ran 1,800 energy steps (3,434 s, one thread). Time 30 energy steps and 30 denoiser
# steps back to back under the same load; the denoiser gets 1,800 x (energy step / denoiser step) steps.
DEN="--set model.kind=denoiser --set loss.mode=single --set model.base=none"
P="--set train.steps=40 --set train.log_every=10 --set train.ckpt_every=40"
dsmctl train recipes/fashion-mnist.yaml --out $E/en-probe $P > $E/en-probe.log 2>&1
dsmctl train recipes/fashion-mnist.yaml --out $E/den-probe $DEN $P > $E/den-probe.log 2>&1
STEPS=$(python -c "
import json
def per_step(run):
    r = {d['step']: d['elapsed_s'] for d in map(json.loads, open(run + '/metrics.jsonl')) if 'elapsed_s' in d}
    return (r[40] - r[10]) / 30
e, dn = per_step('$E/en-probe'), per_step('$E/den-probe')
print(int(1800 * e / dn) // 100 * 100)")
echo "denoiser steps at c0's compute: $STEPS"
date
dsmctl train recipes/fashion-mnist.yaml --out $E/fm-den $DEN --set train.steps=$STEPS > $E/fm-den.train.log 2>&1
date
dsmctl eval-nll $E/fm-den --estimator pf-ode --probes 4 --n-images 64 --batch-size 64 --per-image $E/fm-den.pf.csv --json > $E/fm-den.pf.json 2> $E/fm-den.pf.log
date
