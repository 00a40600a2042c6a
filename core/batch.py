"""Restore many files: read → restore → write, one clear line per bad file, the rest go on."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
from torch import nn
from tqdm import tqdm

from .images import ImageReadError, ImageWriteError, output_path, read_image, write_image
from .inference import restore


@dataclass
class BatchReport:
    restored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    megapixels: float = 0.0

    def summary(self) -> str:
        rate = f", {self.megapixels / self.seconds:.2f} MP/s" if self.seconds > 0 and self.restored else ""
        return (f"restored {len(self.restored)}, skipped {len(self.skipped)}, failed {len(self.failed)} "
                f"in {self.seconds:.1f} s{rate}")


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b


def check_writable(out_dir: str, storage_options: dict | None = None) -> None:
    """Create ``out_dir`` and prove a file can be written there (raises ImageWriteError)."""
    fs, _, (root,) = fsspec.get_fs_token_paths(out_dir, storage_options=storage_options)
    probe = f"{root.rstrip('/')}/.jpeg-restore-write-test"
    try:
        fs.makedirs(root, exist_ok=True)
        with fs.open(probe, "wb") as f:
            f.write(b"")
        fs.rm(probe)
    except (OSError, PermissionError) as err:
        raise ImageWriteError(f"{out_dir}: output folder is not writable ({err.__class__.__name__}: "
                              f"{getattr(err, 'strerror', None) or err})") from None


def restore_files(inputs: Iterable[str], out_dir: str, *, model: str | nn.Module | None = None,
                  tile: int = 512, overlap: int = 32, device: str = "auto", ensemble: bool = False,
                  fmt: str = "png",
                  skip_existing: bool = False, allow_large: bool = False,
                  storage_options: dict | None = None,
                  log: Callable[[str], None] | None = None) -> BatchReport:
    """Restore every input into ``out_dir/<stem>.<fmt>``; never overwrites an input."""
    inputs = list(inputs)
    log = log or (lambda m: tqdm.write(m, file=sys.stderr))  # keeps lines clear of the bar
    check_writable(out_dir, storage_options)
    fs, _, _ = fsspec.get_fs_token_paths(out_dir, storage_options=storage_options)
    report = BatchReport()
    claimed: dict[str, str] = {}
    start = time.perf_counter()
    for src in tqdm(inputs, desc="restore", unit="img", disable=len(inputs) < 2, file=sys.stderr):
        dest = output_path(src, out_dir, fmt)
        problem = ("output would overwrite the input; choose another --output" if _same_file(src, dest)
                   else f"{claimed[dest]} already writes {dest} (same file name)" if dest in claimed
                   else None)
        if problem:
            report.failed[src] = f"{src}: {problem}"
            log(f"error: {report.failed[src]}")
            continue
        claimed[dest] = src
        if skip_existing and fs.exists(dest):
            report.skipped.append(src)
            continue
        try:
            loaded = read_image(src, allow_large=allow_large, storage_options=storage_options)
            result = restore(loaded.array, model, tile=tile, overlap=overlap, device=device,
                             ensemble=ensemble)
            write_image(dest, result, format=fmt, icc_profile=loaded.icc_profile,
                        storage_options=storage_options)
        except (ImageReadError, ImageWriteError, ValueError, TypeError) as err:
            # Read/write errors already name the file; others get it prefixed.
            report.failed[src] = str(err) if isinstance(err, (ImageReadError, ImageWriteError)) else f"{src}: {err}"
            log(f"error: {report.failed[src]}")
            continue
        report.restored.append(dest)
        report.megapixels += loaded.array.shape[0] * loaded.array.shape[1] / 1e6
    report.seconds = time.perf_counter() - start
    return report
