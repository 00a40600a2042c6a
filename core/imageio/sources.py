"""Expand user inputs (files, folders, globs, fsspec URLs) into a sorted list of image paths."""
from __future__ import annotations

from collections.abc import Iterable

import fsspec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def _is_image_name(path: str) -> bool:
    return path.lower().endswith(IMAGE_SUFFIXES)


def expand(inputs: str | Iterable[str], storage_options: dict | None = None,
           strict: bool = True) -> list[str]:
    """Files are kept as given (even with odd suffixes, so that bad files get reported);
    folders and prefixes are searched recursively for image suffixes; globs are expanded.
    URLs keep their protocol. ``strict`` raises when an input matches nothing."""
    if isinstance(inputs, str):
        inputs = [inputs]
    found: list[str] = []
    for item in inputs:
        fs, _, paths = fsspec.get_fs_token_paths(item, storage_options=storage_options)
        local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        hits: list[str] = []
        folders = 0
        for p in paths:
            if fs.isdir(p):
                folders += 1
                hits += sorted(f for f in fs.find(p) if _is_image_name(f))
            elif fs.exists(p):
                hits.append(p)
        if not hits and strict:
            raise FileNotFoundError(f"{item}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})"
                                    if folders else f"{item}: no such file, folder or matching images")
        found += hits if local else [fs.unstrip_protocol(h) for h in hits]
    return list(dict.fromkeys(found))
