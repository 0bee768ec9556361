#!/usr/bin/env bash
# Prepare .gpu/ (git-ignored) for a device run: the wheels the GPU image lacks, the benchmark journals, and the data
# of one task (a carry holds 64 MiB): `camelyon16` (default: the real-data cache and the CAMELYON16/17 collections)
# or `monuseg` (its tiles at 0.5 um/px, 32 MB, prepared from the sha256-verified data root). Run here once, then pass
# carry=[".gpu"] to the device tool and run `bash scripts/gpu_session.sh` there.
set -euo pipefail
cd "$(dirname "$0")/.."
task="${1:-camelyon16}"
data="${CONTRIMIX_AUG_DATA:-../shared/data}"
rm -rf .gpu && mkdir -p .gpu/home .gpu/whl .gpu/data
case "$task" in
  camelyon16)
    python -m contrimix_aug.cli data fetch cmu1 prostate skin hgsc_nest hgsc_stroma tcia dsb >/dev/null
    home="${CONTRIMIX_AUG_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/contrimix_aug}"
    cp -r "$home/data" .gpu/home/
    cp -r "$data/camelyon16-patches" "$data/camelyon17-tiles" .gpu/data/ ;;  # bbbc021 (130 MB) exceeds the carry
  monuseg)
    CONTRIMIX_AUG_DATA="$data" PYTHONPATH=benchmarks python benchmarks/dg/tasks/monuseg.py .gpu/monuseg_tiles.npz ;;
  *) echo "unknown task $task (camelyon16 or monuseg)" >&2; exit 2 ;;
esac
[ -d runs/benchmarks ] && cp -r runs/benchmarks .gpu/work  # the benchmark journals, to continue on the GPU
rm -rf .gpu/work/*/folds/*.work 2>/dev/null || true  # per-fold training folders: the finished models suffice
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/whl kornia==0.9.0 kornia_rs==0.2.0 albumentations==2.0.8 torchstain==1.4.1 \
  $([ "$task" = camelyon16 ] && echo imagecodecs==2026.3.6 tifffile)
du -sh .gpu
