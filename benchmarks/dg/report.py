"""Benchmark bookkeeping: paths, environment capture (command, versions, hardware, git commit), JSON/CSV writers and
readers, markdown tables and number formatting.

Result files: a path ending in ``.json.gz`` is written as gzip-compressed JSON (byte-reproducible: no timestamp or
file name in the gzip header), the form of the per-run results under ``docs/benchmarks/`` (``dg_*.json.gz``; ``zcat``
or :func:`read_json` reads them); any other path is plain JSON. :func:`load_results` reads both forms.
"""

from __future__ import annotations

import csv
import datetime as _dt
import gzip
import io
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))
DOCS_DIR = ROOT / "docs" / "benchmarks"
RESULTS_DIR = ROOT / "benchmarks" / "results"

__all__ = ["DOCS_DIR", "RESULTS_DIR", "RESULT_SUFFIXES", "ROOT", "environment", "fmt", "gzip_bytes", "load_results",
           "markdown_table", "pkg_version", "read_json", "result_file", "result_stem", "write_csv", "write_json"]

RESULT_SUFFIXES = (".json.gz", ".json")
"""Suffixes of result files, preferred first: a stem present in both forms is read from the compressed one."""


def pkg_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if out.returncode == 0:
            return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def environment(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command, versions, hardware and time of this run."""
    argv = list(sys.argv if argv is None else argv)
    versions = {"python": platform.python_version()}
    for pkg in ("torch", "numpy", "kornia", "albumentations", "torchstain", "contrimix_aug", "torchvision", "matplotlib"):
        v = pkg_version(pkg)
        if v is None and pkg == "contrimix_aug":
            try:
                import contrimix_aug

                v = contrimix_aug.__version__
            except Exception:  # noqa: BLE001
                v = None
        versions[pkg] = v
    hw: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        hw["gpu"] = torch.cuda.get_device_name(0)
        hw["cuda_version"] = torch.version.cuda
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        hw["memory_gib"] = round(mem / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    cmd = " ".join(shlex.quote(a) for a in ["python", _rel(argv[0]), *argv[1:]]) if argv else ""
    return {
        "command": cmd,
        "git_commit": _git_commit(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": versions,
        "hardware": hw,
    }


def _rel(p: str) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return p


# ------------------------------------------------------------------------------------------------------------------
# Writers
# ------------------------------------------------------------------------------------------------------------------
def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, torch.Tensor):
        return _jsonable(o.tolist())
    if isinstance(o, Path):
        return str(o)
    return o


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as JSON; gzip-compressed when ``path`` ends in ``.gz`` (same bytes on every run: mtime 0, no
    file name in the header). Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_jsonable(obj), indent=1, sort_keys=False) + "\n"
    if path.name.endswith(".gz"):
        path.write_bytes(gzip_bytes(text.encode("utf-8")))
    else:
        path.write_text(text)
    return path


def gzip_bytes(data: bytes) -> bytes:
    """``data`` gzip-compressed, reproducibly (no timestamp, no file name)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as f:
        f.write(data)
    return buf.getvalue()


def read_json(path: Path) -> Any:
    """The JSON document at ``path``, plain or gzip-compressed (``.gz``)."""
    path = Path(path)
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return json.loads(data.decode("utf-8"))


def result_stem(name: str) -> str:
    """``dg_camelyon16.json.gz`` / ``dg_camelyon16.json`` -> ``dg_camelyon16``."""
    for suffix in RESULT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def result_file(folder: Path, stem: str) -> Path | None:
    """The result file ``stem`` in ``folder`` (``stem.json.gz``, else ``stem.json``), or None."""
    for suffix in RESULT_SUFFIXES:
        p = Path(folder) / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def load_results(folder: Path, prefix: str) -> list[dict[str, Any]]:
    """Every readable result file ``prefix*.json.gz`` / ``prefix*.json`` in ``folder``, sorted by stem, each with
    ``_file`` (its file name) added; a stem in both forms is read once, from the ``.json.gz``."""
    out = []
    stems = sorted({result_stem(p.name) for s in RESULT_SUFFIXES for p in Path(folder).glob(f"{prefix}*{s}")})
    for stem in stems:
        p = result_file(folder, stem)
        if p is None:
            continue
        try:
            d = read_json(p)
        except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(d, dict):
            d["_file"] = p.name
            out.append(d)
    return out


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt_csv(r.get(k)) for k in keys})
    return path


def _fmt_csv(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    if not rows:
        return "(no rows)\n"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c), digits) for c in columns) + " |")
    return "\n".join(lines) + "\n"


