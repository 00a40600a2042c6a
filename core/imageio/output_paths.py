"""Where outputs go, proven safe before anything is written.

Every job that writes files (the CLI's ``restore``, the Ray archive job) takes its output paths
from here, so three properties hold by construction rather than by each call site's care:

* an output lies under its destination (keys with ``..`` or absolute keys are refused);
* an output is never one of the inputs (paths compared resolved, through symlinks, across local
  paths and ``file://`` URLs, and case-folded where the output's filesystem ignores case);
* two inputs that would write one output are both refused, with a message naming both.
"""
from __future__ import annotations

import os
import posixpath
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from .filesystem import is_local, resolve

EXTENSIONS = {"png": ".png", "tiff": ".tif", "tif": ".tif"}
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeOutputError(ValueError):
    """An output that would land outside its destination or on an input (one line)."""


def extension(format: str) -> str:
    """``.png`` or ``.tif`` for an output format name (ValueError for anything else)."""
    fmt = format.lower()
    if fmt not in EXTENSIONS:
        raise ValueError(f"output format must be png or tiff, got {format!r}")
    return EXTENSIONS[fmt]


def join_under(root: str, key: str) -> str:
    """``root/key`` for a relative ``key`` that stays under ``root`` ('.' and empty segments
    dropped). Raises :class:`UnsafeOutputError` for absolute keys and keys with ``..``."""
    k = key.replace("\\", "/")
    if k.startswith("/") or _DRIVE.match(k):
        raise UnsafeOutputError(f"{key}: absolute path; refused (outputs stay under the destination)")
    parts = [p for p in k.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeOutputError(f"{key}: contains '..'; refused (it could write outside the "
                                "destination)")
    if not parts:
        raise UnsafeOutputError(f"{key!r}: empty name; refused")
    return f"{root.rstrip('/')}/{'/'.join(parts)}" if root else "/".join(parts)


def output_path(input_name: str | os.PathLike, out_dir: str | os.PathLike,
                format: str = "png", keep_tree: bool = False) -> str:
    """The output of one input, for local paths and URLs alike: ``<out_dir>/<stem><ext>`` (flat,
    the CLI), or with ``keep_tree`` ``<out_dir>/<input_name with <ext>>`` for a key relative to
    the source root (the archive job). ``<ext>`` is ``.png`` or ``.tif``; keys that would escape
    ``out_dir`` raise :class:`UnsafeOutputError`."""
    name = PurePosixPath(os.fspath(input_name).replace("\\", "/"))
    return join_under(os.fspath(out_dir), str(name.with_suffix(extension(format))) if keep_tree
                      else name.stem + extension(format))


def folds_case(folder: str) -> bool:
    """Whether the local ``folder`` (which must exist and be writable) ignores letter case."""
    name = f".jpeg-restore-case-{uuid.uuid4().hex[:8]}-Ab"
    probe = os.path.join(folder, name)
    try:
        with open(probe, "x"):
            pass
    except OSError:
        return False
    try:
        return os.path.exists(os.path.join(folder, name.swapcase()))
    finally:
        with suppress(OSError):
            os.unlink(probe)


def canonical(path: str, storage_options: dict | None = None, fold: bool = False) -> str:
    """One spelling per file: local paths resolved (symlinks, ``..``, ``file://``), URLs with
    their protocol and a normalised key; case-folded when ``fold``."""
    fs, p = resolve(path, storage_options)
    if is_local(fs):
        name = os.path.realpath(p)
    else:
        name = fs.unstrip_protocol(posixpath.normpath("/" + p).lstrip("/"))
    return name.casefold() if fold else name


def under(path: str, root: str) -> bool:
    """Whether canonical ``path`` is ``root`` or lies below it (both canonical)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass
class OutputPlan:
    """Inputs paired with their outputs, and the inputs refused with the reason (one line)."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def output_folder_folds_case(out_dir: str, storage_options: dict | None = None) -> bool:
    fs, root = resolve(out_dir, storage_options)
    return is_local(fs) and os.path.isdir(root) and folds_case(root)


def plan_outputs(inputs: Iterable[str], out_dir: str, format: str = "png",
                 storage_options: dict | None = None) -> OutputPlan:
    """``<out_dir>/<stem><ext>`` for each input, checked against every input before any write:
    an output that is an input, or that two inputs share, refuses the inputs concerned."""
    inputs = list(inputs)
    fold = output_folder_folds_case(out_dir, storage_options)
    so = storage_options

    def key(p: str) -> str:
        return canonical(p, so, fold)

    input_keys = {key(src): src for src in inputs}
    plan = OutputPlan()
    dests: dict[str, str] = {}
    by_output: dict[str, list[str]] = defaultdict(list)
    for src in inputs:
        try:
            dest = output_path(src, out_dir, format)
        except UnsafeOutputError as err:
            plan.refused[src] = f"{src}: {err}"
            continue
        k = key(dest)
        if k in input_keys:
            plan.refused[src] = (f"{src}: its output {dest} is an input ({input_keys[k]}); "
                                 "refused, choose another --output")
            continue
        dests[src] = dest
        by_output[k].append(src)
    for src, dest in dests.items():
        rivals = [s for s in by_output[key(dest)] if s != src]
        if rivals:
            plan.refused[src] = (f"{src}: {' and '.join(rivals)} would write the same output "
                                 f"{dest}; refused, rename one of them")
        else:
            plan.pairs.append((src, dest))
    return plan
