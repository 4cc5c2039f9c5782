"""The one-line mistake of the command line: :class:`UserError`."""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the command, recipe or data, reported in one line (exit status 2) by the CLI."""


__all__ = ["UserError"]
