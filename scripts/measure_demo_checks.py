"""Calibrate the two checks of ``contrimix-aug demo --images`` (``showcase.USER_PLAUSIBLE_LOW`` and
``USER_STRUCTURE_LOW``): run the demo, as a user would, on folders of real images the weights never saw and on
images they should not take, and record what each check reads.

Folders (PNG files written from the data root, crops of 96 px after resizing to the weights' resolution):
CAMELYON17 hospitals 1 and 2 (5 tiles each), CAMELYON16 UMCU (32 patches), the 14 MoNuSeg test tiles (real H&E of
labs no weights or bank saw); BBBC021 three-channel fluorescence as RGB (64 crops), the bundled H&E tiles inverted,
the bundled H&E tiles with half of them made grey; and a model trained for a few steps (``--steps``, from the
bundled tiles) on the real H&E folders.

    CONTRIMIX_AUG_DATA=/work/shared/data python scripts/measure_demo_checks.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contrimix_aug import showcase  # noqa: E402
from contrimix_aug.data import (  # noqa: E402
    load_bbbc021,
    load_camelyon16_patches,
    load_camelyon17_tiles,
    load_demo_tiles,
    load_monuseg,
)


def _write(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    return folder


def folders(root: Path) -> dict[str, tuple[Path, float | None, bool]]:
    """{name: (folder, um per px or None, real H&E of unseen labs?)}."""
    out = {}
    c17 = load_camelyon17_tiles((1, 2), progress=False)
    for h in (1, 2):
        out[f"CAMELYON17 hospital {h}"] = (_write(root / f"c17_{h}", c17.images[c17.hospitals == h]), c17.um_per_px,
                                           True)
    c16 = load_camelyon16_patches(("UMCU",), progress=False)
    out["CAMELYON16 UMCU"] = (_write(root / "umcu", c16.images), c16.um_per_px, True)
    mo = load_monuseg("test", progress=False)
    out["MoNuSeg test sites"] = (_write(root / "monuseg", mo.images), mo.um_per_px, True)
    b = load_bbbc021(progress=False)
    pick = np.random.default_rng(0).choice(len(b), 64, replace=False)
    f = b.images[pick].astype(np.float32)
    f = (f / np.percentile(f, 99.5, axis=(1, 2), keepdims=True)).clip(0, 1)
    out["BBBC021 fluorescence as RGB"] = (_write(root / "bbbc021", (f * 255).astype(np.uint8)), None, False)
    tiles, _ = load_demo_tiles()
    out["bundled H&E inverted"] = (_write(root / "inverted", 255 - tiles), None, False)
    half = tiles.copy()
    half[::2] = half[::2].mean(-1, keepdims=True).astype(np.uint8)
    out["bundled H&E, every other tile grey"] = (_write(root / "half_grey", half), None, False)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "weights" / "demo_checks.json")
    ap.add_argument("--steps", type=int, default=6, help="steps of the barely trained model")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sets = folders(root)
        from contrimix_aug.training import TrainConfig, train

        tiles = _write(root / "train_tiles", load_demo_tiles()[0])
        short = train(TrainConfig(data=str(tiles), out=str(root / "short"), steps=args.steps, batch_size=8,
                                  patch_size=64, num_workers=0, progress=False, seed=0, device="cpu",
                                  val_size=4))
        models = {"camelyon": "camelyon", "he": "he", f"trained {args.steps} steps": str(short)}
        for label, weights in models.items():
            for name, (folder, mpp, real) in sets.items():
                if label.startswith("trained") and not real:
                    continue
                r = showcase.run_demo(weights, root / "demo.png", images=[folder], um_per_px=mpp)
                y = r["your_images"]
                rows.append({"weights": label, "images": name, "real_he_of_unseen_labs": real, "n": y["used"],
                             "plausible_share": y["colours"]["plausible_share"],
                             "structure_ssim_min": y["structure"]["structure_ssim_min"],
                             "reconstruction_psnr_db": r["reconstruction_psnr_db"],
                             "colours_ok": y["colours"]["ok"], "structure_ok": y["structure"]["ok"]})
                print(json.dumps(rows[-1]), flush=True)
    out = {"written_by": "scripts/measure_demo_checks.py", "colours_fail_below": showcase.USER_PLAUSIBLE_LOW,
           "structure_fails_below": showcase.USER_STRUCTURE_LOW, "rows": rows, "seconds": round(time.time() - t0, 1)}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"-> {args.out} ({out['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
