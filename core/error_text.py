"""Errors told in one line: what a batch reports for a file, and what a wrapping error quotes
of its cause."""
from __future__ import annotations


def one_line(err: BaseException, limit: int | None = None) -> str:
    """``err``'s message with its whitespace and line breaks collapsed (cut to ``limit``
    characters, if given), or its type's name where it has no message."""
    text = " ".join(str(err).split())
    if limit is not None and len(text) > limit:
        text = text[:limit - 3] + "..."
    return text or type(err).__name__
