"""Argument parsing shared by several subcommands."""

from __future__ import annotations

import re

from binsr.errors import BinsrError


def parse_size(text: str) -> tuple[int, int]:
    """``"320x180"`` → ``(320, 180)`` (width, height); a one-line :class:`BinsrError` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise BinsrError(f"--input must be WxH with positive integers, e.g. 320x180 (got {text!r})")
    return int(match[1]), int(match[2])
