"""Argument parsing and text output shared by several subcommands."""

from __future__ import annotations

import re

from binsr.errors import BinsrError


def parse_size(text: str) -> tuple[int, int]:
    """``"320x180"`` → ``(320, 180)`` (width, height); a one-line :class:`BinsrError` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise BinsrError(f"--input must be WxH with positive integers, e.g. 320x180 (got {text!r})")
    return int(match[1]), int(match[2])


def format_columns(header: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    """An aligned text table: ``header``, a rule of dashes, then ``body``; the first column is
    left-aligned, the others right-aligned, two spaces apart (no trailing spaces or newline)."""
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([cells[0].ljust(widths[0]), *rest]).rstrip()

    return "\n".join([line(header), line(tuple("-" * w for w in widths))] + [line(row) for row in body])
