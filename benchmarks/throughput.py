#!/usr/bin/env python
"""Throughput of ContriMix and its peers on the same real tiles, side by side, with checkable speed targets.

* Every peer of ``dg/methods.py`` on real H&E tiles (``contrimix_aug.data``), batches of 64×3×96×96 and
  16×3×224×224, on CPU and on CUDA when present, fp32 and bf16 where the method is a torch batch method.
  Each peer is called through its natural API: per image (uint8 H×W×3 numpy) for albumentations and torchstain,
  per batch (float B×3×H×W tensor) for kornia, the HED jitter and ContriMix. Per-image peers run on CPU only.
* Reports images/s (median of repeats after warm-up, with the spread), the ratio ContriMix / each peer, ContriMix's
  FLOPs per image (``torch.utils.flop_counter.FlopCounterMode``) and the fraction of this machine's measured matmul
  peak (a large fp32 and bf16 matmul, measured in the same run) that ContriMix reaches.
* Speed targets (PASS/FAIL): CPU, both batch shapes: ContriMix ≥ 1.0× HEStain and ≥ 1.5× torchstain Macenko;
  per-sample (one 96 px image at a time, default donors, ``torch.set_num_threads(1)``) ≥ 500 img/s; GPU ≥ 20,000 img/s
  at 96 px batch 256; ContriMix adds ≤ 10 % to a DenseNet-121 training step (only when torchvision is importable).

Writes ``benchmarks/results/throughput_<device>[_quick].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dg import report as R  # noqa: E402
from dg.methods import HE_PEERS, Method, build_peers, to_float  # noqa: E402

SHAPES = [(64, 96), (16, 224)]
TARGETS = {
    "cpu_vs_hestain": 1.0,
    "cpu_vs_macenko": 1.5,
    "per_sample_img_s": 500.0,
    "gpu_img_s_96_b256": 20000.0,
    "densenet_overhead": 0.10,
}
# every peer of the accuracy benchmark (but ERM, which does nothing), plus torchstain's torch backend
PEERS = [n for n in HE_PEERS if n != "erm"]
PEERS.insert(PEERS.index("torchstain-macenko") + 1, "torchstain-macenko-torch")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(fn: Callable[[], Any], n_items: int, device: torch.device, warmup: int, repeats: int,
          min_time: float = 0.0) -> dict[str, float]:
    """Images/s of ``fn`` (which processes ``n_items`` images): median, min, max over ``repeats``."""
    for _ in range(warmup):
        fn()
    sync(device)
    rates = []
    t_total = time.perf_counter()
    r = 0
    while r < repeats or (time.perf_counter() - t_total) < min_time and r < repeats * 5:
        t0 = time.perf_counter()
        fn()
        sync(device)
        rates.append(n_items / (time.perf_counter() - t0))
        r += 1
    return {"img_s": statistics.median(rates), "img_s_min": min(rates), "img_s_max": max(rates), "repeats": len(rates)}


def real_tiles(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 real H&E tiles, balanced over the sources that have enough tissue."""
    from contrimix_aug.data.patches import sample_source_patches

    srcs = ["cmu1", "prostate", "skin", "hgsc_nest", "hgsc_stroma"]
    per = int(np.ceil(n / len(srcs)))
    ps = sample_source_patches(srcs, size=size, n_per_source=per, seed=seed, progress=False)
    idx = np.random.default_rng(seed).permutation(len(ps.images))[:n]
    return ps.images[idx]


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """Measured TFLOP/s of an n×n×n matmul."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    reps, t0 = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - t0 < 1.0:
        a @ b
        reps += 1
        if device.type == "cuda" and reps % 10:
            continue
        sync(device)
    sync(device)
    dt = time.perf_counter() - t0
    return 2 * n**3 * reps / dt / 1e12


def count_flops(aug: torch.nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        aug(x)
    return fc.get_total_flops() / x.shape[0]


def contrimix_module(weights: Any, donors: str | None, seed: int, device: torch.device):
    """``ContriMix(weights, p=1)``; ``donors=None`` = the shipped default policy (sampled donors, render guard)."""
    import contrimix_aug

    aug = contrimix_aug.ContriMix(weights=weights, p=1.0, donors=donors, seed=seed, check_values=False)
    return aug.to(device)


# what each ContriMix row times: the shipped default, and batch donors (the release 0.2 default) for reference
CONTRIMIX_ROWS = {"contrimix": None, "contrimix-batch": "batch"}


def load_weights_or_fallback(weights: str | None, tiles: np.ndarray) -> tuple[Any, str]:
    """The ContriMix weights to time: --weights, the bundled default, or (clearly labelled) an untrained model
    with the authors' architecture: speed does not depend on the weights' values."""
    import contrimix_aug

    try:
        m = contrimix_aug.load_model(weights)
        data = m.meta.training_data if m.meta is not None else "unknown (no metadata)"
        return m, f"{weights or 'he (bundled)'}; trained on: {data}; {m.num_params} parameters"
    except Exception as err:  # noqa: BLE001
        cfg = contrimix_aug.ModelConfig()
        m = contrimix_aug.ContriMixModel(cfg)
        from contrimix_aug.bank import compute_bank

        m.bank = compute_bank(m.freeze(), to_float(tiles[:32]))
        return m, (f"UNTRAINED model with the default architecture (weights {weights or 'he'!r} unavailable: "
                   f"{str(err).splitlines()[0][:100]}); timing only, values are not meaningful")


def run_device(device: torch.device, methods: dict[str, Method], cmx_model: Any, tiles: dict[int, np.ndarray],
               args, log) -> list[dict]:
    rows = []
    for b, s in SHAPES:
        imgs = tiles[s][:b]
        x32 = to_float(imgs).to(device)
        dtypes = [torch.float32] + ([torch.bfloat16] if not args.no_bf16 else [])
        for dt in dtypes:
            x = x32.to(dt)
            for row_name, donors in CONTRIMIX_ROWS.items():
                aug = contrimix_module(cmx_model, donors, 0, device)
                with torch.no_grad():
                    r = bench(lambda: aug(x), b, device, args.warmup, args.repeats, args.min_time)
                rows.append({"device": device.type, "method": row_name, "api": "batch", "batch": b, "size": s,
                             "dtype": str(dt).replace("torch.", ""), **r})
                log(f"{device.type} {b}x3x{s}x{s} {rows[-1]['dtype']:8s} {row_name:20s} {r['img_s']:10.1f} img/s")
            for name, m in methods.items():
                if m.api == "image":
                    if device.type != "cpu" or dt != torch.float32:
                        continue
                    r = bench(lambda: [m.natural(im) for im in imgs], b, device, 1, max(1, args.repeats // 2))
                else:
                    if dt != torch.float32 and name == "kornia-colorjitter" and args.quick:
                        continue
                    try:
                        with torch.no_grad():
                            r = bench(lambda: m.natural(x), b, device, args.warmup, args.repeats, args.min_time)
                    except Exception as err:  # noqa: BLE001 - a peer that does not support the dtype
                        log(f"  {name} {dt}: {type(err).__name__}: {err}")
                        continue
                rows.append({"device": device.type, "method": name, "api": m.api, "batch": b, "size": s,
                             "dtype": str(dt).replace("torch.", "") if m.api == "batch" else "uint8",
                             "failures": m.failures, **r})
                log(f"{device.type} {b}x3x{s}x{s} {rows[-1]['dtype']:8s} {name:20s} {r['img_s']:10.1f} img/s")
    return rows


def per_sample(cmx_model: Any, tiles96: np.ndarray, args) -> dict[str, float]:
    """torchvision-Compose style: one (3, 96, 96) image per call, the default donors, one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        aug = contrimix_module(cmx_model, None, 0, torch.device("cpu"))
        xs = list(to_float(tiles96[:32]))  # 32 single (3, 96, 96) images
        with torch.no_grad():
            r = bench(lambda: [aug(x) for x in xs], len(xs), torch.device("cpu"), args.warmup, args.repeats,
                      args.min_time)
    finally:
        torch.set_num_threads(old)
    return r


def gpu_big_batch(cmx_model: Any, tiles96: np.ndarray, args) -> dict[str, Any]:
    dev = torch.device("cuda")
    reps = int(np.ceil(256 / len(tiles96)))
    x = to_float(np.concatenate([tiles96] * reps)[:256]).to(dev)
    out = {}
    for dt in (torch.float32, torch.bfloat16):
        aug = contrimix_module(cmx_model, None, 0, dev)
        xx = x.to(dt)
        with torch.no_grad():
            out[str(dt).replace("torch.", "")] = bench(lambda: aug(xx), 256, dev, args.warmup, args.repeats,
                                                       args.min_time)
    return out


def densenet_overhead(cmx_model: Any, tiles96: np.ndarray, device: torch.device, args) -> dict[str, Any] | None:
    """Time a DenseNet-121 training step with and without ContriMix in front (torchvision only if importable)."""
    try:
        import torchvision
    except ImportError:
        return None
    b = 64 if device.type == "cpu" else 256
    reps = int(np.ceil(b / len(tiles96)))
    x = to_float(np.concatenate([tiles96] * reps)[:b]).to(device)
    y = torch.randint(0, 2, (b,), device=device)
    net = torchvision.models.densenet121(weights=None, num_classes=2).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    aug = contrimix_module(cmx_model, None, 0, device)
    amp = device.type == "cuda"

    def step(with_aug: bool) -> None:
        xb = x
        if with_aug:
            with torch.no_grad():
                xb = aug(x)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(net(xb), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    reps_ = 3 if device.type == "cpu" else args.repeats
    base = bench(lambda: step(False), b, device, 2, reps_)
    withc = bench(lambda: step(True), b, device, 2, reps_)
    return {"device": device.type, "batch": b, "amp_bf16": amp, "step_img_s": base["img_s"],
            "step_with_contrimix_img_s": withc["img_s"], "overhead": base["img_s"] / withc["img_s"] - 1.0}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=None, help="ContriMix weights (name or path); default: bundled 'he'")
    p.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda if present)")
    p.add_argument("--methods", nargs="+", default=None, help=f"peer subset of {PEERS}")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--min-time", type=float, default=0.5, help="keep repeating (up to 5x) for at least this long")
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--quick", action="store_true", help="fewer repeats and peers (CI smoke)")
    p.add_argument("--tiny", action="store_true", help="test-sized run (seconds)")
    p.add_argument("--out", default=str(R.RESULTS_DIR))
    p.add_argument("--name", default=None)
    args = p.parse_args(argv)
    if args.tiny:
        args.quick = True
        args.warmup, args.repeats, args.min_time = 1, 2, 0.0
        args.methods = args.methods or ["hestain-preset", "torchstain-macenko", "hed-light"]
    elif args.quick:
        args.warmup, args.repeats, args.min_time = 2, 4, 0.0
        args.methods = args.methods or ["hestain-preset", "torchstain-macenko", "torchstain-reinhard", "hed-light",
                                        "kornia-colorjitter"]
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"{time.perf_counter() - t0:7.1f}s {msg}", flush=True)

    env = R.environment(["benchmarks/throughput.py", *(argv if argv is not None else sys.argv[1:])])
    tiles = {96: real_tiles(64, 96), 224: real_tiles(16, 224)}
    cmx_model, wlabel = load_weights_or_fallback(args.weights, tiles[96])
    log(f"ContriMix weights: {wlabel}")
    peers = build_peers(args.methods or PEERS, tiles[96][:32], seed=0, p=1.0)
    methods = {m.name: m for m in peers}

    result: dict[str, Any] = {"benchmark": "throughput", "mode": "tiny" if args.tiny else "quick" if args.quick else
                              "full", "environment": env, "contrimix_weights": wlabel,
                              "settings": {k: v for k, v in vars(args).items()},
                              "methods": {n: m.describe() for n, m in methods.items()},
                              "targets": TARGETS, "rows": [], "checks": []}
    for row_name, donors in CONTRIMIX_ROWS.items():
        what = "the shipped default: sampled donors, render guard" if donors is None else f"donors={donors!r}"
        result["methods"][row_name] = {"name": row_name, "kind": "augment", "api": "batch",
                                       "package": f"contrimix_aug {env['versions'].get('contrimix_aug')}",
                                       "note": f"ContriMix(p=1.0, check_values=False): {what}"}
    # matmul peaks and FLOPs
    peaks = {}
    for d in devices:
        dev = torch.device(d)
        n = 2048 if d == "cpu" else 8192
        if args.tiny:
            n = 512 if d == "cpu" else 4096
        peaks[d] = {"fp32_tflops": matmul_peak(dev, torch.float32, n)}
        if not args.no_bf16:
            peaks[d]["bf16_tflops"] = matmul_peak(dev, torch.bfloat16, n)
        peaks[d]["matmul_n"] = n
        log(f"{d} matmul peak: " + ", ".join(f"{k} {v:.3g}" for k, v in peaks[d].items()))
    result["matmul_peak"] = peaks
    flops = {}
    for b, s in SHAPES:
        aug = contrimix_module(cmx_model, None, 0, torch.device("cpu"))  # the "contrimix" rows: the default
        flops[f"{s}"] = count_flops(aug, to_float(tiles[s][:4]))
    result["contrimix_flops_per_image"] = flops
    log("ContriMix FLOPs/image: " + ", ".join(f"{k}px {v / 1e6:.1f} MFLOP" for k, v in flops.items()))

    for d in devices:
        result["rows"] += run_device(torch.device(d), methods, cmx_model, tiles, args, log)
    ps = per_sample(cmx_model, tiles[96], args)
    result["per_sample_cpu_1thread"] = ps
    log(f"per-sample (1 thread, 96 px, default donors): {ps['img_s']:.1f} img/s")
    if "cuda" in devices:
        result["gpu_96_b256"] = gpu_big_batch(cmx_model, tiles[96], args)
        log(f"GPU 256x3x96x96: {result['gpu_96_b256']}")
    dn = {}
    if not args.tiny:
        for d in devices:
            r = densenet_overhead(cmx_model, tiles[96], torch.device(d), args)
            if r is not None:
                dn[d] = r
                log(f"DenseNet-121 step on {d}: overhead of ContriMix {100 * r['overhead']:.1f} %")
    result["densenet121"] = dn or "not run: torchvision is not importable" if not args.tiny else "not run (--tiny)"

    # ratios and fraction of peak
    ratios = []
    for r in result["rows"]:
        if r["method"] in CONTRIMIX_ROWS:
            continue
        base = [c for c in result["rows"] if c["method"] == "contrimix" and c["device"] == r["device"]
                and c["batch"] == r["batch"] and c["size"] == r["size"] and c["dtype"] == "float32"]
        if base:
            ratios.append({"device": r["device"], "batch": r["batch"], "size": r["size"], "peer": r["method"],
                           "peer_dtype": r["dtype"], "ratio_contrimix_fp32_over_peer": base[0]["img_s"] / r["img_s"]})
    result["ratios"] = ratios
    for r in result["rows"]:
        if r["method"] == "contrimix":
            f = flops[str(r["size"])]
            pk = peaks[r["device"]].get("bf16_tflops" if r["dtype"] == "bfloat16" else "fp32_tflops")
            r["tflops_achieved"] = f * r["img_s"] / 1e12
            frac = r["tflops_achieved"] / pk if pk else None
            # a "peak" below what ContriMix reaches means the matmul probe hit a slow path (bf16 on a CPU without
            # bf16 units): no meaningful fraction
            r["fraction_of_matmul_peak"] = frac if frac is not None and frac <= 1.0 else None

    # targets
    def check(name: str, value: float | None, target: float, cmp: str, detail: str) -> None:
        ok = None if value is None else (value >= target if cmp == ">=" else value <= target)
        result["checks"].append({"target": name, "value": value, "threshold": f"{cmp} {target}",
                                 "status": "PASS" if ok else ("FAIL" if ok is False else "NOT RUN"), "detail": detail})

    def rate(method: str, b: int, s: int, dev: str = "cpu", dtype: str = "float32") -> float | None:
        for r in result["rows"]:
            if (r["method"], r["batch"], r["size"], r["device"], r["dtype"]) == (method, b, s, dev, dtype):
                return r["img_s"]
        return None

    for b, s in SHAPES:
        cm = rate("contrimix", b, s)
        for peer, key, thr in (("hestain-preset", "cpu_vs_hestain", TARGETS["cpu_vs_hestain"]),
                               ("torchstain-macenko", "cpu_vs_macenko", TARGETS["cpu_vs_macenko"])):
            pr = rate(peer, b, s, dtype="uint8")
            label = peer
            if peer == "torchstain-macenko":  # the faster of torchstain's numpy and torch backends, fair to the peer
                alt = rate("torchstain-macenko-torch", b, s, dtype="uint8")
                if alt and (not pr or alt > pr):
                    pr, label = alt, "torchstain-macenko-torch"
            check(f"CPU {b}x3x{s}x{s}: ContriMix / {peer} (faster backend)" if peer == "torchstain-macenko" else
                  f"CPU {b}x3x{s}x{s}: ContriMix / {peer}", cm / pr if cm and pr else None, thr, ">=",
                  f"ContriMix {cm and round(cm, 1)} img/s vs {label} {pr and round(pr, 1)} img/s")
        for peer in ("hestain-macenko", "hestain-vahadane", "torchstain-macenko-torch"):
            pr = rate(peer, b, s, dtype="uint8")
            if pr:
                result["checks"].append({"target": f"(info) CPU {b}x3x{s}x{s}: ContriMix / {peer}",
                                         "value": cm / pr if cm else None, "threshold": "-", "status": "INFO",
                                         "detail": f"{peer} {pr:.1f} img/s"})
    check("CPU per-sample, 1 thread, 96 px, default donors (img/s)", ps["img_s"], TARGETS["per_sample_img_s"], ">=",
          "torch.set_num_threads(1), one (3, 96, 96) image per call")
    g = result.get("gpu_96_b256")
    best_gpu = max(v["img_s"] for v in g.values()) if g else None
    check("GPU 256x3x96x96 (img/s, best of fp32/bf16)", best_gpu, TARGETS["gpu_img_s_96_b256"], ">=",
          str({k: round(v["img_s"]) for k, v in g.items()}) if g else "no CUDA device in this run")
    dng = dn.get("cuda") if isinstance(dn, dict) else None
    check("GPU DenseNet-121 step overhead of ContriMix", dng["overhead"] if dng else None,
          TARGETS["densenet_overhead"], "<=",
          "torchvision DenseNet-121, bf16 autocast, batch 256" if dng else "needs CUDA and torchvision")
    if isinstance(dn, dict) and "cpu" in dn:
        result["checks"].append({"target": "(info) CPU DenseNet-121 step overhead of ContriMix",
                                 "value": dn["cpu"]["overhead"], "threshold": "-", "status": "INFO",
                                 "detail": "batch 64, fp32"})
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)

    md = render_markdown(result)
    print(md)
    out = Path(args.out)
    dev_tag = "cuda" if "cuda" in devices else "cpu"
    stem = args.name or f"throughput_{dev_tag}" + ("" if result["mode"] == "full" else f"_{result['mode']}")
    R.write_json(out / f"{stem}.json", result)
    (out / f"{stem}.md").write_text(md)
    log(f"wrote {out / (stem + '.json')}")
    return 0


def render_markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [f"### Throughput ({result['mode']}) on {env['hardware'].get('gpu') or env['hardware']['cpu']}", "",
             f"Command: `{env['command']}`  ", f"ContriMix weights: {result['contrimix_weights']}  ",
             f"torch {env['versions']['torch']}, {env['hardware']['torch_threads']} CPU threads, "
             f"{env['hardware']['logical_cpus']} logical CPUs", ""]
    rows = []
    for r in result["rows"]:
        rows.append({"device": r["device"], "shape": f"{r['batch']}×3×{r['size']}²", "dtype": r["dtype"],
                     "method": r["method"], "api": r["api"], "img/s (median)": r["img_s"],
                     "min–max": f"{r['img_s_min']:.0f}–{r['img_s_max']:.0f}",
                     "% of matmul peak": (100 * r["fraction_of_matmul_peak"]) if r.get("fraction_of_matmul_peak")
                     is not None else None})
    lines.append(R.markdown_table(rows, digits=1))
    lines.append("ContriMix FLOPs per image: " + ", ".join(
        f"{k} px: {v / 1e6:.1f} MFLOP" for k, v in result["contrimix_flops_per_image"].items()) + "  ")
    lines.append("Measured matmul peak: " + "; ".join(
        f"{d}: " + ", ".join(f"{k} {v:.3g}" for k, v in pk.items()) for d, pk in result["matmul_peak"].items()))
    lines.append("")
    lines.append(R.markdown_table([{"target": c["target"], "value": c["value"], "threshold": c["threshold"],
                                    "status": c["status"], "detail": c["detail"]} for c in result["checks"]],
                                  digits=2))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
