#!/bin/bash
# The proxy (-log p(x), K = 1000, the first 1,000 validation images; the same seed) on the weights
# resnet_hvamp_500_iwae10 started from (resnet_hvamp_500_iwae5's kept weights) and on its result.
# Validation images, so choosing whether to spend ~1.7 h on the test evaluation uses no test image.
# evaluate.py now keeps the per-image values (evaluation_per_example.npz), so the difference gets a
# paired standard error (benchmarks/paired_likelihood.py). It runs on copies of the run folders'
# config.json, weights/ and metrics.json, so its evaluation.json does not land in the run folders.
# Run 04:55-05:01 on 2026-12-01 at commit 1f572a4, beside a nice'd CI run. iwae5 scored 221.2576,
# as in its own proxy (221.26, run the day before with the same flags): the samples are seeded.
set -ex
OUT=$(cd "$(dirname "$0")" && pwd)
cd /work/run
PY="env PYTHONPATH=/work/run /work/main/.venv/bin/python"
for run in resnet_hvamp_500_iwae5 resnet_hvamp_500_iwae10; do
  mkdir -p runs/pilot/$run
  cp -r runs/likelihood/$run/{config.json,weights,metrics.json} runs/pilot/$run/
  $PY trainers/evaluate.py --workdir runs/pilot/$run --split validation --examples 1000 --num-samples 1000 --verbose 0
  cp runs/pilot/$run/evaluation.json "$OUT/${run}_validation1000_K1000.json"
  cp runs/pilot/$run/evaluation_per_example.npz "$OUT/${run}_validation1000_K1000.npz"
done
$PY benchmarks/paired_likelihood.py runs/pilot/resnet_hvamp_500_iwae10/evaluation_per_example.npz \
  runs/pilot/resnet_hvamp_500_iwae5/evaluation_per_example.npz | tee "$OUT/paired.txt"
