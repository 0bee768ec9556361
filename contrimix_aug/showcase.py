"""The demo behind ``contrimix-aug demo``: pretrained weights at work on the real tiles bundled with the package (H&E tiles for
3-channel weights, fluorescence nuclei for 1-channel weights).

H&E weights with an attribute bank: the picture shows real tissue (the bundled tiles) re-rendered in the looks of
several real labs of the bank (one column per lab, the labs chosen far apart in attribute space). Every render in
the picture passed
:func:`contrimix_aug.quality.plausible` and has no pixel artefact of one kind on more than 1 % of its pixels
(:func:`contrimix_aug.quality.render_artefacts`; the threshold of ``scripts/measure_plausibility.py``): a rejected
one is redrawn (another bank entry of the same lab), and a lab whose look stays rejected is skipped, as the printed
``looks`` and ``plausibility`` say. Other weights: the batch before/after and a content × donor swap matrix.

Prints reconstruction and swap measures, and the plausibility of what is shown.

``images=``: the user's own tiles instead of the bundled ones (centre crops of ``size`` px), with a first answer to
"do these weights suit my images?": the share of them whose colours are those of real H&E
(:func:`contrimix_aug.quality.plausible`, under which real crops of a lab never seen pass 95 % of the time).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["run_demo"]

LOOKS = 6
"""Labs whose look the demo shows (fewer when the bank has fewer)."""
TRIES = 12
"""Bank entries tried per lab before the lab is skipped."""
ARTEFACT_RENDER = 0.01
"""A render with more than this fraction of its pixels flagged by one kind of :func:`render_artefacts` is rejected."""
USER_ROWS = 6
"""Rows of the picture (of the user's images, ``images=``)."""
USER_PLAUSIBLE_LOW = 0.7
"""Below this share of plausible inputs, the user's images are said not to look like the H&E the weights know (real
crops of an unseen lab pass 95 % of the time). ``scripts/measure_demo_checks.py`` (``docs/weights/demo_checks.json``),
``camelyon`` and ``he``: real H&E of the benchmarks' held-out labs 0.875-1.00; BBBC021 fluorescence as RGB, inverted
H&E and a folder with every other tile grey 0.00-0.50."""
USER_STRUCTURE_LOW = 0.9
"""Below this lowest structure SSIM of a swap (:class:`~contrimix_aug.quality.SwapReport`), the renders are said to
lose the user's tissue structure. Same measurement: real H&E of held-out labs 0.94-1.00; the images above that are not
H&E 0.34-0.87; a model trained for 6 steps -0.03-0.09."""


def _user_tiles(images: Sequence[str | os.PathLike], channels: int, size: int, max_images: int,
                scale: float = 1.0) -> tuple[torch.Tensor, list[str], int, dict[str, int]]:
    """(N, C, size, size) centre crops in [0, 1] of the first ``max_images`` image files given (folders: their
    images, recursive, sorted), each resized by ``scale`` first; their file names, how many images were found, and
    counts of the N: ``padded`` (smaller than ``size``, mirror-padded), ``colour`` (colour RGB files read as grey by
    1-channel weights: brightfield given to fluorescence weights?)."""
    import torch.nn.functional as F

    from .data.datasets import ImageFolderDataset, fit_to_size
    from .data.readers import IMAGE_EXTENSIONS, read_image, to_grey, to_tensor

    small: list[bool] = []
    colour: list[bool] = []

    def tile(path: Path) -> torch.Tensor:
        if channels == 1:  # one read: the file as stored, then its grey
            native = read_image(path, None)
            rgb = to_tensor(native)[:3]  # colour: the channels differ by more than 0.1 on average (H&E: 0.18-0.35)
            colour.append(rgb.shape[0] >= 3 and float((rgb - rgb.roll(1, 0)).abs().amax(0).mean()) > 0.1)
            t = to_tensor(to_grey(native) if native.shape[-1] in (1, 3, 4) else read_image(path, 1))
        else:
            t = to_tensor(read_image(path, 3))
        if scale != 1.0:
            t = F.interpolate(t[None], scale_factor=scale, mode="bilinear", antialias=scale < 1,
                              align_corners=False)[0].clamp(0, 1)
        small.append(min(t.shape[-2:]) < size)
        return to_tensor(fit_to_size(t.permute(1, 2, 0).numpy(), size, "center", None)[0])

    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if size < 8:
        raise ValueError(f"size: the crop must be at least 8 px, got {size}.")
    if max_images < 2:
        raise ValueError(f"max_images: at least 2 (each image is paired with another), got {max_images}.")
    paths: list[Path] = []
    for item in images:
        path = Path(item).expanduser()
        if path.is_dir():
            paths += ImageFolderDataset(path).paths
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise ValueError(f"{path}: not an image file this reads ({', '.join(IMAGE_EXTENSIONS)}).")
            paths.append(path)
        else:
            raise FileNotFoundError(f"images: {path} does not exist (give image files or folders of them).")
    paths = list(dict.fromkeys(paths))
    if len(paths) < 2:
        raise ValueError(f"images: found {len(paths)} image{'s' * (len(paths) != 1)}; the demo needs at least 2 (each is paired with "
                         "another for the swap measures).")
    x = torch.stack([tile(p) for p in paths[:max_images]])
    return x, [p.name for p in paths[:max_images]], len(paths), {"padded": sum(small), "colour": sum(colour)}


TRAIN_HINT = "Train weights on your own images: contrimix-aug train FOLDER --out DIR (contrimix-aug train --help)."


def _checks(share: float | None, structure_min: float, colour_files: str | None = None) -> dict:
    """The judged checks of the user's images: colour files given to 1-channel weights, their colours (H&E weights
    only) and the structure kept by swaps."""
    out: dict = {}
    if colour_files:
        out["channels"] = {"ok": False, "text": colour_files}
    if share is not None:
        ok = share >= USER_PLAUSIBLE_LOW
        out["colours"] = {"ok": ok, "plausible_share": round(share, 4), "text": (
            f"{100 * share:.0f} % of your images have the colours of real H&E (real crops of a lab the reference "
            "never saw: 95 %)" + ("" if ok else f", under {100 * USER_PLAUSIBLE_LOW:.0f} % (fluorescence or inverted "
                                                "H&E: 0 %): these weights know H&E and may render the others oddly"))}
    ok = structure_min >= USER_STRUCTURE_LOW
    out["structure"] = {"ok": ok, "structure_ssim_min": round(structure_min, 4), "text": (
        f"every swap keeps your tissue's structure (lowest structure SSIM {structure_min:.2f}, at least "
        f"{USER_STRUCTURE_LOW:g})" if ok else
        f"some swaps lose your tissue's structure (lowest structure SSIM {structure_min:.2f}, under "
        f"{USER_STRUCTURE_LOW:g}): these weights do not take images like yours apart well")}
    good = all(c["ok"] for c in out.values())
    text = "; ".join(c["text"] for c in out.values())
    out["reading"] = (text[0].upper() + text[1:] + ". "
                      + ("These weights suit images like yours." if good else TRAIN_HINT))
    return out


def _acceptable(x: torch.Tensor, y: torch.Tensor, ref) -> torch.Tensor:
    """(B,) bool: ``y`` (renders of ``x``) is plausible H&E and has no pixel artefact on more than 1 % of it."""
    from .quality import plausible, render_artefacts

    clean = torch.stack([v <= ARTEFACT_RENDER for v in render_artefacts(x, y).values()]).all(0)
    return plausible(y, ref) & clean


def _short(lab: str) -> str:
    kind, _, name = lab.partition(":")
    return {"monuseg": f"MoNuSeg {name}", "camelyon17": f"C17 h{name}", "source": name}.get(kind, lab)[:13]


def _looks(model, g: torch.Generator) -> list[tuple[str, torch.Tensor]]:
    """Every look group of the bank, farthest first: its labs (``meta.bank_labs``) or, without them, single entries;
    ordered by greedy farthest-point selection on the groups' mean attributes (z-scaled), from the one farthest from
    the bank centre. Each group's bank rows come in a seeded random order."""
    bank = model.bank.float().cpu()
    labs = model.meta.bank_entry_labs() if model.meta is not None else []
    if len(labs) != bank.shape[0]:
        labs = [f"bank entry {i}" for i in range(bank.shape[0])]
    names = list(dict.fromkeys(labs))
    rows = {name: torch.tensor([i for i, lab in enumerate(labs) if lab == name]) for name in names}
    z = torch.stack([bank[rows[name]].mean(0).flatten() for name in names]) / bank.flatten(1).std(0).clamp_min(1e-6)
    order = [int((z - z.mean(0)).norm(dim=1).argmax())]
    while len(order) < len(names):
        d = torch.cdist(z, z[order]).min(1).values
        d[order] = -1
        order.append(int(d.argmax()))
    return [(names[i], rows[names[i]][torch.randperm(len(rows[names[i]]), generator=g)]) for i in order]


@torch.no_grad()
def _lab_looks(model, contents: torch.Tensor, seed: int, ref) -> tuple[list[torch.Tensor], list[str], dict]:
    """Columns of ``contents`` re-rendered in the looks of :data:`LOOKS` labs of the bank, farthest apart first: per
    lab, the first of up to :data:`TRIES` bank entries whose renders all pass :func:`_acceptable`; a lab without one
    is skipped (and named in the report)."""
    from .transform import ContriMix

    g = torch.Generator().manual_seed(seed)
    n = contents.shape[0]
    params = {"batch_prob": torch.ones(n), "donors": torch.zeros(n, dtype=torch.long),
              "from_bank": torch.ones(n, dtype=torch.bool), "strength": torch.ones(n)}
    columns, labels, report, skipped = [], [], {}, {}
    for lab, candidates in _looks(model, g):
        if len(columns) == LOOKS:
            break
        rejected = 0
        for row in candidates[:TRIES].tolist():
            aug = ContriMix(weights=model, p=1.0, donors="bank", bank=model.bank[row:row + 1], seed=seed)
            y = aug(contents, params=params)  # the library's own render path (render guard included)
            ok = _acceptable(contents, y, ref)
            if bool(ok.all()):
                columns.append(y)
                labels.append(_short(lab))
                report[lab] = {"bank_entry": int(row), "entries_rejected_first": rejected}
                break
            rejected += 1
        else:
            skipped[lab] = f"none of {rejected} bank entries rendered all {n} tiles acceptably"
    return columns, labels, {"per_lab": report, "labs_skipped": skipped}


def run_demo(weights: str | None = None, out: str | Path = "contrimix_demo.png", seed: int = 0, *,
             images: Sequence[str | os.PathLike] | str | os.PathLike | None = None, size: int = 96,
             max_images: int = 32, um_per_px: float | None = None) -> dict:
    """Run the demo; returns the printed measures as a dict.

    ``images``: image files or folders of them (PNG/JPEG/TIFF) to show instead of the bundled tiles: centre crops of
    ``size`` px of the first ``max_images`` (sorted); the picture shows the first :data:`USER_ROWS`, the measures
    use all of them, and ``your_images`` says how much they look like the H&E the weights know. ``um_per_px``: the
    images' resolution; they are resized to the middle of the weights' training range first (``meta.um_per_px``).
    """
    from .data.readers import load_demo_tiles
    from .quality import load_plausibility_reference, plausible, reconstruction, swap_report
    from .transform import ContriMix
    from .viz import swap_grid, tile_grid
    from .weights import load_model

    model = load_model(weights)
    channels = model.config.in_channels
    if channels not in (1, 3):
        raise ValueError(f"the demo has bundled tiles for 3-channel (H&E) and 1-channel (fluorescence) weights; "
                         f"these weights take {channels} channels.")
    yours: dict = {}
    if images is None:
        tiles, ids = load_demo_tiles(modality="he" if channels == 3 else "fluorescence")
        x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255.0
        names, rows_per_source = None, 3
    else:  # one source: rows and swaps pair the user's images with each other
        trained = model.meta.um_per_px if model.meta is not None else None
        if um_per_px is not None and not (isinstance(um_per_px, (int, float)) and um_per_px > 0):
            raise ValueError(f"um_per_px: the images' resolution in µm per pixel (> 0), got {um_per_px!r}.")
        target = (trained[0] * trained[1]) ** 0.5 if trained else None
        scale = um_per_px / target if um_per_px is not None and target is not None else 1.0
        x, names, found, counts = _user_tiles(images, channels, size, max_images, scale)
        ids, rows_per_source = ["your images"] * x.shape[0], USER_ROWS
        span = (f"{trained[0]:g}" + (f"-{trained[1]:g}" if trained[1] != trained[0] else "")) if trained else ""
        yours = {"found": found, "used": x.shape[0], "crop_px": size,
                 "resolution": (f"resized x{scale:.3g} from {um_per_px:g} to {target:.3g} um/px" if scale != 1.0
                                else f"as read; these weights trained at {span} um/px"
                                + ("" if um_per_px is not None else " (um_per_px / --um-per-px resizes them)")
                                if trained else "as read (these weights name no training resolution)")}
        if counts["colour"]:
            yours["colour_files"] = (f"{counts['colour']} of your images are colour RGB (brightfield H&E, or a "
                                     "multi-channel composite?); these 1-channel weights read them as grey: H&E "
                                     "weights (camelyon, he) take colour")
        if counts["padded"]:
            yours["padded"] = (f"{counts['padded']} image(s) smaller than {size} px were mirror-padded to it; the picture "
                               "shows the mirrored border (a smaller --size avoids it)")
    srcs = sorted(set(ids))
    idx = {s: [i for i, v in enumerate(ids) if v == s] for s in srcs}
    shown_x = x[:16]  # the before/after rows of the picture
    half = (shown_x.shape[0] + 1) // 2
    shown: dict = {}
    if channels == 3 and model.bank.shape[0] > 0:
        ref = load_plausibility_reference()
        contents = torch.stack([x[i] for s in srcs for i in idx[s][:rows_per_source]])
        c_labels = ([s for s in srcs for _ in idx[s][:rows_per_source]] if names is None
                    else [n[:13] for n in names[:rows_per_source]])
        columns, labels, looks = _lab_looks(model, contents, seed, ref)
        rows = [torch.cat([contents[i:i + 1]] + [c[i:i + 1] for c in columns]) for i in range(contents.shape[0])]
        pics = [tile_grid(rows, c_labels, ["input"] + labels)]
        renders = torch.cat(columns) if columns else contents[:0]
        ok = _acceptable(contents.repeat(len(columns), 1, 1, 1), renders, ref) if columns else renders.new_ones(0)
        shown = {"looks": {
            "what": f"{contents.shape[0]} {'bundled tiles' if names is None else 'of your images'} (rows) re-rendered in the looks of {len(columns)} labs of the "
                    "attribute bank (columns, chosen far apart), one bank entry per lab, full strength",
            "labs": list(looks["per_lab"]), **looks},
            "plausibility": {
                "check": f"quality.plausible (shipped reference: {len(ref.lab_names)} labs, threshold "
                         f"{ref.threshold:.3f}) and no quality.render_artefacts kind on more than "
                         f"{ARTEFACT_RENDER:.0%} of a render's pixels",
                "renders_in_picture": int(renders.shape[0]),
                "plausible_share": round(float(ok.float().mean()), 4) if columns else None,
                "entries_rejected_before_the_shown_ones": sum(v["entries_rejected_first"]
                                                              for v in looks["per_lab"].values())}}
    else:
        aug = ContriMix(weights=model, p=1.0, seed=seed)
        y = aug(shown_x)
        per = 2 if names is None else 4
        contents = torch.stack([x[i] for s in srcs for i in idx[s][:per]])
        c_labels = [s for s in srcs for _ in idx[s][:per]] if names is None else [n[:13] for n in names[:per]]
        donors = torch.stack([x[idx[s][-1]] for s in srcs] + [x[idx[s][-2]] for s in srcs])
        batch_pic = tile_grid([shown_x[:half], y[:half], shown_x[half:], y[half:]],
                              ["input", "ContriMix", "input", "ContriMix"])
        d_labels = srcs + srcs if names is None else [names[i][:13] for s in srcs for i in (idx[s][-1], idx[s][-2])]
        pics = [batch_pic, swap_grid(model, contents, donors, c_labels, d_labels)]
    from PIL import Image

    canvas = Image.new("RGB", (max(p.width for p in pics), sum(p.height for p in pics) + 8 * (len(pics) - 1)), "white")
    top = 0
    for p in pics:
        canvas.paste(p, (0, top))
        top += p.height + 8
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)

    rec = reconstruction(model, x)
    # every tile as content, its donor the tile at the same rank in the next source (cyclic), or the next tile
    # when there is only one source
    other = []
    for i, s in enumerate(ids):
        donor_src = srcs[(srcs.index(s) + 1) % len(srcs)]
        rank = idx[s].index(i) + (len(srcs) == 1)
        other.append(idx[donor_src][rank % len(idx[donor_src])])
    rep = swap_report(model, x, x[other]).summary()
    if yours:
        yours.update(_checks(float(plausible(x).float().mean()) if channels == 3 else None,
                             float(rep["structure_ssim_min"]), yours.get("colour_files")))
    result = {
        "weights": model.meta.name if model.meta is not None else str(weights or "he"),
        "tiles": len(ids),
        "sources": srcs,
        **({"your_images": yours} if yours else {}),
        "reconstruction_psnr_db": round(float(rec["psnr"].mean()), 2),
        "reconstruction_ssim": round(float(rec["ssim"].mean()), 4),
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in rep.items()},
        **shown,
        "picture": str(out),
    }
    return result
