#!/usr/bin/env bash
# Prepare .gpu/ (git-ignored) for a device run: the real-data cache, the labelled collections and the wheels the
# GPU image lacks. Run here once, then pass carry=[".gpu"] to the device tool and run scripts/gpu_session.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${CONTRIMIX_AUG_DATA:-../shared/data}"
python -m contrimix_aug.cli data fetch cmu1 prostate skin hgsc_nest hgsc_stroma tcia dsb >/dev/null
home="${CONTRIMIX_AUG_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/contrimix_aug}"
rm -rf .gpu && mkdir -p .gpu/home .gpu/whl .gpu/data
cp -r "$home/data" .gpu/home/
cp -r "$data/camelyon16-patches" "$data/camelyon17-tiles" .gpu/data/  # bbbc021 (130 MB) exceeds the 64 MiB carry
[ -d runs/benchmarks ] && cp -r runs/benchmarks .gpu/work  # the benchmark journals, to continue on the GPU
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/whl kornia==0.9.0 kornia_rs==0.2.0 imagecodecs==2026.3.6 albumentations==2.0.8 torchstain==1.4.1
du -sh .gpu
