#!/bin/bash
# The proxy (-log p(x), K = 1000, the first 1,000 validation images; the same seed) on
# resnet_hvamp_500_iwae20's kept weights, paired per image against the same proxy of the weights it
# started from (resnet_hvamp_500_iwae10's, committed in ../../resnet_hvamp_500_iwae10/proxy/).
# Validation images: deciding whether to spend ~1.7 h on the test evaluation uses no test image.
# It runs on a copy of the run folder's config.json, weights/ and metrics.json, so its
# evaluation.json does not land in the run folder.
set -ex
OUT=$(cd "$(dirname "$0")" && pwd)
START="$OUT/../../resnet_hvamp_500_iwae10/proxy/resnet_hvamp_500_iwae10_validation1000_K1000.npz"
cd /work/run
PY="env PYTHONPATH=/work/run /work/main/.venv/bin/python"
run=resnet_hvamp_500_iwae20
rm -rf runs/pilot/$run && mkdir -p runs/pilot/$run
cp -r runs/likelihood/$run/{config.json,weights,metrics.json} runs/pilot/$run/
$PY trainers/evaluate.py --workdir runs/pilot/$run --split validation --examples 1000 --num-samples 1000 --verbose 0
cp runs/pilot/$run/evaluation.json "$OUT/${run}_validation1000_K1000.json"
cp runs/pilot/$run/evaluation_per_example.npz "$OUT/${run}_validation1000_K1000.npz"
$PY benchmarks/paired_likelihood.py "$OUT/${run}_validation1000_K1000.npz" "$START" | tee "$OUT/paired.txt"
