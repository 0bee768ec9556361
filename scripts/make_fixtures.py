#!/usr/bin/env python
"""Cut the small real crops committed to this repository from the vendorable sources (cmu1: CC0; skin: public domain).

Writes
  tests/fixtures/{cmu1,skin}_tile_{00..07}.png   8 tissue crops, 96x96, native resolution, no ink
  tests/fixtures/cmu1_edge_256.png               256x256 with glass, tissue and the green marking ink
  tests/fixtures/skin_edge_256.png               256x256 across the epidermis/glass border
  tests/fixtures/manifest.json + README.md       provenance (source sha256, crop boxes, output sha256)
  contrimix_aug/assets/tiles/{cmu1,skin}_{00..07}.png   demo tiles, 96x96 at 0.5 um/px (+ manifest, README)
  contrimix_aug/assets/tiles_fluorescence/dsb_{00..07}.png   fluorescence demo tiles (CC0 dsb nuclei), 96x96, 8-bit

Every crop is a deterministic function of the verified source bytes, so ``--check`` can re-derive them and
compare pixel by pixel. Sources are fetched with pip on first use (see contrimix_aug.data.cache).

Usage: python scripts/make_fixtures.py [--check] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contrimix_aug import tissue as T  # noqa: E402
from contrimix_aug.data import patches as P  # noqa: E402
from contrimix_aug.data.readers import load_image  # noqa: E402
from contrimix_aug.data.registry import get_source  # noqa: E402

__all__ = ["build", "main"]

FIXTURES = REPO / "tests" / "fixtures"
TILES = REPO / "contrimix_aug" / "assets" / "tiles"
FLUO_TILES = REPO / "contrimix_aug" / "assets" / "tiles_fluorescence"
VENDORABLE = ("cmu1", "skin")
FLUO_VENDORABLE = "dsb"
N_TILES = 8
TILE = 96
EDGE = 256
SEED = 20240601


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _spread(coords: list[tuple[int, int]], n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``n`` of ``coords`` spread over the image: sort by position, take one per equal-size chunk."""
    if len(coords) < n:
        raise RuntimeError(f"only {len(coords)} candidate tiles, need {n}")
    chunks = np.array_split(np.arange(len(coords)), n)
    return [coords[int(rng.choice(c))] for c in chunks]


def _edge_box(img: np.ndarray, sid: str) -> tuple[int, int]:
    """Top-left of the 256 crop: cmu1 = most ink with >= 20 % glass and >= 30 % tissue; skin = tissue/glass border."""
    tissue = T.tissue_mask(img)
    glass_f = P.window_fraction(~tissue, EDGE)[::32, ::32]
    tissue_f = 1.0 - glass_f
    if sid == "cmu1":
        ink_f = P.window_fraction(T.ink_mask(img), EDGE)[::32, ::32]
        score = np.where((glass_f >= 0.2) & (tissue_f >= 0.3), ink_f, -1.0)
    else:
        score = np.minimum(glass_f, tissue_f)
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(y) * 32, int(x) * 32


def build(cache_dir: str | None = None) -> dict[Path, bytes]:
    """All fixture/asset files as ``{path: bytes}`` (nothing written)."""
    files: dict[Path, bytes] = {}
    fixtures_manifest: dict[str, dict] = {}
    tiles_manifest: dict[str, dict] = {}
    provenance = {}
    for sid in VENDORABLE:
        src = get_source(sid)
        assert src.may_vendor, sid
        provenance[sid] = {"package": src.requirement, "archive": src.archive, "member": src.member,
                           "sha256": src.sha256, "um_per_px": src.um_per_px, "um_per_px_measured": src.mpp_measured,
                           "licence": src.licence, "attribution": src.attribution}
        img = load_image(sid, cache_dir=cache_dir)
        rng = np.random.default_rng([SEED, VENDORABLE.index(sid)])
        # test crops: native resolution, >= 90 % tissue, no ink
        cands = P.grid_patches(img, TILE, TILE, min_tissue=0.9, max_ink=0.0)
        for i, (y, x) in enumerate(_spread(cands, N_TILES, rng)):
            name = f"{sid}_tile_{i:02d}.png"
            files[FIXTURES / name] = _png(img[y:y + TILE, x:x + TILE])
            fixtures_manifest[name] = {"source": sid, "box_yxhw": [y, x, TILE, TILE], "um_per_px": src.um_per_px,
                                       "resampled": False}
        y, x = _edge_box(img, sid)
        name = f"{sid}_edge_{EDGE}.png"
        files[FIXTURES / name] = _png(img[y:y + EDGE, x:x + EDGE])
        fixtures_manifest[name] = {"source": sid, "box_yxhw": [y, x, EDGE, EDGE], "um_per_px": src.um_per_px,
                                   "resampled": False}
        # demo tiles: 0.5 um/px
        img05 = P.resample_to_mpp(img, src.um_per_px, 0.5)
        cands = P.grid_patches(img05, TILE, TILE, min_tissue=0.9, max_ink=0.0)
        for i, (y, x) in enumerate(_spread(cands, N_TILES, rng)):
            name = f"{sid}_{i:02d}.png"
            files[TILES / name] = _png(img05[y:y + TILE, x:x + TILE])
            tiles_manifest[name] = {"source": sid, "box_yxhw_at_0.5um": [y, x, TILE, TILE], "um_per_px": 0.5,
                                    "resampled_from_um_per_px": src.um_per_px}
    fluo_manifest, fluo_prov = _fluorescence_tiles(files, cache_dir)
    for folder, manifest, prov in ((FIXTURES, fixtures_manifest, provenance), (TILES, tiles_manifest, provenance),
                                   (FLUO_TILES, fluo_manifest, fluo_prov)):
        for name in manifest:
            manifest[name]["sha256"] = hashlib.sha256(files[folder / name]).hexdigest()
        doc = {"generated_by": "scripts/make_fixtures.py", "sources": prov, "files": manifest}
        files[folder / "manifest.json"] = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
        files[folder / "README.md"] = _readme(folder, prov).encode()
    return files


def _fluorescence_tiles(files: dict[Path, bytes], cache_dir: str | None) -> tuple[dict, dict]:
    """8 crops of the CC0 dsb nuclei image (0.5-99.8 percentile stretch to 8 bits), the ones with most signal."""
    src = get_source(FLUO_VENDORABLE)
    assert src.may_vendor
    img = load_image(FLUO_VENDORABLE, cache_dir=cache_dir).astype(np.float64)
    lo, hi = np.percentile(img, (0.5, 99.8))
    img8 = np.clip(np.rint((img - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)
    coords = [(y, x) for y in range(0, img8.shape[0] - TILE + 1, TILE // 2)
              for x in range(0, img8.shape[1] - TILE + 1, TILE // 2)]
    signal = [float((img8[y:y + TILE, x:x + TILE] > 64).mean()) for y, x in coords]
    order = np.argsort(signal, kind="stable")[::-1]
    chosen: list[tuple[int, int]] = []
    for i in order:  # most signal first, no two overlapping
        y, x = coords[int(i)]
        if all(abs(y - a) >= TILE or abs(x - b) >= TILE for a, b in chosen):
            chosen.append((y, x))
        if len(chosen) == N_TILES:
            break
    manifest = {}
    for i, (y, x) in enumerate(sorted(chosen)):
        name = f"dsb_{i:02d}.png"
        files[FLUO_TILES / name] = _png(img8[y:y + TILE, x:x + TILE])
        manifest[name] = {"source": "dsb", "box_yxhw": [y, x, TILE, TILE],
                          "stretch": {"p0.5": float(lo), "p99.8": float(hi)}}
    prov = {"dsb": {"package": src.requirement, "archive": src.archive, "member": src.member, "sha256": src.sha256,
                    "licence": src.licence, "attribution": src.attribution}}
    return manifest, prov


def _readme(folder: Path, provenance: dict) -> str:
    what = {FIXTURES: "Real H&E crops used by the test-suite (native resolution)",
            TILES: "Real H&E demo tiles bundled with contrimix_aug (96x96 px at about 0.5 um/px)",
            FLUO_TILES: "Real fluorescence demo tiles bundled with contrimix_aug (96x96 px, 8-bit)"}[folder]
    lines = [f"# {what}", "",
             "Generated by `scripts/make_fixtures.py` (deterministic; `--check` re-derives them). Only sources whose",
             "terms allow redistribution are used. Crop boxes and per-file sha256 are in `manifest.json`.", "",
             "| source | from | member | sha256 of the member | licence | credit |", "|---|---|---|---|---|---|"]
    for sid, p in provenance.items():
        lines.append(f"| {sid} | {p['package']} ({p['archive']}) | `{p['member']}` | `{p['sha256']}` | "
                     f"{p['licence']} | {p['attribution']} |")
    if folder == FLUO_TILES:
        lines += ["", "dsb: BBBC038 / 2018 Data Science Bowl, CC0 as distributed by the Broad Bioimage Benchmark "
                  "Collection (credit: Caicedo et al., Nature Methods 2019).", ""]
    else:
        lines += ["", "cmu1: OpenSlide test data CMU-1, released CC0 (credit: OpenSlide / Carnegie Mellon University).",
                  "skin: released into the public domain by its author Kilbad (Wikimedia Commons).", ""]
    return "\n".join(lines)


def _same_pixels(a: bytes, b: bytes) -> bool:
    with Image.open(io.BytesIO(a)) as ia, Image.open(io.BytesIO(b)) as ib:
        return np.array_equal(np.asarray(ia), np.asarray(ib))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args(argv)
    files = build(args.cache_dir)
    if args.check:
        bad = [p for p, data in files.items() if p.suffix == ".png"
               and not (p.is_file() and _same_pixels(p.read_bytes(), data))]
        for p in bad:
            print(f"differs or missing: {p.relative_to(REPO)}", file=sys.stderr)
        print(f"{len(files) - len(bad)}/{len(files)} files match")
        return 1 if bad else 0
    total = 0
    for path, data in sorted(files.items()):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        total += len(data)
    print(f"wrote {len(files)} files, {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
