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
# 2. the pre-registered real-shift protocol, continued from the journal carried in .gpu/work (runs/benchmarks:
#    finished runs are skipped, new ones journaled); the journal comes back in $OUT/work to copy to runs/benchmarks
mkdir -p "$OUT/work" && cp -r .gpu/work/. "$OUT/work/" 2>/dev/null || true
for extra in "" "--post-hoc"; do  # bbbc021 needs its 130 MB data root, more than a carry holds
  timeout 200 python3 benchmarks/domain_generalization.py --dataset camelyon16 $extra --device cuda --out "$OUT" \
    --work "$OUT/work" || echo "camelyon16 $extra stopped (journaled; rerun continues)"
done
