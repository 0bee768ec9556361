#!/usr/bin/env bash
# Prepare .gpu/ (git-ignored) for a device run: the real-data cache and the wheels the GPU image lacks.
# Run here once, then pass carry=[".gpu"] to the device tool and run scripts/gpu_session.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m contrimix_aug.cli data fetch cmu1 prostate skin hgsc_nest hgsc_stroma tcia dsb cells3d ctc >/dev/null
home="${CONTRIMIX_AUG_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/contrimix_aug}"
rm -rf .gpu && mkdir -p .gpu/home .gpu/whl
python - "$home" <<'PY'
import shutil, sys
from pathlib import Path
from contrimix_aug.data import sources
home = Path(sys.argv[1])
for sid in ["cmu1", "prostate", "skin", "hgsc_nest", "hgsc_stroma", "tcia", "dsb", "cells3d", "ctc"]:
    src = sources.cache_path(sid, home / "data")
    dst = Path(".gpu/home/data") / src.relative_to(home / "data")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
PY
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/whl kornia==0.9.0 kornia_rs==0.2.0 imagecodecs==2026.3.6
du -sh .gpu
