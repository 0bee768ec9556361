"""Write the README's measured numbers from the model cards and the benchmark JSON files (never by hand).

The benchmark results are read from ``docs/benchmarks/dg_*.json.gz`` (gzip-compressed JSON, as
``benchmarks/dg/report.py`` writes them; a plain ``.json`` of the same stem is read when no ``.gz`` exists).

    python scripts/readme_results.py           # rewrites the three marked sections of README.md
    python scripts/readme_results.py --check   # exit 1 if README.md is not what this script would write
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "docs" / "benchmarks"
sys.path.insert(0, str(ROOT / "benchmarks"))
from dg.labels import PEER_LABELS  # noqa: E402  (no torch: a plain table)
from dg.stats import class_1_calls  # noqa: E402  (numpy only)

LABELS = {
    **PEER_LABELS,
    "contrimix-camelyon-colorjitter": "ContriMix `camelyon`, then ColorJitter",
    "contrimix-camelyon-batch": "ContriMix `camelyon`, batch donors",
    "contrimix-camelyon-sampled": "ContriMix `camelyon`, sampled attributes",
    "contrimix-camelyon": "**ContriMix, bundled `camelyon`**",
    "contrimix-camelyon-both": "ContriMix `camelyon`, batch + bank donors",
    "contrimix-camelyon-normalise": "ContriMixNormalize `camelyon`",
    "contrimix-camelyon-bank": "ContriMix `camelyon`, bank donors (post hoc)",
    "contrimix-camelyon-r2": "**ContriMix `camelyon`, release 0.3 default**: sampled stains, 26-lab bank, guard (post hoc)",
    "contrimix-fold-ls8": "ContriMix per fold, `fluorescence-ls` (post hoc)",
    "contrimix-he": "ContriMix, bundled `he`",
    "contrimix-fold": "ContriMix trained on the training domain only",
    "contrimix-joint": "ContriMix joint protocol (authors')",
    "plate-zscore": "per-plate z-scoring",
    "gain-gamma": "gain/gamma jitter",
}


# a method name whose meaning changed between the runs of one table and another's: CAMELYON16's registered
# contrimix-camelyon ran release 0.2's default (its row contrimix-camelyon-r2 is today's), MoNuSeg's ran 0.3's
LABELS_BY_DATASET = {
    "camelyon16": {"contrimix-camelyon": "ContriMix `camelyon`, release 0.2 default: batch donors, no guard"},
}


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _result(stem: str) -> dict | None:
    """The benchmark result ``docs/benchmarks/STEM.json.gz`` (else ``STEM.json``), or None when neither exists.
    Same lookup as ``report.result_file`` (not imported here: that module pulls in torch)."""
    gz = BENCH / f"{stem}.json.gz"
    if gz.is_file():
        return json.loads(gzip.decompress(gz.read_bytes()).decode("utf-8"))
    return _json(BENCH / f"{stem}.json")


def quality() -> str:
    cam = _json(ROOT / "docs/weights/camelyon.json")
    he = _json(ROOT / "docs/weights/he.json")
    parts = []
    if cam:
        s = cam["heldout_summary"]
        parts.append(
            f"Measured quality ([model cards](docs/weights/)): `camelyon` on the CAMELYON17 hospitals it never saw "
            f"(1 and 2, crops at 0.5 µm/px) reconstructs at {s['psnr_db_mean']:.1f} dB PSNR, keeps structure under a "
            f"swap (SSIM of OD luminance) at {s['structure_ssim_mean']:.2f} and moves colour towards the donor in "
            f"{s['closer_to_donor_as_content']:.1%} of swaps. With the same tissue in another hospital's stain as the "
            f"donor, a swap closes {s['gap_closed']['beer-lambert']:.2f} / {s['gap_closed']['lab-cdf']:.2f} of the "
            f"colour gap (Beer–Lambert / CIELAB renderer; the best peer given the same reference, "
            f"{s['best_peer_gap_closed']['beer-lambert']:.2f} / {s['best_peer_gap_closed']['lab-cdf']:.2f}).")
    if he and he.get("left_out_summary"):
        s = he["left_out_summary"]
        worst = min(he["left_out_sources"], key=lambda k: he["left_out_sources"][k]["psnr_db"])
        parts.append(
            f"`he` on real H&E sources left out of training (leave-one-source-out, mean of "
            f"{len(he['left_out_sources'])}): {s['psnr_db_mean']:.1f} dB, structure {s['structure_ssim_mean']:.2f}, "
            f"colour towards the donor in {s['closer_to_donor_as_content']:.1%} of swaps; its weakest source "
            f"({worst}) reconstructs at {s['psnr_db_min_source']:.1f} dB.")
    return "\n".join(parts) + "\n"


POST_HOC_NAMES = ("contrimix-camelyon-bank", "contrimix-camelyon-r2")


POST_HOC_BBBC021 = ("contrimix-fold-ls8",)


MONUSEG_CONTRIMIX = ("contrimix-camelyon", "contrimix-camelyon-batch", "contrimix-camelyon-bank",
                     "contrimix-camelyon-both", "contrimix-camelyon-sampled", "contrimix-he", "contrimix-fold",
                     "contrimix-camelyon-colorjitter")


def _summary(run: dict) -> dict:
    return {(s["heldout"], s["method"]): s for s in run["summary"]}


def _merged(run: dict, post: dict | None, post_names: tuple[str, ...]) -> dict:
    """(held-out, method) -> summary row: the registered run's, plus the post-hoc file's rows of ``post_names``
    (a post-hoc file repeats the registered rows)."""
    return {**_summary(run), **{k: v for k, v in (_summary(post) if post else {}).items() if k[1] in post_names}}


def _versus_best_peer(run: dict, post: dict | None, post_names: tuple[str, ...], held: str,
                      metric: str = "acc") -> dict[str, dict]:
    """method -> its paired difference in ``metric`` to the best peer on ``held``, taken from the same files as
    :func:`_merged` (classification rows carry no metric name: they are accuracy)."""
    return {d["method"]: d for r in (post, run) if r for d in r.get("paired_vs_best_peer", [])
            if d["heldout"] == held and (r is run or d["method"] in post_names) and d.get("metric", "acc") == metric}


def _arrow(held: str) -> str:
    return held.replace("->", " → ")


def _table(run: dict, post: dict | None, post_names: tuple[str, ...], helds: tuple[str, ...], column,
           metric: str, title: str, keys: tuple[str, str] = ("acc", "auroc"), second: str = "AUROC",
           model: str = "classifier, epochs") -> list[str]:
    """Two measures (``keys``: accuracy and AUROC; segmentation: AJI and Dice) per method (registered, then post-hoc
    rows) and held-out domain (its first column headed ``column(held)``, its second ``second``); partial runs give
    n. ``metric`` names the measures in the title."""
    s = _merged(run, post, post_names)
    seeds = run["settings"]["seeds"]
    partial = run.get("complete") is False or bool(post and post.get("complete") is False)
    out = [f"{title} ({metric}, mean ± std over "
           + (f"the seeds run so far, of the {len(seeds)} registered (n per cell)" if partial else f"{len(seeds)} seeds")
           + f"; the same small {model} and p = {run['augmentation_p']} for every method):\n"]
    if partial:
        done = f"{run['runs_done']} of the {run['runs_planned']} registered runs"
        if post:
            done += f" and {post['runs_done']} of the {post['runs_planned']} post-hoc runs"
        out.append(f"**Partial run: {done} are done** (the 2-core CPU runs the protocol in parts; the missing runs "
                   "are listed in docs/benchmarks.md)." + (" Post-hoc rows were chosen after the diagnostic, not "
                                                           "pre-registered." if post else "") + "\n")
    out.append("| method | " + " | ".join(f"{column(h)} | {second}" for h in helds) + " |")
    out.append("|---|" + "---|---|" * len(helds))

    def cell(r, k):
        return _pm(r, k, len(seeds)) if r else "–"

    methods = [*run["settings"]["methods"], *(m for m in post_names if any(k[1] == m for k in s))]
    labels = {**LABELS, **LABELS_BY_DATASET.get(run.get("dataset", ""), {})}
    for m in methods:
        out.append(f"| {labels.get(m, m)} | " + " | ".join(f"{cell(s.get((h, m)), keys[0])} | "
                                                          f"{cell(s.get((h, m)), keys[1])}" for h in helds) + " |")
    out.append("")
    return out


def _threshold_note(run: dict, post: dict | None, held: str) -> str:
    """How many rows call nearly every test patch one class (the threshold moved under the shift)."""
    mean = class_1_calls([*run["rows"], *(post["rows"] if post else [])], held)
    one_class = sorted(m for m, v in mean.items() if v < 0.1 or v > 0.9)
    return (f"On {_arrow(held)}, {len(one_class)} of the {len(mean)} rows call more than 90 % of the test patches one "
            "class (mean over seeds; half are tumour; the share per row is in docs/benchmarks.md): there accuracy "
            "mostly says where the decision threshold landed on the unseen hospital, and AUROC how well its patches "
            "are ranked.\n")


def _versus_best(run: dict, post: dict | None, post_names: tuple[str, ...], names: tuple[str, ...],
                 helds: tuple[str, ...], metric: str = "acc", word: str = "accuracy") -> list[str]:
    """One line per (ContriMix method, held-out domain): its paired difference in ``metric`` to the best peer."""
    out = []
    for name in names:
        for held in helds:
            bp = run.get("best_peer", {}).get(held)
            d = _versus_best_peer(run, post, post_names, held, metric).get(name)
            if bp and d:
                tags = [t for t, on in (("post hoc", name in post_names),
                                        ("its weights saw the test hospital",
                                         name.startswith(SAW_TEST_DOMAIN.get(held, "\0")))) if on]
                tag = f" ({'; '.join(tags)})" if tags else ""
                out.append(f"{_arrow(held)}: `{name}`{tag} minus the best peer (`{bp}`): {d['diff']:+.3f} {word}, "
                           f"95 % interval [{d['lo']:+.3f}, {d['hi']:+.3f}] (better in {d['seeds_a_better']} "
                           f"of {d['seeds']} seeds).")
    return out + [""]


def benchmarks() -> str:
    c16 = _result("dg_camelyon16")
    bb = _result("dg_bbbc021")
    tp = _json(ROOT / "benchmarks/results/throughput_cpu.json")
    out = ["Real hospital and plate shifts, pre-registered protocol, every run reported "
           "([docs/benchmarks.md](docs/benchmarks.md)). Written by `scripts/readme_results.py` from the JSON.\n"]
    if c16:
        post = _result("dg_camelyon16_posthoc")
        out += _table(c16, post, POST_HOC_NAMES, ("RUMC->UMCU", "UMCU->RUMC"),
                      lambda h: f"{_arrow(h)} accuracy", "per-patch accuracy and AUROC",
                      "**CAMELYON16**, tumour vs normal, trained on one hospital's patches and tested on the other's")
        out += _versus_best(c16, post, POST_HOC_NAMES,
                            ("contrimix-camelyon-r2", "contrimix-camelyon", "contrimix-camelyon-both", "contrimix-he",
                             "contrimix-fold", "contrimix-joint", "contrimix-camelyon-bank"),
                            ("RUMC->UMCU", "UMCU->RUMC"))
        out.append(_threshold_note(c16, post, "RUMC->UMCU"))
        out.append("Caveat on UMCU → RUMC: the bundled `camelyon` weights and their bank were trained label-free on "
                   "CAMELYON17 centres 0, 3, 4, and centre 0 is Radboud UMC, so the `camelyon` rows of that "
                   "direction drew on unlabelled images of the test hospital; there `contrimix-fold` (trained on "
                   "UMCU alone), `contrimix-he` (other labs) and `contrimix-joint` (trained with the classifier on "
                   "UMCU) are the clean comparisons. RUMC → UMCU, the primary endpoint, is clean for every method.\n")
    if bb:
        post = _result("dg_bbbc021_posthoc")
        plates = ("27801", "27821", "27861")
        out += _table(bb, post, POST_HOC_BBBC021, plates, lambda p: f"test plate {p}", "per-crop accuracy and AUROC",
                      "**BBBC021**, DMSO vs cycloheximide, leave one plate out")
        out += _versus_best(bb, post, POST_HOC_BBBC021, ("contrimix-fold", "contrimix-fold-ls8"), plates)
    mo = _result("dg_monuseg")
    if mo:
        variants = ("official", "few-sites")
        out += _table(mo, None, (), variants, lambda v: f"{v} AJI", "per-tile AJI and Dice",
                      "**MoNuSeg**, nuclei segmentation, trained on the tiles of 18 (`official`) or 3 (`few-sites`) "
                      "TCGA sites and tested on 14 other sites", ("aji", "dice"), "Dice", "U-Net, steps")
        out += _versus_best(mo, None, (), MONUSEG_CONTRIMIX, variants, "aji", "AJI")
        out.append("On `few-sites`, the ContriMix rows that draw on the bundled bank see the stains (attributes "
                   "only: no pixels, no labels) of the 15 MoNuSeg training sites that variant's peers never see, "
                   "because the banks hold all 18 training sites (never a test site): that is what the library "
                   "ships; `contrimix-camelyon-batch` and `contrimix-fold` use none of it "
                   "(docs/benchmarks/preregistration.md, \"Disclosure 2\").\n")
    if tp:
        checks = {c["target"]: c["value"] for c in tp["checks"]}
        v = lambda k: checks.get(k, float("nan"))  # noqa: E731

        def ratio(peer: str) -> float:  # ContriMix fp32 over the peer's float32 batches, 64x96² on the CPU
            return next((r["ratio_contrimix_fp32_over_peer"] for r in tp.get("ratios", [])
                         if (r["device"], r["batch"], r["size"], r["peer"], r["peer_dtype"])
                         == ("cpu", 64, 96, peer, "float32")), float("nan"))
        out.append(
            f"Speed (`python benchmarks/throughput.py`, same run, same real tiles, 2-core CPU; weights "
            f"{tp['contrimix_weights'].split(';')[0]}): ContriMix with its shipped default (sampled donors, render "
            f"guard) renders 64×96² batches at "
            f"{v('CPU 64x3x96x96: ContriMix / hestain-preset'):.2f}× the speed of albumentations HEStain and "
            f"{v('CPU 64x3x96x96: ContriMix / torchstain-macenko (faster backend)'):.2f}× torchstain Macenko, "
            f"16×224² batches at {v('CPU 16x3x224x224: ContriMix / hestain-preset'):.2f}× and "
            f"{v('CPU 16x3x224x224: ContriMix / torchstain-macenko (faster backend)'):.2f}×, and "
            f"{v('CPU per-sample, 1 thread, 96 px, default donors (img/s)'):.0f} single 96 px images/s on one "
            f"core; against the batched float augmentations of the same run it is slower at 64×96²: "
            f"{ratio('kornia-colorjitter'):.2f}× kornia ColorJitter, {ratio('hed-light'):.2f}× HED jitter. GPU figures "
            "were not measured for this release.")
        out.append("")
    return "\n".join(out)


# ContriMix methods whose weights saw unlabelled images of that direction's test hospital (docs/benchmarks.md)
SAW_TEST_DOMAIN = {"UMCU->RUMC": "contrimix-camelyon"}


def _verdict(d: dict, seeds: int, registered: int) -> str:
    """ahead / behind / no clear difference; none before every registered seed is in (an interim interval over
    one seed covers tiles only, and seed-to-seed swings are larger)."""
    if seeds < registered:
        return (f"interim, {seeds} of {registered} seeds" + (" (interval over tiles only)" if seeds == 1 else "")
                + ": no verdict yet")
    return "ahead" if d["lo"] > 0 else "behind" if d["hi"] < 0 else "no clear difference"


def _pm(r: dict, key: str, registered: int) -> str:
    """mean ± std of ``key`` in a summary row; one seed has no spread; n when not every registered seed is in."""
    mean, std, k = r[key + "_mean"], r[key + "_std"], r["seeds"]
    return f"{mean:.3f}" + (f" ± {std:.3f}" if k > 1 else "") + (f" (n={k})" if k < registered else "")


def _headline_line(run: dict, post: dict | None, post_names: tuple[str, ...], held: str, where: str,
                   metric: str = "acc", defaults: tuple[str, ...] = ("contrimix-camelyon",),
                   also: tuple[str, ...] = (), also_label: str = "", tally: list | None = None) -> str:
    """The row of ``ContriMix(weights="camelyon")`` as shipped (the first of ``defaults`` that was run: the current release's default use first)
    and the best ContriMix row (by the mean of ``metric``; a registered row wins a tie) of one held-out domain against
    its best peer, with their paired differences; ``also``: further rows shown after ``also_label``; ``tally``: gets
    ``(held, "default" | "best", verdict)`` of the rows shown."""
    s, pairs = _merged(run, post, post_names), _versus_best_peer(run, post, post_names, held, metric)
    bp = run.get("best_peer", {}).get(held)
    clean = [m for m in pairs if not m.startswith(SAW_TEST_DOMAIN.get(held, "\0"))]
    if not bp or not clean:  # a held-out domain not run yet
        return ""
    n = len(run["settings"]["seeds"])

    def show(m: str, role: str = "") -> str:
        r, d = s[(held, m)], pairs[m]
        tag = " (post hoc)" if m in post_names else ""
        verdict = _verdict(d, min(r['seeds'], s[(held, bp)]['seeds']), n)
        if tally is not None and role:
            tally.append((held, role, verdict))
        return f"`{m}`{tag} {_pm(r, metric, n)}, {d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]: {verdict}"

    best = max(clean, key=lambda m: (s[(held, m)][metric + "_mean"], m not in post_names))
    parts = [f"{where}: best peer {LABELS.get(bp, bp)} {_pm(s[(held, bp)], metric, n)}"]
    default = next((m for m in defaults if m in clean), None)  # the row of today's default use, if run
    if default and best != default:
        parts.append(f"`ContriMix(weights=\"camelyon\")` as shipped (0.3 defaults) {show(default, 'default')}")
    elif default and tally is not None:
        tally.append((held, "default", _verdict(pairs[default], min(s[(held, default)]['seeds'],
                                                                      s[(held, bp)]['seeds']), n)))
    parts.append(f"best of {len(clean)} ContriMix rows (picked on these results) {show(best, 'best')}")
    shown = [m for m in also if m in pairs and m not in (best, default)]
    if shown:
        parts.append(f"{also_label} " + ", ".join(show(m) for m in shown))
    return "; ".join(parts) + "."


def _bottom_line(tally: list) -> str:
    """One sentence over the headline's domains: how often the shipped default and the best ContriMix row are ahead
    of, level with or behind the best peer, counting only domains whose every registered seed is in."""
    def count(role: str) -> tuple[str, list[str]]:
        final = [v for _, r, v in tally if r == role and not v.startswith("interim")]
        words = [f"{said} in {final.count(verdict)}" for verdict, said in (
            ("ahead", "ahead"), ("no clear difference", "not clearly different"), ("behind", "behind"))
            if final.count(verdict)]
        return f"{', '.join(words) or 'not run'} of {len(final)}", final

    default, d_final = count("default")
    best, b_final = count("best")
    interim = sorted({h for h, _, v in tally if v.startswith("interim")})
    none_ahead = "ahead" not in d_final + b_final
    return ("**Bottom line so far:** over the held-out domains below whose every registered seed is in, "
            f"`ContriMix(weights=\"camelyon\")` as shipped is {default} (the domains where it ran) and the best "
            f"ContriMix row, picked on the results, {best}"
            + ("; neither is ahead of the best peer (a stain normalisation or a colour augmentation) on any of them"
               if none_ahead else "")
            + (f". {len(interim)} domains are interim (no verdict before every seed is in)" if interim else "")
            + ".\n\n")


def headline() -> str:
    """The README's first measured result: where ContriMix stands against the best peer on each real task."""
    c16 = _result("dg_camelyon16")
    bb = _result("dg_bbbc021")
    lines: list[str] = []
    tally: list = []
    if c16:
        post = _result("dg_camelyon16_posthoc")
        lines.append(_headline_line(c16, post, POST_HOC_NAMES, "RUMC->UMCU",
                                    "CAMELYON16 RUMC → UMCU (primary endpoint; its test set is 32 patches of one UMCU "
                                    "slide, so intervals cover seeds and patches, not hospitals)",
                                    defaults=("contrimix-camelyon-r2", "contrimix-camelyon"), tally=tally))
        lines.append(_headline_line(c16, post, POST_HOC_NAMES, "UMCU->RUMC",
                                    "UMCU → RUMC (rows whose weights never saw RUMC)", tally=tally))
    if bb:
        post = _result("dg_bbbc021_posthoc")
        lines += [_headline_line(bb, post, POST_HOC_BBBC021, p, f"BBBC021 test plate {p}", tally=tally)
                  for p in ("27801", "27821", "27861")]
    mo = _result("dg_monuseg")
    if mo:
        partial = ", partial run" if not mo.get("complete") else ""
        lines.append(_headline_line(mo, None, (), "official", f"MoNuSeg `official` (AJI{partial})", "aji",
                                    tally=tally))
        lines.append(_headline_line(
            mo, None, (), "few-sites", f"MoNuSeg `few-sites` (AJI{partial}; the shipped and bank rows draw on the "
            "stains of 15 training sites these peers never see, Disclosure 2)", "aji",
            also=("contrimix-camelyon-batch", "contrimix-fold"), also_label="rows that use no bank stains:",
            tally=tally))
    lines = [f"- {x}" for x in lines if x]
    if not lines:
        return "Our own measurements on real hospital and plate shifts are [below](#benchmarks).\n"
    return (_bottom_line(tally) +
            "**Measured here** on real hospital and plate shifts (accuracy, mean ± std over seeds; ContriMix minus "
            "the best peer with its paired 95 % interval, and whether it is ahead, behind or not clearly different; "
            "pre-registered protocol, post-hoc rows included, every run in [docs/benchmarks.md](docs/benchmarks.md), "
            "tables [below](#benchmarks)):\n\n" + "\n".join(lines) + "\n")


def render(text: str) -> str:
    for tag, body in (("headline", headline()), ("quality", quality()), ("benchmarks", benchmarks())):
        start = f"<!-- {tag}: "
        a = text.index(start)
        a = text.index("-->", a) + 3
        b = text.index(f"<!-- /{tag} -->")
        text = text[:a] + "\n" + body.rstrip() + "\n" + text[b:]
    return text


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    new = render(text)
    if "--check" in sys.argv:
        return 0 if new == text else 1
    readme.write_text(new, encoding="utf-8")
    print("wrote the results sections of README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
