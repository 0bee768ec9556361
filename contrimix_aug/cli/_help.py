"""One help style for every ``contrimix-aug`` parser: defaults shown, no repository paths.

:class:`HelpFormatter` appends ``(default: X)`` to an option's help when it has a real default (not None, not the
False of an on/off flag) and the help does not already say its default; options whose default depends on the
recipe or the environment say so in their own help text. Help texts name commands (``contrimix-aug train
--list-recipes``) or files inside the installed package, never paths of the source repository, which a wheel
user does not have.
"""

from __future__ import annotations

import argparse

__all__ = ["HelpFormatter"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``ArgumentDefaultsHelpFormatter`` without ``(default: None)`` / ``(default: False)`` noise, and without a
    second default where the help text already gives one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return text
        if "default" in text or action.required:
            return text
        return super()._get_help_string(action)
