"""The benchmark pieces (benchmarks/dg/) on real data, and the CI-sized runs of both scripts.

Real images: the labelled collections through the data root (``data_root`` fixture: CI fails without it) and the
PyPI-shipped sources through ``contrimix_aug.data`` (cached after the first fetch).
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


def _result(path: Path) -> dict:
    """A benchmark result file as the scripts write it (gzip-compressed JSON), read with the readers' helper."""
    from dg import report as R

    assert path.name.endswith(".json.gz") and path.is_file(), f"no result file {path}"
    assert not path.with_name(path.name[:-3]).exists()  # no uncompressed copy next to it
    return R.read_json(path)


def _run(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


# -- methods ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def crops(data_root):
    from dg.tasks import camelyon16 as T

    return T.hospitals()


def test_camelyon16_crops(crops):
    from dg.tasks import camelyon16 as T

    assert set(crops) == {"RUMC", "UMCU"}
    assert crops["RUMC"].x.shape == (57 * T.CROPS_PER_PATCH, 96, 96, 3)
    assert crops["UMCU"].x.shape == (32 * T.CROPS_PER_PATCH, 96, 96, 3)
    assert int(crops["RUMC"].patch_y.sum()) == 28 and int(crops["UMCU"].patch_y.sum()) == 16
    # the five crops of a patch share its label and id
    for h in crops.values():
        for i in range(len(h.patch_y)):
            assert set(h.y[h.patch == i].tolist()) == {int(h.patch_y[i])}


def test_hed_jitter_is_per_sample_and_seeded(crops):
    from dg.methods import hed_jitter, to_float

    x = to_float(crops["RUMC"].x[:4])
    a = hed_jitter(x, 0.05, generator=torch.Generator().manual_seed(1))
    b = hed_jitter(x, 0.05, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert float((a - x).abs().mean()) > 1e-3
    assert torch.allclose(hed_jitter(x, 0.0), x, atol=2e-3)  # identity at σ = 0 (up to the 8-bit OD floor)
    same = x[:1].expand(4, -1, -1, -1).contiguous()
    out = hed_jitter(same, 0.2, generator=torch.Generator().manual_seed(0))
    assert float((out[0] - out[1]).abs().max()) > 1e-2


def test_rgb_meanstd_takes_a_training_images_statistics(crops):
    from dg.methods import build_peers, to_float

    train = crops["RUMC"].x[:3]
    (m,) = build_peers(["rgb-meanstd"], train, seed=0, p=1.0)
    out = m(to_float(crops["UMCU"].x[:6])).flatten(2)
    ref = to_float(train).flatten(2)
    ref_stats = torch.cat([ref.mean(2), ref.std(2, unbiased=False)], 1)
    got = torch.cat([out.mean(2), out.std(2, unbiased=False)], 1)
    # every output carries one of the three training images' RGB mean/std (up to clipping to [0, 1])
    dist = torch.cdist(got, ref_stats).min(1).values
    assert float(dist.max()) < 0.03


def test_randstainna_and_peers_keep_shape_and_change_colour(crops):
    from dg.methods import HE_PEERS, build_peers, to_float

    x = to_float(crops["UMCU"].x[:8])
    for m in build_peers([n for n in HE_PEERS if n != "erm"], crops["RUMC"].x[:40], seed=0, p=1.0):
        y = m(x)
        assert y.shape == x.shape and y.dtype == x.dtype, m.name
        assert float(y.min()) >= 0 and float(y.max()) <= 1, m.name
        assert float((y - x).abs().mean()) > 5e-3, f"{m.name} left the images unchanged"


def test_probability_p_leaves_some_images_unchanged(crops):
    from dg.methods import build_peers, to_float

    x = to_float(crops["RUMC"].x[:64])
    (m,) = build_peers(["hed-strong"], None, seed=0, p=0.5)
    changed = (m(x) - x).abs().flatten(1).amax(1) > 1e-6
    assert 10 < int(changed.sum()) < 54


# -- renderers, statistics, classifier ---------------------------------------------------------------------------
def test_renderers_change_colour_and_keep_structure(data_root):
    from dg.methods import to_float
    from dg.renderers import RENDERERS
    from dg.tasks import stain_transfer as ST

    from contrimix_aug.quality import gap_closed, structure_ssim

    for r in RENDERERS:
        p = ST.pairs(r)
        assert p["x"].shape == p["x_ref"].shape and len(p["x"]) == 25 * 4
        x, xr = to_float(p["x"][::10]), to_float(p["x_ref"][::10])
        assert float((x - xr).abs().mean()) > 0.02, r  # another stain
        assert float(structure_ssim(x, xr).mean()) > 0.8, r  # the same tissue
        assert torch.allclose(gap_closed(x, xr, xr), torch.ones(len(x), dtype=torch.float64))


def test_paired_bootstrap():
    from dg.stats import mean_std, paired_bootstrap

    rng = np.random.default_rng(0)
    b = (rng.random((10, 200)) < 0.7).astype(float)
    a = b.copy()
    flip = rng.random((10, 200)) < 0.2
    a[flip & (b == 0)] = 1  # a fixes some of b's errors and never breaks one: a is better
    res = paired_bootstrap(a, b)
    assert res["diff"] > 0 and res["lo"] > 0 and res["seeds_a_better"] == 10
    same = paired_bootstrap(b, b)
    assert same["diff"] == 0 and same["lo"] == 0 and same["hi"] == 0
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    # items without a score (a tile without an instance map has no AJI) are left out, not spread as NaN
    a_nan, b_nan = np.c_[a, np.full((10, 5), np.nan)], np.c_[b, np.zeros((10, 5))]
    assert paired_bootstrap(a_nan, b_nan) == res
    assert math.isnan(paired_bootstrap(np.full((2, 3), np.nan), np.zeros((2, 3)))["diff"])


def test_auroc_matches_pairwise_counting():
    from dg.classifier import auroc

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.random(60) + 0.4 * y, 1)  # ties on purpose
    pos, neg = s[y == 1], s[y == 0]
    oracle = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert math.isclose(auroc(s, y), oracle, rel_tol=1e-12)


def test_paired_auroc_bootstrap_on_published_scores():
    """The paired AUROC difference on real CAMELYON16 runs (published scores, 10 seeds): the mean of the per-seed
    AUROC differences, inside its interval; swapping the methods negates it; a method against itself is zero."""
    from dg import report as R
    from dg.classifier import auroc
    from dg.stats import paired_auroc_bootstrap

    run = R.read_json(ROOT / "docs" / "benchmarks" / "dg_camelyon16.json.gz")
    held = "RUMC->UMCU"
    by = {(r["method"], r["seed"]): r for r in run["rows"] if r["heldout"] == held}
    r0 = by[("erm", 0)]
    y = np.array([int((s > 0.5) == bool(c)) for s, c in zip(r0["score"], r0["correct"])])
    a = np.array([by[("kornia-colorjitter", s)]["score"] for s in range(10)])
    b = np.array([by[("erm", s)]["score"] for s in range(10)])
    res = paired_auroc_bootstrap(a, b, y)
    want = np.mean([auroc(a[i], y) - auroc(b[i], y) for i in range(10)])
    assert math.isclose(res["diff"], want, abs_tol=1e-12) and res["lo"] <= res["diff"] <= res["hi"]
    assert res["hi"] - res["lo"] > 0.01 and res["seeds"] == 10
    assert res["seeds_a_better"] == sum(auroc(a[i], y) > auroc(b[i], y) for i in range(10))
    back = paired_auroc_bootstrap(b, a, y)
    assert math.isclose(back["diff"], -res["diff"], abs_tol=1e-12)
    assert math.isclose(back["lo"], -res["hi"], abs_tol=1e-12) and math.isclose(back["hi"], -res["lo"], abs_tol=1e-12)
    assert paired_auroc_bootstrap(a, a, y) | {"seeds_a_better": 0} == {"diff": 0, "lo": 0, "hi": 0,
                                                                       "seeds_a_better": 0, "seeds": 10}
    with pytest.raises(ValueError, match="both classes"):
        paired_auroc_bootstrap(a, b, np.ones_like(y))


def test_paired_auroc_rows_need_runs_that_reproduce_their_auroc():
    """engine.paired_table(item="auroc") pairs runs whose scores and labels give back each run's recorded AUROC;
    the published 4-decimal runs do not (rounding ties scores near 0), so they get no AUROC interval rather than a
    wrong one."""
    from dg import engine
    from dg import report as R
    from dg.classifier import auroc

    rows = [r for r in R.read_json(ROOT / "docs" / "benchmarks" / "dg_camelyon16.json.gz")["rows"]
            if r["method"] in ("erm", "kornia-colorjitter")]
    for r in rows:
        r["label"] = [int((s > 0.5) == bool(c)) for s, c in zip(r["score"], r["correct"])]
    assert engine.paired_table(rows, "erm", item="auroc") == []  # recorded AUROC is of the unrounded scores
    for r in rows:  # as a run that keeps full-precision scores records it
        r["auroc"] = auroc(np.array(r["score"]), np.array(r["label"]))
    got = engine.paired_table(rows, "erm", item="auroc")
    assert {(d["heldout"], d["method"], d["metric"]) for d in got} == {
        (h, "kornia-colorjitter", "auroc") for h in ("RUMC->UMCU", "UMCU->RUMC")}
    assert all(d["lo"] <= d["diff"] <= d["hi"] and d["seeds"] == 10 for d in got)
    import make_docs  # the page shows AUROC intervals only where the run has them

    run = {**R.read_json(ROOT / "docs" / "benchmarks" / "dg_camelyon16.json.gz"), "_file": "dg_camelyon16.json.gz"}
    assert "AUROC vs ERM" not in make_docs.real_section(run, "patch")
    d = next(d for d in got if d["heldout"] == "RUMC->UMCU")
    page = make_docs.real_section({**run, "paired_vs_erm": run["paired_vs_erm"] + got}, "patch")
    assert "paired differences in accuracy and in AUROC" in page and "| AUROC vs ERM |" in page
    line = next(ln for ln in page.splitlines() if ln.startswith("| kornia-colorjitter "))
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    assert cells[-2:] == [make_docs._ci(d), ""]  # AUROC vs ERM, then vs best peer (ContriMix rows only)


def test_group_mean_averages_crops():
    from dg.classifier import group_mean

    logits = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    mean, ids = group_mean(logits, np.array([5, 5, 7]))
    assert ids.tolist() == [5, 7] and torch.equal(mean, torch.tensor([[2.0, 0.0], [0.0, 2.0]]))


def test_coverage_sees_what_a_method_brings_into_training(crops):
    """Normalising both hospitals to one target brings UMCU's look into RUMC's training set; ERM does not; an
    augmentation that paints training crops with the test hospital's mean colour lowers the distance too."""
    from dg.diagnostics import colour_features, coverage
    from dg.methods import Method, build_peers, to_float

    tr, te = crops["RUMC"].x[::5], crops["UMCU"].x[::5]
    f = colour_features(to_float(te[:4]))
    assert f.shape == (4, 6) and np.isfinite(f).all()
    mean_te = to_float(te).mean((0, 2, 3), keepdim=True)

    def towards_test(x):
        return (x - x.mean((2, 3), keepdim=True) + mean_te).clamp(0, 1)

    ms = build_peers(["erm", "torchstain-reinhard"], tr) + [
        Method("towards-test", "augment", "batch", "test", "test", _batch_fn=towards_test)]
    rows = {r["method"]: r for r in coverage(ms, tr, te, heldout="RUMC->UMCU")}
    erm = rows["erm"]["nn_distance_median"]
    assert rows["torchstain-reinhard"]["nn_distance_median"] < 0.5 * erm
    assert rows["towards-test"]["nn_distance_median"] < erm
    assert rows["towards-test"]["n_train_features"] == 3 * len(tr) and rows["erm"]["n_test"] == len(te)
    fluo = colour_features(torch.rand(2, 2, 8, 8))
    assert fluo.shape == (2, 4)


def test_bbbc021_folds(data_root):
    from dg.tasks import bbbc021 as T

    folds = T.folds(max_per_plate=50)
    assert [f["test_plate"] for f in folds] == list(T.MIXED_PLATES)
    for f in folds:
        assert f["test_plate"] not in f["train_plates"]
        assert f["train_x"].shape[1:] == (64, 64, 3) and 0 <= f["train_x"].min() and f["train_x"].max() <= 1
        assert set(np.unique(f["train_y"])) == {0, 1}
        assert f["train_z"].shape == f["train_x"].shape
        # label-free ContriMix crops come from every plate but the test plate: 7,774 minus the test plate's
        assert len(f["contrimix_x"]) < 7774


# -- MoNuSeg segmentation ----------------------------------------------------------------------------------------
def test_aji_and_dice_against_hand_counts():
    from dg.segmentation import aji, dice, instances_from_mask

    gt = np.zeros((40, 40), np.int32)
    gt[2:12, 2:12] = 1  # 100 px
    gt[20:30, 20:30] = 2  # 100 px, missed by the prediction
    pred = np.zeros((40, 40), np.int32)
    pred[2:12, 2:11] = 5  # 90 px inside nucleus 1
    pred[35:38, 35:38] = 9  # 9 px false positive
    # C = 90; U = 100 (|G1 ∪ S5|) + 100 (G2 unmatched) + 9 (S9 unmatched)
    assert aji(pred, gt) == pytest.approx(90 / 209)
    assert aji(gt, gt) == 1.0 and aji(np.zeros_like(gt), gt) == 0.0
    assert dice(pred > 0, gt > 0) == pytest.approx(2 * 90 / (99 + 200))
    inst = instances_from_mask(pred > 0, min_area=10)  # the 9 px speck is dropped
    assert inst.max() == 1 and (inst > 0).sum() == 90


def test_monuseg_splits_keep_test_sites_out_of_training(data_root):
    from dg.tasks import monuseg as T

    off, few = T.split("official"), T.split("few-sites")
    assert len(off.train_x) == 30 and len(off.test_x) == 14 and len(set(off.test_sites)) == 14
    assert not set(off.train_sites) & set(off.test_sites)
    assert set(few.train_sites) == set(T.FEW_SITES) and len(few.train_x) == 11
    assert off.test_x.shape[1:] == (504, 504, 3) and off.test_mask.shape[1:] == (504, 504)
    assert all(i is not None and i.shape == (504, 504) and i.max() > 50 for i in off.test_inst)
    assert 0.1 < off.test_mask.mean() < 0.4  # nuclei cover a fifth or so of a tile
    for dev in T.DEV_SPLITS:  # pre-registration never sees a test site
        sp = T.split(dev)
        assert not ({*sp.train_sites, *sp.test_sites} & set(off.test_sites))
        assert not set(sp.train_sites) & set(sp.test_sites)
    crops = T.grid_crops(few.train_x, 96)
    assert crops.shape == (11 * 25, 96, 96, 3) and np.array_equal(crops[1], few.train_x[0, :96, 96:192])


def test_segmenter_learns_nuclei_on_real_tiles(data_root):
    """A hundred steps on two real training tiles already separate nuclei from the rest better than chance."""
    from dg.methods import build_peers, to_float
    from dg.segmentation import dice, predict_masks, train_segmenter
    from dg.tasks import monuseg as T

    sp = T.split("few-sites")
    x, m = to_float(sp.train_x[:2]), torch.from_numpy(sp.train_mask[:2])
    model = train_segmenter(x, m, build_peers(["erm"], None)[0], steps=100, seed=0, device=torch.device("cpu"),
                            batch_size=4, crop=96)
    pred = predict_masks(model, to_float(sp.test_x[:2]), torch.device("cpu"))
    assert pred.shape == (2, 504, 504) and pred.dtype == bool
    chance = [dice(np.ones_like(t), t) for t in sp.test_mask[:2]]  # "everything is a nucleus"
    assert np.mean([dice(p, t) for p, t in zip(pred, sp.test_mask[:2])]) > np.mean(chance) + 0.1


# -- the scripts, CI-sized ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["camelyon16", "bbbc021"])
def test_domain_generalization_quick(dataset, data_root, tmp_path):
    r = _run(["benchmarks/domain_generalization.py", "--dataset", dataset, "--quick", "--out", str(tmp_path),
              "--threads", "2"])
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    res = _result(tmp_path / f"dg_{dataset}_quick.json.gz")
    import domain_generalization as DG
    from dg.classifier import auroc

    assert [s["method"] for s in res["summary"] if s["heldout"] == res["summary"][0]["heldout"]] == DG.METHODS[dataset]
    for s in res["summary"]:
        assert 0 <= s["acc_mean"] <= 1
    for row in res["rows"]:
        assert len(row["correct"]) == row["n_test_items"]
        # what ran, per run: the joint protocol has no Method (the library version only)
        assert row["ran"]["library"].startswith("contrimix_aug ")
        assert row["method"] == "contrimix-joint" or row["ran"]["note"] is not None
    assert res["paired_vs_erm"] and res["environment"]["versions"]["torch"]
    for row in res["rows"]:  # full-precision scores and labels: each run's AUROC can be recomputed and paired
        assert len(row["label"]) == len(row["score"]) == row["n_test_items"]
        assert math.isclose(auroc(np.array(row["score"]), np.array(row["label"])), row["auroc"], abs_tol=1e-9)
    auc = [d for d in res["paired_vs_erm"] if d.get("metric") == "auroc"]
    assert {d["method"] for d in auc} == {d["method"] for d in res["paired_vs_erm"] if "metric" not in d}
    assert all(d["lo"] <= d["diff"] <= d["hi"] for d in auc)
    assert (tmp_path / f"dg_{dataset}_quick.png").is_file()
    assert (tmp_path / f"dg_{dataset}_quick_examples.png").stat().st_size > 10_000  # before/after crops per method
    assert {c["method"] for c in res["coverage"]} >= set(DG.METHODS[dataset]) - {"contrimix-joint"}
    if dataset == "camelyon16":
        joint = [r for r in res["rows"] if r["method"] == "contrimix-joint"]
        assert joint and all(0 < r["train_recon_psnr_db"] < 100 and 0 < r["test_recon_psnr_db"] < 100 for r in joint)
        fold = next(iter(res["notes"]["contrimix_fold"].values()))
        assert fold["steps"] > 0 and "heldout_psnr_db" in fold and "target_met" in fold

def test_domain_generalization_quick_monuseg(data_root, tmp_path):
    r = _run(["benchmarks/domain_generalization.py", "--dataset", "monuseg", "--quick", "--out", str(tmp_path),
              "--threads", "2"])
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    res = _result(tmp_path / "dg_monuseg_quick.json.gz")
    import domain_generalization as DG

    for variant in ("official", "few-sites"):  # every method named, in table order, on both variants
        assert [s["method"] for s in res["summary"] if s["heldout"] == variant] == DG.METHODS["monuseg"]
    for row in res["rows"]:
        assert len(row["tile_aji"]) == len(row["tile_dice"]) == row["n_test_tiles"] == 14
        assert 0 <= row["aji"] <= 1 and 0 <= row["dice"] <= 1
        assert row["ran"]["library"].startswith("contrimix_aug ") and row["ran"]["note"]  # what ran, per run
        assert row["ran"]["device"] == "cpu"
    default = [r["ran"]["note"] for r in res["rows"] if r["method"] == "contrimix-camelyon"]
    assert all("donors='sampled', spread=0.7" in n for n in default) and len(default) == 2
    assert {r["n_train_tiles"] for r in res["rows"]} == {30, 11}
    assert res["primary_metric"] == "aji" and set(res["best_peer"]) == {"official", "few-sites"}
    assert {d["metric"] for d in res["paired_vs_erm"]} == {"aji", "dice"}
    assert all(d["method"].startswith("contrimix") for d in res["paired_vs_best_peer"])
    assert (tmp_path / "dg_monuseg_quick.png").is_file()
    assert (tmp_path / "dg_monuseg_quick_examples.png").stat().st_size > 10_000
    tiles = res["notes"]["test_tiles"]["official"]
    assert len({t["site"] for t in tiles}) == 14 and tiles == res["notes"]["test_tiles"]["few-sites"]
    import make_docs  # the docs page renders the run: both variants, every method, a column per test site

    page = make_docs.monuseg_section({**res, "_file": "dg_monuseg_quick.json.gz"})
    assert page.count("| contrimix-camelyon |") == 4  # the summary and per-site tables of both variants
    assert "donors='sampled', spread=0.7" in page and "(contrimix_aug " in page  # what each ContriMix row ran
    assert all(f"{t['site']} {t['organ']}" in page for t in tiles)


def test_the_missing_runs_of_a_part_run_read_in_a_line():
    """The page's missing-run list on the published MoNuSeg rows: a domain where every method lacks the same seeds
    is one entry; a method that lacks other seeds is named with its own seeds; nothing missing is dropped."""
    import make_docs

    rows = _result(ROOT / "docs" / "benchmarks" / "dg_monuseg.json.gz")["rows"]
    rows = [r for r in rows if r["seed"] <= 1]  # seeds 0-1 done on both variants
    methods = sorted({r["method"] for r in rows})
    missing = [f"{v} {m} seed {s}" for v in ("official", "few-sites") for m in methods for s in range(2, 10)]
    folded = "`official`: every method, seeds 2-9; `few-sites`: every method, seeds 2-9"
    assert make_docs._missing(missing, rows) == folded
    missing.remove("few-sites erm seed 5")
    text = make_docs._missing(missing, rows)
    assert text.startswith("`official`: every method, seeds 2-9; `few-sites ")
    assert "`few-sites erm` seeds 2, 3, 4, 6, 7, 8, 9; " in text
    assert all(f"`few-sites {m}` seeds 2-9" in text for m in methods if m != "erm")
    assert make_docs._missing(["RUMC->UMCU erm seed 3"], []) == "`RUMC->UMCU erm` seed 3"  # no rows: named one by one


def test_a_fresh_checkout_continues_from_the_published_runs(tmp_path):
    """The journal lives under the git-ignored runs/; a missing one starts from the committed result's runs."""
    import domain_generalization as DG
    from dg import engine
    from dg import report as R

    settings = {"mode": "full", "dataset": "monuseg", "steps": 800, "crop": 96, "batch_size": 8}
    rows = [{"dataset": "monuseg", "heldout": "official", "method": "erm", "seed": s, "aji": 0.5} for s in (0, 1)]
    R.write_json(tmp_path / "dg_monuseg.json.gz", {"mode": "full", "settings": {**settings, "seeds": [0, 1]},
                                                   "rows": rows})
    DG._journal_from_published(tmp_path / "work" / "runs.jsonl", settings, tmp_path, "dg_monuseg", log=print)
    j = engine.Journal(tmp_path / "work" / "runs.jsonl", settings)
    assert j.get("monuseg", "official", "erm", 1)["aji"] == 0.5 and len(j.rows) == 2
    DG._journal_from_published(tmp_path / "other.jsonl", {**settings, "steps": 400}, tmp_path, "dg_monuseg", log=print)
    assert not (tmp_path / "other.jsonl").exists()  # made under other settings: nothing is taken


def test_completeness_counts_the_registered_plan_of_each_protocol():
    """The registered test-site protocol plans every method x variant x seed 0-9; the --dev step-count choice
    planned 2 methods x 2 dev splits x seed 0, and its published files say complete."""
    from types import SimpleNamespace

    import domain_generalization as DG
    from dg import report as R

    full = SimpleNamespace(dataset="monuseg", dev=False, quick=False, post_hoc=False)
    rows = [{"heldout": "official", "method": "erm", "seed": 0}]
    c = DG._completeness(full, rows)
    assert c["runs_planned"] == 2 * len(DG.METHODS["monuseg"]) * 10 and c["runs_done"] == 1 and not c["complete"]
    dev = SimpleNamespace(dataset="monuseg", dev=True, quick=False, post_hoc=False)
    rows = [{"heldout": h, "method": m, "seed": 0} for h in ("official-dev", "few-sites-dev")
            for m in ("erm", "kornia-colorjitter")]
    assert DG._completeness(dev, rows) == {"runs_planned": 4, "runs_done": 4, "complete": True, "missing": []}
    assert not DG._completeness(dev, rows[1:])["complete"]
    for steps in (200, 400, 800):  # the published choice: one seed, complete, intervals without NaN
        res = R.read_json(ROOT / "docs" / "benchmarks" / f"dg_monuseg_dev_s{steps}.json.gz")
        assert res["settings"]["seeds"] == [0] and res["complete"]
        assert all(d["diff"] is not None and d["lo"] <= d["diff"] <= d["hi"] for d in res["paired_vs_erm"])


def test_journal_resumes_and_refuses_other_settings(tmp_path):
    from dg.engine import Journal

    j = Journal(tmp_path / "runs.jsonl", {"epochs": 30})
    row = {"dataset": "d", "heldout": "A->B", "method": "erm", "seed": 3, "acc": 0.75}
    j.add(row)
    again = Journal(tmp_path / "runs.jsonl", {"epochs": 30})
    assert again.get("d", "A->B", "erm", 3) == row and again.get("d", "A->B", "erm", 4) is None
    other = Journal(tmp_path / "runs.jsonl", {"epochs": 30})  # a second process on the same journal
    other.add({**row, "seed": 4})
    assert again.get("d", "A->B", "erm", 4)["seed"] == 4  # seen without restarting
    with (tmp_path / "runs.jsonl").open("a") as f:
        f.write('{"dataset": "d", "heldout": "A->B", "method": "er')  # a line torn by a kill
    assert len(Journal(tmp_path / "runs.jsonl", {"epochs": 30}).rows) == 2
    other.add({**row, "acc": 0.5})  # two processes that both finished seed 3: the run counts once, the last kept
    assert sorted((r["seed"], r["acc"]) for r in Journal.read(tmp_path / "runs.jsonl")) == [(3, 0.5), (4, 0.75)]
    assert Journal.read(tmp_path / "absent.jsonl") == []
    with pytest.raises(SystemExit, match="other settings"):
        Journal(tmp_path / "runs.jsonl", {"epochs": 8})


def test_resume_refuses_a_run_of_another_method_under_the_same_name():
    """A journaled run records what it ran; resuming it under a name that now means another method is refused."""
    from dg.engine import same_method
    from dg.methods import Method

    now = Method("contrimix-camelyon", "augment", "batch", "contrimix_aug", "ContriMix(p=0.5, donors='sampled')")
    row = {"dataset": "monuseg", "heldout": "official", "method": now.name, "seed": 3,
           "ran": {"library": "contrimix_aug 0.3.0", "note": now.note}}
    same_method(row, now)  # the same method: resumed
    same_method({**row, "ran": {"library": "contrimix_aug 0.2.0"}}, now)  # runs from before notes were recorded
    with pytest.raises(SystemExit, match="donors='batch'.*Same name, another method"):
        same_method({**row, "ran": {**row["ran"], "note": "ContriMix(p=0.5, donors='batch')"}}, now)


def test_a_killed_benchmark_resumes_its_finished_runs(data_root, tmp_path):
    args = ["benchmarks/domain_generalization.py", "--dataset", "bbbc021", "--quick", "--out", str(tmp_path),
            "--threads", "2", "--methods", "erm", "gain-gamma", "--heldout", "27801", "--no-plot",
            "--work", str(tmp_path / "work")]
    r = _run(args)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    first = _result(tmp_path / "dg_bbbc021_quick.json.gz")
    journal = tmp_path / "work" / "dg_bbbc021_quick" / "runs.jsonl"
    lines = journal.read_text().splitlines()
    assert len(lines) == 3  # settings + two runs
    journal.write_text("\n".join(lines[:2]) + "\n")  # as if killed during the second run
    r = _run(args)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    assert r.stdout.count("(resumed)") == 1 and "gain-gamma" in r.stdout
    second = _result(tmp_path / "dg_bbbc021_quick.json.gz")
    assert [x["method"] for x in second["rows"]] == [x["method"] for x in first["rows"]]
    assert second["rows"][0]["correct"] == first["rows"][0]["correct"]
    assert not second["complete"] and second["runs_done"] == 2 and second["runs_planned"] == 12
    r = _run([*args[:-2], "--work", str(tmp_path / "work"), "--from-journal", "--methods", "erm", "gain-gamma",
              "contrimix-fold"])  # publish what is done, train nothing (contrimix-fold has no run: not built)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    assert "acc " not in r.stdout and "fold model" not in r.stdout
    third = _result(tmp_path / "dg_bbbc021_quick.json.gz")
    assert [x["correct"] for x in third["rows"]] == [x["correct"] for x in second["rows"]]
    assert "27801 contrimix-fold seed 0" in third["missing"]
    # a method with runs on one plate only: publishing every plate trains no fold model for the others
    r = _run([*args[:4], "--out", str(tmp_path), "--threads", "2", "--no-plot", "--heldout", "27801",
              "--methods", "contrimix-fold", "--work", str(tmp_path / "work")])
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    folds = tmp_path / "work" / "dg_bbbc021_quick" / "folds"
    before = sorted(x.name for x in folds.iterdir())
    assert any(n.startswith("bbbc021-27801") for n in before)
    r = _run([*args[:4], "--out", str(tmp_path), "--threads", "2", "--no-plot", "--from-journal",
              "--work", str(tmp_path / "work")])
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    assert "training the per-fold" not in r.stdout and sorted(x.name for x in folds.iterdir()) == before
    fourth = _result(tmp_path / "dg_bbbc021_quick.json.gz")
    assert fourth["runs_done"] == 3 and list(fourth["notes"]["contrimix_fold"]) == ["bbbc021-27801"]


def test_publishing_only_the_complete_seeds(data_root, tmp_path):
    """--from-journal --seeds: the result files hold the runs of those seeds only (while later seeds still run); a
    seed without runs is refused. The journal starts from the published MoNuSeg runs (a fresh checkout's path)."""
    import shutil

    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(ROOT / "docs" / "benchmarks" / "dg_monuseg.json.gz", out)
    base = ["benchmarks/domain_generalization.py", "--dataset", "monuseg", "--from-journal", "--no-plot",
            "--threads", "2", "--work", str(tmp_path / "work"), "--out", str(out)]
    r = _run([*base, "--seeds", "0", "1"])
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    res = _result(out / "dg_monuseg.json.gz")
    assert {x["seed"] for x in res["rows"]} == {0, 1} and not res["complete"]
    assert {s["seeds"] for s in res["summary"]} == {2} and res["runs_done"] == len(res["rows"])
    r = _run([*base, "--seeds", "0", "42"])
    assert r.returncode != 0 and "the journal has no run of seeds [42]" in r.stderr


def test_post_hoc_variants_pair_with_the_registered_runs(data_root, tmp_path):
    common = ["--dataset", "camelyon16", "--quick", "--out", str(tmp_path), "--threads", "2", "--no-plot",
              "--heldout", "RUMC->UMCU", "--work", str(tmp_path / "work")]
    r = _run(["benchmarks/domain_generalization.py", *common, "--methods", "erm", "torchstain-reinhard"])
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    r = _run(["benchmarks/domain_generalization.py", *common, "--post-hoc"])
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    res = _result(tmp_path / "dg_camelyon16_posthoc_quick.json.gz")
    assert res["post_hoc"] and res["complete"] is False  # one of the two directions
    import domain_generalization as DG

    post = DG.POST_HOC["camelyon16"]  # the bank-donor row and the release 0.3 default row
    assert {s["method"] for s in res["summary"]} == {"erm", "torchstain-reinhard", *post}
    assert res["best_peer"] == {"RUMC->UMCU": "torchstain-reinhard"}
    assert [d["method"] for d in res["paired_vs_best_peer"] if "metric" not in d] == post  # accuracy
    assert [d["method"] for d in res["paired_vs_best_peer"] if d.get("metric") == "auroc"] == post


def test_throughput_quick(tmp_path):
    r = _run(["benchmarks/throughput.py", "--quick", "--out", str(tmp_path), "--methods", "hed-light",
              "torchstain-macenko"], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "throughput_cpu_quick.json").read_text())
    assert {row["method"] for row in res["rows"]} >= {"contrimix", "hed-light", "torchstain-macenko"}
    assert all(row["img_s"] > 0 for row in res["rows"])
