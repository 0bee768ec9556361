"""The code in README.md and docs/*.md runs as written (in order, one namespace per file); the model cards and the
README's numbers are the ones the scripts measured; every sentence that names a number or a file matches it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CARDS = ("camelyon", "he", "fluorescence")


def _blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def _skip_reason(code: str) -> str | None:
    if "in loader" in code:
        return "needs the user's DataLoader"
    if '"cuda"' in code and not torch.cuda.is_available():
        return "needs CUDA"
    for mod in ("torchvision", "albumentations"):
        if f"import {mod}" in code or f"from {mod}" in code:
            if importlib.util.find_spec(mod) is None:
                return f"needs {mod}"
    if "MyDenseNet" in code:
        return "needs the user's classifier"
    return None


@pytest.mark.parametrize("path", [p for p in DOCS if _blocks(p)], ids=lambda p: p.name)
def test_doc_code_runs(path: Path, data_root) -> None:
    ns: dict = {}
    ran = 0
    for code in _blocks(path):
        if _skip_reason(code):
            continue
        exec(compile(code, f"{path.name}", "exec"), ns)  # noqa: S102 - our own documentation
        ran += 1
    if ran == 0:
        pytest.skip(f"every code block of {path.name} needs the user's own data or hardware")


def test_readme_has_exactly_two_setup_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = text.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", setup, flags=re.S)
    assert len(commands) == 2
    assert "contrimix-aug demo" in commands[0] and "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "README.md" in ci and "CONTRIMIX_AUG_REQUIRE_DATA=1" in ci  # the README's command, data required


def test_readme_quick_start_uses_camelyon_as_users_write_it() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert 'transforms.Compose([transforms.ToTensor(), ContriMix(weights="camelyon"' in quick
    assert 'pip install "contrimix_aug[albumentations]"' in quick  # the extra the snippet needs is named
    assert "_params" not in text and "_bundled_path" not in text  # public spellings only


def _quick_start_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", quick, flags=re.S)


@pytest.mark.parametrize("index", range(len(_quick_start_blocks())), ids=lambda i: f"block{i}")
def test_quick_start_block_runs_alone(index: int) -> None:
    """Each README quick-start block is self-contained: it runs in a fresh namespace (torchvision blocks where it is
    installed, as in `.ci/run`'s second environment)."""
    code = _quick_start_blocks()[index]
    reason = _skip_reason(code)
    if reason == "needs torchvision" and os.environ.get("CONTRIMIX_AUG_REQUIRE_TORCHVISION"):
        pytest.fail("CONTRIMIX_AUG_REQUIRE_TORCHVISION is set but torchvision is missing")
    if reason:
        pytest.skip(reason)
    namespace = {"__name__": "readme_quick_start"}  # fresh: nothing from the other blocks
    exec(compile(code, f"README.md quick start block {index}", "exec"), namespace)  # noqa: S102


def test_quick_start_has_a_torchvision_v2_block_with_a_mask() -> None:
    blocks = _quick_start_blocks()
    v2 = [b for b in blocks if "from torchvision.transforms import v2" in b]
    assert len(v2) == 1 and "tv_tensors.Mask" in v2[0] and "train_tf(img, mask)" in v2[0]
    assert len(blocks) >= 7


@pytest.mark.parametrize("name", CARDS)
def test_model_cards_match_shipped_weights(name: str) -> None:
    from contrimix_aug import load_weights, weights_path

    w = load_weights(weights_path(name))
    card = json.loads((ROOT / "docs" / "weights" / f"{name}.json").read_text())
    md = (ROOT / "docs" / "weights" / f"{name}.md").read_text()
    assert w.meta.name == name and w.meta.card == f"docs/weights/{name}.md"
    assert w.meta.training["steps"] == card["training"]["steps"]
    assert w.meta.training["command"] in md
    summary = card.get("heldout_summary") or card.get("left_out_summary")
    if summary:
        assert w.meta.quality == summary
        assert f"{summary['psnr_db_mean']:.2f}" in md
    assert w.bank is not None and w.bank.shape[0] > 0  # every bundled file has an attribute bank


def test_shipped_camelyon_weights_meet_their_card(data_root) -> None:
    """Re-measure the shipped camelyon weights on the unseen hospital 2 at 0.5 µm/px: the card is reproduced."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import evaluate_weights as EW

    from contrimix_aug import load_model
    from contrimix_aug.data import load_camelyon17_tiles
    from contrimix_aug.data.patches import resample_to_mpp
    from contrimix_aug.quality import reconstruction

    card = json.loads((ROOT / "docs" / "weights" / "camelyon.json").read_text())
    expected = card["hospitals"]["2"]["by_scale"]["0.5"]
    tiles = load_camelyon17_tiles((2,), progress=False)
    x = EW._t([c for im in tiles.images for c in EW._grid_crops(resample_to_mpp(im, tiles.um_per_px, 0.5))])
    assert x.shape[0] == expected["patches"]
    rec = reconstruction(load_model("camelyon"), x)
    assert float(rec["psnr"].mean()) == pytest.approx(expected["psnr_db"], abs=0.05)
    assert float(rec["ssim"].mean()) == pytest.approx(expected["ssim"], abs=2e-3)


@pytest.mark.network
@pytest.mark.parametrize("name,source", [("he", "hgsc_stroma"), ("he", "tcia"), ("fluorescence", "dsb")])
def test_shipped_weights_meet_their_card(name: str, source: str) -> None:
    """Re-measure the shipped weights on the card's held-out patches: the card's numbers are reproduced."""
    from contrimix_aug import load_model
    from contrimix_aug.data.source_datasets import FLUO_SOURCES, FluorescenceSourcesDataset, HESourcesDataset
    from contrimix_aug.quality import reconstruction

    card = json.loads((ROOT / "docs" / "weights" / f"{name}.json").read_text())
    expected = card["in_training_sources"][source]
    cls = FluorescenceSourcesDataset if source in FLUO_SOURCES else HESourcesDataset
    ds = cls([source], size=96, n_per_source=expected["patches"], split="val", seed=card["eval_seed"], progress=False)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    rec = reconstruction(load_model(name), x)
    assert float(rec["psnr"].mean()) == pytest.approx(expected["psnr_db"], abs=0.05)
    assert float(rec["ssim"].mean()) == pytest.approx(expected["ssim"], abs=2e-3)


def test_readme_numbers_come_from_the_result_files() -> None:
    """README's quality paragraph and benchmark headline equal what scripts/readme_results.py writes from the
    model cards and the benchmark JSON."""
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_results.py"), "--check"], cwd=ROOT)
    assert r.returncode == 0, "README results are stale: run python scripts/readme_results.py"


def test_readme_headline_verdicts_follow_their_intervals() -> None:
    """Each task's headline line calls ContriMix ahead / behind only when its paired interval excludes 0."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    head = text[text.index("<!-- headline:"):text.index("<!-- /headline -->")]
    num = r"([+-]\d\.\d{3})"
    found = re.findall(rf"{num} \[{num}, {num}\]: (ahead|behind|no clear difference)", head)
    assert any(line.startswith("- CAMELYON16 RUMC → UMCU") for line in head.splitlines())
    assert len(found) >= 5  # at least one ContriMix row per direction and plate
    for diff, lo, hi, verdict in found:
        lo, hi = float(lo), float(hi)
        assert lo <= float(diff) <= hi
        assert verdict == ("ahead" if lo > 0 else "behind" if hi < 0 else "no clear difference")
    # a row with fewer seeds than registered gives no verdict (one seed's interval covers its tiles only)
    assert not re.search(rf"\(n=\d+\), {num} \[{num}, {num}\]: (ahead|behind|no clear difference)", head)
    assert all("no verdict yet" in m for m in re.findall(r"\(n=\d+\), [^;]*", head))


def test_readme_bottom_line_counts_the_verdicts_below_it() -> None:
    """The bottom line counts, per role (the shipped default, the best row), the final verdicts of the headline's
    lines; interim lines are counted apart and never as a verdict."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import readme_results

    tally = [("a", "default", "behind"), ("a", "best", "no clear difference"), ("b", "best", "ahead"),
             ("c", "best", "interim, 3 of 10 seeds: no verdict yet")]
    line = readme_results._bottom_line(tally)
    assert "as shipped is behind in 1 of 1" in line and "not clearly different in 1, ahead" not in line
    assert "ahead in 1, not clearly different in 1 of 2" in line and "1 domains are interim" in line
    assert "neither is ahead" not in line  # one row is ahead
    assert "neither is ahead" in readme_results._bottom_line(tally[:2])
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    head = text[text.index("<!-- headline:"):text.index("<!-- /headline -->")]
    bullets = [b for b in head.splitlines() if b.startswith("- ")]
    final = [b for b in bullets if "interim" not in b]
    assert "picked on the results, " in head.splitlines()[1] and len(final) >= 5
    few = next(b for b in bullets if b.startswith("- MoNuSeg `few-sites`"))
    assert "Disclosure 2" in few and "`contrimix-camelyon-batch`" in few and "`contrimix-fold`" in few


def test_benchmarks_page_comes_from_the_result_files() -> None:
    """docs/benchmarks.md is exactly what benchmarks/make_docs.py writes from the committed JSON files."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_docs.py"), "--check"], cwd=ROOT)
    assert r.returncode == 0, "docs/benchmarks.md is stale: run python benchmarks/make_docs.py"


def test_docs_name_no_removed_paths() -> None:
    """Sentences that name a file or module name one that exists."""
    stale = ("configs/he-lite.json", "configs/fluorescence-lite.json", "benchmarks/_common.py", "_data.py",
             "contrimix_aug.checkpoint", "training/metrics.py", "clear-terms", "HE_CLEAR_TERMS")
    for path in DOCS + [ROOT / "contrimix_aug" / "recipes" / "README.md"]:
        text = path.read_text(encoding="utf-8")
        for s in stale:
            assert s not in text, f"{path.name} still names {s!r}"


# ---------------------------------------------------------------------------------------------------------------
# recipe defaults: one source of truth (the shipped recipe files), every table compared with it
# ---------------------------------------------------------------------------------------------------------------
def _md_table(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header row starts with ``| first_header |``, as {header: cell}."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


@pytest.mark.parametrize("doc", ["docs/training.md", "contrimix_aug/recipes/README.md"])
def test_recipe_tables_match_the_shipped_recipes(doc: str) -> None:
    from contrimix_aug.cli.cmd_train import RECIPE_COLUMNS, recipe_summary
    from contrimix_aug.training import RECIPES, load_recipe

    rows = _md_table((ROOT / doc).read_text(encoding="utf-8"), "recipe")
    assert [r["recipe"].strip("`") for r in rows] == list(RECIPES)
    for row in rows:
        name = row["recipe"].strip("`")
        expected = recipe_summary(name)
        for col in RECIPE_COLUMNS:
            assert row[col] == expected[col], f"{doc}: {name} {col}: {row[col]!r}, the recipe gives {expected[col]!r}"
        recipe = load_recipe(name)
        assert row["K"] == str(recipe["num_attributes"]) and row["lr"] == f"{recipe['lr']:g}"
        for k in re.findall(r"\bK = (\d+)", row["what"]):  # prose in the row agrees with the columns
            assert k == row["K"], f"{doc}: {name} says K = {k}"


def test_training_flag_defaults_are_what_a_run_gets() -> None:
    """docs/training.md's flag table: each default is the default recipes' value (he-lite / fluorescence-lite) over
    TrainConfig's, as `contrimix-aug train` uses it without the flag."""
    from contrimix_aug.cli.cmd_train import _show_loss
    from contrimix_aug.training import TrainConfig, load_recipe

    rows = {r["flag"].strip("`"): r["default"] for r in _md_table((ROOT / "docs/training.md").read_text(), "flag")}
    base = TrainConfig()
    keys = {"--steps": "steps", "--batch-size": "batch_size", "--patch-size": "patch_size",
            "--num-attributes": "num_attributes", "--num-mixes": "num_mixes", "--lr": "lr",
            "--weight-decay": "weight_decay", "--seed": "seed", "--checkpoint-every": "checkpoint_every",
            "--val-every": "val_every", "--log-every": "log_every", "--loss": "loss", "--arch": "arch",
            "--device": "device", "--amp": "amp", "--num-workers": "num_workers"}
    assert set(keys) <= set(rows)
    for flag, key in keys.items():
        values = []
        for recipe in ("he-lite", "fluorescence-lite"):
            v = load_recipe(recipe).get(key, getattr(base, key))
            values.append(_show_loss(v) if key == "loss" else f"{v:g}" if isinstance(v, float) else str(v))
        want = values[0] if values[0] == values[1] else f"{values[0]} (he-lite) / {values[1]} (fluorescence-lite)"
        assert rows[flag] == want, f"docs/training.md {flag}: {rows[flag]!r}, a run gets {want!r}"


def test_train_examples_agree_on_steps() -> None:
    """The README and docs/training.md open with the same folder example: same --steps (the default)."""
    from contrimix_aug.training import TrainConfig

    found = set()
    for path in (ROOT / "README.md", ROOT / "docs" / "training.md"):
        first = next(line for line in path.read_text(encoding="utf-8").splitlines()
                     if line.startswith("contrimix-aug train path/to/tiles"))
        found.add(int(re.search(r"--steps (\d+)", first).group(1)))
    assert found == {TrainConfig().steps}


# ---------------------------------------------------------------------------------------------------------------
# benchmark result files: compact (gzip-compressed JSON), read by the doc generators
# ---------------------------------------------------------------------------------------------------------------
def test_benchmark_results_are_compressed_and_read_back() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from dg import report as R

    bench = ROOT / "docs" / "benchmarks"
    assert not list(bench.glob("dg_*.json")), "per-run results belong in dg_*.json.gz (report.write_json)"
    files = sorted(bench.glob("dg_*.json.gz"))
    assert {"dg_camelyon16.json.gz", "dg_bbbc021.json.gz", "dg_camelyon16_posthoc.json.gz",
            "dg_bbbc021_posthoc.json.gz"} <= {f.name for f in files}
    assert sum(f.stat().st_size for f in files) < 3_000_000  # about 10 MB as plain JSON
    loaded = R.load_results(bench, "dg_")
    assert [d["_file"] for d in loaded] == [f.name for f in files]
    bb = R.read_json(bench / "dg_bbbc021.json.gz")
    assert all(len(r["correct"]) == r["n_test_items"] for r in bb["rows"])  # per-item detail kept, not dropped


def test_result_writer_is_reproducible_and_reads_both_forms(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np

    from dg import report as R

    obj = {"rows": [{"acc": np.float32(0.5), "correct": [1, 0, 1], "nan": float("nan")}], "n": np.int64(3)}
    a = R.write_json(tmp_path / "a" / "dg_x.json.gz", obj)
    b = R.write_json(tmp_path / "b" / "dg_x.json.gz", obj)
    assert a.read_bytes() == b.read_bytes() and a.read_bytes()[:2] == b"\x1f\x8b"  # gzip, byte-identical
    plain = R.write_json(tmp_path / "a" / "dg_y.json", obj)
    want = {"rows": [{"acc": 0.5, "correct": [1, 0, 1], "nan": None}], "n": 3}
    assert R.read_json(a) == R.read_json(plain) == want
    (tmp_path / "a" / "dg_x.json").write_text('{"stale": true}')  # a stem in both forms: the .gz wins
    assert [(d["_file"], "stale" in d) for d in R.load_results(tmp_path / "a", "dg_")] == [
        ("dg_x.json.gz", False), ("dg_y.json", False)]
    assert R.result_stem("dg_x.json.gz") == R.result_stem("dg_x.json") == "dg_x"


def test_changelog_names_this_version_first() -> None:
    """The newest CHANGELOG entry is the version the package reports, so a release never ships an old changelog."""
    import contrimix_aug

    versions = re.findall(r"^## (\d+\.\d+\.\d+)", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    assert versions and versions[0] == contrimix_aug.__version__, (versions[:2], contrimix_aug.__version__)
