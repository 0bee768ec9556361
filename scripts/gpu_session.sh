#!/usr/bin/env bash
# One device call (about 8 minutes on an H100/H200): GPU speed targets, then the shipped H&E recipe with
# more steps and its leave-one-source-out runs. Prepare with scripts/prepare_gpu_carry.sh; run with carry=[".gpu"]:
#   bash scripts/gpu_session.sh            (results land in $OUT: throughput JSON/MD and runs.tgz)
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD CONTRIMIX_AUG_HOME=$PWD/.gpu/home PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi -L
# 1. issue 5: GPU throughput (>= 20,000 img/s at 96 px, batch 256) and DenseNet-121 step overhead (<= 10 %)
timeout 150 python3 benchmarks/throughput.py --devices cuda --methods hed-jitter kornia-colorjitter --out "$OUT" || echo "throughput failed"
# 2. the shipped recipe at 2000 steps with its six leave-one-source-out runs, all sharing the GPU
python3 scripts/parallel_train.py --out "$OUT/runs" --deadline 300 --steps 2000 --device cuda --configs he-lite
cd "$OUT" && tar czf runs.tgz runs && rm -rf runs
