"""Listing an archive: every image under ``--src`` with its output under ``--dst``, streamed."""
from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import fsspec
from napari_jpeg_restore.core.imageio.filesystem import is_local, resolve
from napari_jpeg_restore.core.imageio.output_paths import (
    UnsafeOutputError,
    canonical,
    output_folder_folds_case,
    output_path,
    under,
)
from napari_jpeg_restore.core.imageio.sources import IMAGE_SUFFIXES


@dataclass(frozen=True)
class Item:
    src: str  # full URL (or local path) of the input
    key: str  # path relative to --src
    dst: str  # full URL (or local path) of the output


def full_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return path if is_local(fs) else fs.unstrip_protocol(path)


def _iter_s3(fs, root: str) -> Iterator[str]:
    """Keys under ``root`` page by page (s3fs' paginated ListObjectsV2, no delimiter)."""
    from fsspec.asyn import sync

    bucket, _, prefix = root.partition("/")
    agen = fs._iterdir(bucket, prefix=f"{prefix}/" if prefix else "", delimiter="")
    while True:
        try:
            info = sync(fs.loop, agen.__anext__)
        except StopAsyncIteration:
            return
        if info.get("type", "file") != "directory" and not info["name"].endswith("/"):
            yield info["name"]


def iter_files(src: str, storage_options: dict | None = None) -> Iterator[tuple[str, str]]:
    """(full path, key relative to ``src``) of every file under ``src``, streamed."""
    fs, root = resolve(src, storage_options)
    root = root.rstrip("/")
    if fs.isfile(root):
        yield full_url(fs, root), PurePosixPath(root).name
        return
    if hasattr(fs, "_iterdir") and "s3" in (fs.protocol if isinstance(fs.protocol, tuple)
                                            else (fs.protocol,)):
        paths: Iterator[str] = _iter_s3(fs, root)
    else:
        paths = (f"{folder.rstrip('/')}/{name}" for folder, _, files in fs.walk(root)
                 for name in sorted(files))
    for path in paths:
        yield full_url(fs, path), path[len(root) + 1:]


def failed_row(key: str, error: str) -> dict:
    """A manifest row for an input that could not be restored."""
    return {"key": key, "status": "failed", "quality": None, "seconds": 0.0, "error": error}


def check_roots(src: str, dst: str, storage_options: dict | None = None) -> None:
    """Refuse a ``dst`` that is ``src`` or a folder above it: outputs would land among the
    inputs. (A ``dst`` inside ``src`` is fine: its keys are not taken as inputs.)"""
    fold = output_folder_folds_case(dst, storage_options)
    s, d = canonical(src, storage_options, fold), canonical(dst, storage_options, fold)
    if under(s, d):
        raise ValueError(f"--dst {dst} is --src or a folder above it: outputs would land among "
                         "the inputs; choose a destination outside --src or inside it")


def iter_items(src: str, dst: str, fmt: str = "png", storage_options: dict | None = None,
               window: int = 100_000) -> Iterator[Item | dict]:
    """Images under ``src`` with their outputs. Keys under ``dst`` (when it lies inside ``src``)
    are left out. Keys that would escape ``dst`` come back as ``failed`` manifest rows, and so
    does the later of two inputs that would write the same output (``a.jpg``, ``a.jpeg``),
    caught within a sliding window of recent outputs (same-stem keys sort next to each other).
    Outputs are compared case-folded when ``dst`` is a local folder that ignores case. The
    caller refuses unsafe roots first (:func:`check_roots`, before any actor starts)."""
    fold = output_folder_folds_case(dst, storage_options)
    dst_root = canonical(dst, storage_options, fold)
    recent: collections.OrderedDict[str, str] = collections.OrderedDict()
    for url, key in iter_files(src, storage_options):
        if not key.lower().endswith(IMAGE_SUFFIXES) or under(canonical(url, storage_options, fold),
                                                              dst_root):
            continue
        try:
            out = output_path(key, dst, fmt, keep_tree=True)
        except UnsafeOutputError as err:
            yield failed_row(key, str(err))
            continue
        out_key = canonical(out, storage_options, fold)
        if not under(out_key, dst_root):
            yield failed_row(key, f"{key}: its output {out} would leave the destination; refused")
            continue
        if out_key in recent:
            yield failed_row(key, f"{key}: {recent[out_key]} already writes {out} (same name, "
                               "other suffix); refused, rename one of them")
            continue
        recent[out_key] = key
        if len(recent) > window:
            recent.popitem(last=False)
        yield Item(url, key, out)
