"""The code in README.md and docs/*.md runs as written (in order, one namespace per file)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


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
    return None


@pytest.mark.parametrize("path", [p for p in DOCS if _blocks(p)], ids=lambda p: p.name)
def test_doc_code_runs(path: Path) -> None:
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
    assert "README.md" in ci  # .ci/run executes the README's test command verbatim


def test_model_cards_match_shipped_weights() -> None:
    import json

    from contrimix_aug import load_weights
    from contrimix_aug.weights import _bundled_path

    for name in ("he", "fluorescence"):
        w = load_weights(_bundled_path(name))
        card = json.loads((ROOT / "docs" / "weights" / f"{name}.json").read_text())
        assert w.meta["name"] == name
        assert w.meta["steps"] == card["training"]["steps"]
        md = (ROOT / "docs" / "weights" / f"{name}.md").read_text()
        assert w.meta["command"] in md
        summary = card.get("left_out_summary")
        if summary:
            assert w.meta["quality"] == summary
            assert f"{summary['psnr_db_mean']:.2f}" in md


@pytest.mark.network
@pytest.mark.parametrize("name,source", [("he", "hgsc_stroma"), ("he", "tcia"), ("fluorescence", "dsb")])
def test_shipped_weights_meet_their_card(name: str, source: str) -> None:
    """Re-measure the shipped weights on the card's held-out patches: the card's numbers are reproduced."""
    import json

    from contrimix_aug import load_model
    from contrimix_aug.data import FLUO_SOURCES, FluorescenceSourcesDataset, HESourcesDataset
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
    """README's benchmark headline equals what scripts/readme_benchmarks.py writes from the JSON results, and its
    quality line equals the model card's leave-one-source-out summary."""
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_benchmarks.py"), "--check"], cwd=ROOT)
    assert r.returncode == 0, "README benchmark section is stale: run python scripts/readme_benchmarks.py"
    card = json.loads((ROOT / "docs" / "weights" / "he.json").read_text())
    s = card["left_out_summary"]
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"reconstruction {s['psnr_db_mean']:.1f} dB PSNR" in text
    assert f"under a swap (SSIM of OD luminance) {s['structure_ssim_mean']:.2f}" in text
    assert f"towards\nthe donor in {s['closer_to_donor_as_content']:.1%} of swaps" in text
    worst = min(card["left_out_sources"], key=lambda src: card["left_out_sources"][src]["psnr_db"])
    assert f"({worst}) reconstructs at {s['psnr_db_min_source']:.1f} dB" in text
