"""``contrimix-aug`` command line: one module per subcommand, one error style for all of them.

Every subcommand module has ``add_parser(subparsers)`` (which sets ``func``: ``args -> int``). Errors the user
can fix (bad arguments, missing or unreadable files or data, a missing optional package, corrupted weights) print
one line,
``contrimix-aug COMMAND: error: MESSAGE``, and exit with status 2, like argparse's own usage errors; Ctrl-C exits
with 130 after the subcommand has said what was kept. Library modules hold no argparse code.
"""

from __future__ import annotations

import argparse
import sys

from . import cmd_data, cmd_demo, cmd_import_checkpoint, cmd_train
from ._help import HelpFormatter

__all__ = ["main", "build_parser", "EXIT_USAGE", "EXIT_INTERRUPTED"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
_SUBCOMMANDS = (cmd_demo, cmd_train, cmd_import_checkpoint, cmd_data)


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="contrimix-aug", formatter_class=HelpFormatter,
        description="ContriMix stain augmentation: demo, training, checkpoint import, data.",
        epilog="Each command has its own help: contrimix-aug COMMAND --help. The shipped training recipes: "
               "contrimix-aug train --list-recipes. Licence and data terms of the bundled weights and tiles: "
               "contrimix_aug/assets/README.md in the installed package.",
    )
    parser.add_argument("--version", action="version", version=f"contrimix_aug {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="what to do (COMMAND --help for its options)")
    for module in _SUBCOMMANDS:
        module.add_parser(sub)
    _no_abbreviations(parser)
    return parser


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """Options only by their full names, on every (sub)command: ``train --data X`` must not become ``--data-root X``."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _no_abbreviations(child)


def _user_errors() -> tuple[type[BaseException], ...]:
    from ..data.cache import ChecksumError, SourceUnavailableError

    # OSError covers missing files, permissions, full disks; ImportError an optional package that is not installed
    # (its message names the pip command). Other exceptions are bugs and keep their traceback.
    return (ValueError, TypeError, KeyError, OSError, ImportError, SourceUnavailableError, ChecksumError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"contrimix-aug {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _user_errors() as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"contrimix-aug {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
