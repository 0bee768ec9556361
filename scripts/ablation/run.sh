#!/usr/bin/env bash
# Short ablation behind the shipped architecture (docs/design.md): 400 CPU steps per variant, seed 0,
# scored by evaluate.py on val patches of the sources the run trained on. Two variants at a time,
# one thread each (about 6 minutes per pair on 2 cores). Results: scripts/ablation/results.txt.
#   bash scripts/ablation/run.sh [OUT_DIR] [VARIANT ...]     (variants: configs/*.json names)
set -eu
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/contrimix-ablation}; shift || true
VARIANTS=${*:-base noact mlp mlpcov lstsq}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
one() {
  rm -rf "$OUT/$1"
  contrimix-aug train he-sources --out "$OUT/$1" --steps 400 --seed 0 --val-every 100000 \
    --checkpoint-every 1000 --no-progress --config "scripts/ablation/configs/$1.json" > "$OUT/$1.log" 2>&1
  python scripts/ablation/evaluate.py "$OUT/$1" | tee -a "$OUT/$1.log"
}
set -- $VARIANTS
while [ $# -gt 0 ]; do
  one "$1" & [ $# -gt 1 ] && { one "$2" & }
  wait; shift; [ $# -gt 0 ] && shift
done
