#!/bin/bash
# IWAE fine-tuning pilot: base = resnet_hvamp_500_bf16's best epoch (140) so far.
set -x
cd /work/run
PY="env PYTHONPATH=/work/run /work/main/.venv/bin/python"
P=runs/pilot
proxy() { $PY trainers/evaluate.py --workdir $1 --split validation --examples 1000 --num-samples 1000 --verbose 0; }
date; proxy $P/base
for k in 5 1; do
  date
  $PY trainers/train.py --config $P/base/config.json --workdir $P/k$k --initial-weights $P/base \
      --importance-samples $k --warmup-epochs 0 --epochs 4 --learning-rate 1e-4 --learning-rate-schedule cosine --verbose 2
  date; proxy $P/k$k
done
date
