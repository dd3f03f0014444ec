"""Printing for people: aidetect's consoles run with rich markup off (file names and library
messages print literally, "[red]b.jpg" too), so colour comes from `Text` styles made here."""

from __future__ import annotations

from rich.text import Text


def styled(prefix: str, style: str, rest: str = "") -> Text:
    """A coloured prefix and literal text."""
    return Text.assemble((prefix, style), rest)
