"""Run several `contrimix-aug train` jobs side by side on one machine (e.g. one GPU), with a deadline.

Each job writes OUT/NAME/{weights.safetensors, metrics.json, checkpoint.safetensors, log.txt}. A job still
running at the deadline is stopped; its last checkpoint resumes with `contrimix-aug train ... --resume`.
Used for the leave-one-source-out runs behind the model cards (docs/weights/).

    python scripts/parallel_train.py --out runs --deadline 300 --steps 2000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HE = ["cmu1", "prostate", "skin", "hgsc_nest", "hgsc_stroma", "tcia"]


def jobs(steps: int, device: str, seed: int, configs: list[str], checkpoint_every: int = 250) -> dict[str, list[str]]:
    """Job name -> `contrimix-aug train` arguments.

    For each recipe NAME (``contrimix_aug/recipes/NAME.json`` or a path): the final run ``NAME`` and, for the
    H&E recipe, one leave-one-source-out run ``loso-SOURCE`` per source. ``fluorescence*`` recipes train on
    ``fluo-sources`` and ``camelyon*`` on ``camelyon17-tiles`` (no LOSO runs: hospitals 1 and 2 are never seen).
    """
    base = ["--steps", str(steps), "--device", device, "--seed", str(seed), "--no-progress",
            "--checkpoint-every", str(checkpoint_every), "--val-every", str(checkpoint_every), "--num-workers", "0"]
    out: dict[str, list[str]] = {}
    for name in configs:
        cfg = ["--config", name, *base]
        tag = Path(name).stem
        if tag.startswith("fluorescence"):
            out[tag] = ["fluo-sources", *cfg]
            continue
        if tag.startswith("camelyon"):
            out[tag] = ["camelyon17-tiles", *cfg]
            continue
        out[tag] = ["he-sources", *cfg]
        for h in HE:
            out[f"loso-{tag}-{h}"] = ["he-sources:" + ",".join(s for s in HE if s != h), *cfg]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--deadline", type=float, default=300.0, help="seconds before running jobs are stopped")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", nargs="+", default=["he-lite", "camelyon", "fluorescence-lite"],
                    help="recipes to train (shipped names or JSON paths; the H&E recipe also gets its 6 LOSO runs)")
    ap.add_argument("--checkpoint-every", type=int, default=250)
    ap.add_argument("--only", nargs="*", help="run only these job names")
    a = ap.parse_args()
    out = Path(a.out)
    procs = {}
    t0 = time.time()
    for name, args in jobs(a.steps, a.device, a.seed, a.configs, a.checkpoint_every).items():
        if a.only and name not in a.only:
            continue
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "contrimix_aug.cli", "train", *args, "--out", str(d)]
        if (d / "checkpoint.safetensors").exists():
            cmd.append("--resume")
        (d / "command.txt").write_text(" ".join(cmd[2:]) + "\n")
        log = open(d / "log.txt", "w")
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)), log)
    status = {}
    while procs:
        for name, (p, log) in list(procs.items()):
            if p.poll() is not None:
                status[name] = {"rc": p.returncode, "seconds": round(time.time() - t0, 1)}
                log.close()
                del procs[name]
                print(f"{name}: rc={p.returncode} after {time.time() - t0:.0f}s", flush=True)
        if time.time() - t0 > a.deadline:
            for name, (p, log) in procs.items():
                p.terminate()
                status[name] = {"rc": "stopped at deadline", "seconds": round(time.time() - t0, 1)}
                log.close()
                print(f"{name}: stopped at deadline", flush=True)
            break
        time.sleep(1.0)
    (out / "status.json").write_text(json.dumps(status, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
