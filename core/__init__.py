"""Headless core of napari-jpeg-restore: JPEG I/O, metrics, networks, training and inference.

Needs neither napari, Qt nor Ray. The main entry point is :func:`restore`.
"""
from .inference import restore

__all__ = ["restore"]
