#!/bin/bash
# The pilot's proxy (-log p(x), K = 1000, the first 1,000 validation images) on the weights the
# fine-tune started from (resnet_hvamp_500_bf16 after 250 epochs) and on its result, 2026-12-01.
# Copies of the run folders' config.json, weights/ and metrics.json, so evaluate.py's
# evaluation.json does not land in the run folders. Same images, binarization and seed: paired.
set -x
cd /work/run
PY="env PYTHONPATH=/work/run /work/main/.venv/bin/python"
mkdir -p runs/pilot/final250 runs/pilot/iwae5_final
cp -r runs/likelihood/resnet_hvamp_500_bf16/{config.json,weights,metrics.json} runs/pilot/final250/
# 01:11, nice 19 beside the fine-tune's training (79 s):
$PY trainers/evaluate.py --workdir runs/pilot/final250 --split validation --num-samples 5 --verbose 0      # -> start_validation_K5.json
# 01:14-01:37, nice 19 beside the training (1,342 s):
$PY trainers/evaluate.py --workdir runs/pilot/final250 --split validation --examples 1000 --num-samples 1000 --verbose 0  # -> start_validation1000_K1000.json
cp -r runs/likelihood/resnet_hvamp_500_iwae5/{config.json,weights,metrics.json} runs/pilot/iwae5_final/
# 01:52-01:54, the test-set evaluation paused with SIGSTOP meanwhile (117 s):
$PY trainers/evaluate.py --workdir runs/pilot/iwae5_final --split validation --examples 1000 --num-samples 1000 --verbose 0  # -> tuned_validation1000_K1000.json
