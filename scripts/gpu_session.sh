#!/usr/bin/env bash
# One device call for a session that is lent a GPU (prepare with `scripts/prepare_gpu_carry.sh [camelyon16|monuseg]`;
# carry [".gpu"]): the GPU speed targets, then the registered real-shift benchmark whose data was carried, continued
# from the journals carried in .gpu/work (finished runs are skipped, new ones journaled; the journals come back in
# $OUT/work, to copy to runs/benchmarks, and the results in $OUT, to publish with "measured on the GPU" in the notes).
#   bash scripts/gpu_session.sh
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD CONTRIMIX_AUG_HOME=$PWD/.gpu/home CONTRIMIX_AUG_DATA=$PWD/.gpu/data PYTHONUNBUFFERED=1
export OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi -L
# 1. GPU throughput (>= 20,000 img/s at 96 px, batch 256) and DenseNet-121 step overhead (<= 10 %)
timeout 150 python3 benchmarks/throughput.py --devices cuda --weights camelyon --methods hed-light kornia-colorjitter \
  --out "$OUT" || echo "throughput failed"
mkdir -p "$OUT/work" && cp -r .gpu/work/. "$OUT/work/" 2>/dev/null || true
if [ -f .gpu/monuseg_tiles.npz ]; then
  # 2. MoNuSeg: one process per (variant, seed), twelve at a time on the GPU (each run is small; one CPU thread
  #    each for the CPU-side peers and metrics, on 16 cores)
  export CONTRIMIX_AUG_MONUSEG_TILES=$PWD/.gpu/monuseg_tiles.npz
  for v in official few-sites; do  # train each variant's per-fold ContriMix once, before the parallel runs
    timeout 120 python3 benchmarks/domain_generalization.py --dataset monuseg --heldout $v --seeds 0 \
      --methods contrimix-fold --device cuda --no-plot --out "$OUT" --work "$OUT/work" --threads 2 || true
  done
  for s in 0 1 2 3 4 5 6 7 8 9; do for v in official few-sites; do echo "$v $s"; done; done | \
    timeout 360 xargs -P 12 -L 1 sh -c 'python3 benchmarks/domain_generalization.py --dataset monuseg --heldout $0 \
      --seeds $1 --device cuda --no-plot --threads 1 --out "$OUT/parts" --work "$OUT/work" >"$OUT/monuseg_$0_$1.log" 2>&1'
  python3 benchmarks/domain_generalization.py --dataset monuseg --from-journal --device cuda --out "$OUT" \
    --work "$OUT/work" || echo "monuseg publish failed"
else
  # 2. CAMELYON16 (bbbc021 needs its 130 MB data root, more than a carry holds)
  for extra in "" "--post-hoc"; do
    timeout 200 python3 benchmarks/domain_generalization.py --dataset camelyon16 $extra --device cuda --out "$OUT" \
      --work "$OUT/work" || echo "camelyon16 $extra stopped (journaled; rerun continues)"
  done
fi
