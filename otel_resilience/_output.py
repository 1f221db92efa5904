"""Plain-text output for the command line, fitted to the terminal; colour when rich is there.

The layout is the same with and without rich (the ``cli`` extra): lines that fit the width,
tables whose cells are never cut (a table too wide for the width is printed as one short
block per row instead), and no wrapping by the terminal. rich, when installed and the output
is a terminal, only colours those lines.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["Output", "fit_table", "pack", "wrap"]

_GAP = "  "


def _width(stream: TextIO) -> int:
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if stream.isatty():
        return shutil.get_terminal_size((80, 24)).columns
    return 80


def wrap(text: str, width: int, indent: str = "", first: str = "") -> list[str]:
    """``text`` in lines of at most ``width`` characters: the first line starts with
    ``first``, the others with ``indent``. Words are never split (a word longer than the
    width gets a line of its own).
    """
    return textwrap.wrap(
        text,
        width=max(width, len(indent) + 20),
        initial_indent=first,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [""]


def pack(parts: Sequence[str], width: int, indent: str = "", first: str = "") -> list[str]:
    """``parts`` joined by ", " in lines of at most ``width``, never splitting a part.

    The first line starts with ``first``, the others with ``indent``; a part longer than a
    whole line is wrapped at words.
    """
    lines: list[str] = []
    current, empty = first, True
    for index, part in enumerate(parts):
        piece = part + ("," if index < len(parts) - 1 else "")
        joined = current + piece if empty else f"{current} {piece}"
        if len(joined) <= width:
            current, empty = joined, False
            continue
        if len(indent + piece) > width:  # longer than a line: wrap it from where we are
            wrapped = wrap(piece, width, indent, first=current if empty else current + " ")
            lines += wrapped[:-1]
            current, empty = wrapped[-1], False
            continue
        if not empty:
            lines.append(current)
        current, empty = indent + piece, False
    lines.append(current)
    return lines


def fit_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], width: int
) -> list[str] | None:
    """Aligned columns (header line first) when every cell fits in ``width``; else None."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    if sum(widths) + len(_GAP) * (len(widths) - 1) > width:
        return None
    lines = [_GAP.join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append(_GAP.join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return lines


def _blocks(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> list[list[str]]:
    """One block per row: the first cell, then ``header value`` pairs wrapped under it."""
    blocks = []
    for row in rows:
        pairs = [f"{h} {c}" for h, c in zip(headers[1:], row[1:], strict=True)]
        blocks.append([row[0], *pack(pairs, width, indent="    ", first="  ")])
    return blocks


class Output:
    """Where the command line prints: a stream, its width, and colour when rich can give it."""

    def __init__(self, stream: TextIO | None = None, *, width: int | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.width = width if width is not None else _width(self.stream)
        self._console: Any = None
        if self.stream.isatty():
            try:
                from rich.console import Console
            except ImportError:  # the cli extra is not installed: plain text
                pass
            else:
                self._console = Console(
                    file=self.stream, highlight=False, soft_wrap=True, emoji=False
                )

    def line(self, text: str = "", style: str | None = None) -> None:
        """Print ``text`` as it is (the caller fitted it), in ``style`` when colour is on."""
        if self._console is not None:
            from rich.text import Text

            self._console.print(Text(text, style=style or ""))
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def paragraph(self, text: str, style: str | None = None, indent: str = "") -> None:
        """Print ``text`` wrapped to the width."""
        for line in wrap(text, self.width, indent):
            self.line(line, style)

    def table(
        self,
        headers: Sequence[str],
        rows: Sequence[Sequence[str]],
        *,
        title: str | None = None,
        styles: Sequence[str | None] | None = None,
    ) -> None:
        """Rows under their headers; one block per row when the columns do not fit."""
        if title is not None:
            self.paragraph(title, "bold")
        styles = list(styles) if styles is not None else [None] * len(rows)
        lines = fit_table(headers, rows, self.width)
        if lines is not None:
            self.line(lines[0], "bold")
            for line, style in zip(lines[1:], styles, strict=True):
                self.line(line, style)
            return
        for block, style in zip(_blocks(headers, rows, self.width), styles, strict=True):
            self.line(block[0], f"bold {style}" if style else "bold")
            for line in block[1:]:
                self.line(line, style)
