"""Headless core of napari-jpeg-restore: JPEG I/O, metrics, networks, training and inference.

Needs neither napari, Qt nor Ray. The main entry point is :func:`restore`. Importing the
package loads nothing heavy: torch comes with the first use of ``restore`` (so the CLI can
set up OpenMP before torch loads, and ``--help`` answers at once).
"""
from typing import Any

__all__ = ["restore"]


def __getattr__(name: str) -> Any:
    if name == "restore":
        from .restoration.image_restore import restore

        return restore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
