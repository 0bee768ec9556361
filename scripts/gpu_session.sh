#!/usr/bin/env bash
# One device call for a session that is lent a GPU (prepare with scripts/prepare_gpu_carry.sh; carry [".gpu"]):
# the GPU speed targets, then the full real-shift benchmarks on the GPU (results in $OUT, to commit under
# benchmarks/results/ and docs/benchmarks/ with "measured on the GPU" in the notes).
#   bash scripts/gpu_session.sh
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD CONTRIMIX_AUG_HOME=$PWD/.gpu/home CONTRIMIX_AUG_DATA=$PWD/.gpu/data PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi -L
# 1. GPU throughput (>= 20,000 img/s at 96 px, batch 256) and DenseNet-121 step overhead (<= 10 %)
timeout 150 python3 benchmarks/throughput.py --devices cuda --weights camelyon --methods hed-light kornia-colorjitter \
  --out "$OUT" || echo "throughput failed"
# 2. the pre-registered real-shift protocols, 10 seeds, on the GPU
for ds in camelyon16; do  # bbbc021 needs its 130 MB data root, more than a carry holds
  timeout 200 python3 benchmarks/domain_generalization.py --dataset "$ds" --device cuda --out "$OUT" \
    --name "dg_${ds}_gpu" || echo "$ds failed"
done
