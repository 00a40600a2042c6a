"""Restoring files: the one file-restore step (``restore_file``: exists → read → skip above the
quality → restore → write atomically) that the CLI and the Ray archive job share, and the batch over
many (``restore_files``), one clear line per bad file while the rest go on."""
from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from tqdm import tqdm

from ..error_text import one_line
from ..imageio.filesystem import resolve
from ..imageio.output_paths import plan_outputs
from ..imageio.reading import ImageReadError, LoadedImage, read_image
from ..imageio.writing import ImageWriteError, write_image_bands
from ..jpeg.codec import QualityEstimate
from .compression import Compression
from .image_restore import Band, Progress, restore_bands
from .options import RestoreOptions
from .plan import plan_image

if TYPE_CHECKING:
    from torch import nn

    from ..engines.net import Net

PROGRESS_DELAY = 2.0  # seconds before a file's tile bar appears (quick files show none)


@dataclass
class FileResult:
    """What happened to one input: ``restored``, ``skipped`` (JPEG quality above the limit)
    or ``exists`` (its output was already there)."""

    status: str
    quality: QualityEstimate | None = None  # from the tables, or found in the pixels (not exact)
    megapixels: float = 0.0
    reason: str | None = None  # why it was skipped
    compression: Compression | None = None  # what the restoration assumed (restored files)


@dataclass
class BatchReport:
    restored: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # input -> why
    failed: dict[str, str] = field(default_factory=dict)  # input -> one-line error
    seconds: float = 0.0
    megapixels: float = 0.0

    def fail(self, src: str, message: str, log: Callable[[str], None]) -> None:
        self.failed[src] = message
        log(f"error: {message}")

    def summary(self) -> str:
        rate = f", {self.megapixels / self.seconds:.2f} MP/s" if self.seconds > 0 and self.restored else ""
        why = Counter(self.skipped.values())
        detail = f" ({', '.join(f'{n} {r}' for r, n in why.items())})" if why else ""
        return (f"restored {len(self.restored)}, skipped {len(self.skipped)}{detail}, "
                f"failed {len(self.failed)} in {self.seconds:.1f} s{rate}")


def check_writable(out_dir: str, storage_options: dict | None = None) -> None:
    """Create ``out_dir`` and prove a file can be written there (raises ImageWriteError)."""
    fs, root = resolve(out_dir, storage_options)
    probe = f"{root.rstrip('/')}/.jpeg-restore-write-test"
    try:
        fs.makedirs(root, exist_ok=True)
        with fs.open(probe, "wb") as f:
            f.write(b"")
        fs.rm(probe)
    except (OSError, PermissionError) as err:
        raise ImageWriteError(f"{out_dir}: output folder is not writable ({err.__class__.__name__}: "
                              f"{getattr(err, 'strerror', None) or err})") from None


@dataclass
class OpenedFile:
    """An input that is to be restored: its decoded image, what its tables (or the traces in its
    pixels) say, and what its restoration assumes (:mod:`.compression`)."""

    loaded: LoadedImage
    compression: Compression
    quality: QualityEstimate | None

    def restored(self) -> FileResult:
        """The result once its output is written."""
        h, w = self.loaded.array.shape[:2]
        return FileResult("restored", self.quality, h * w / 1e6, compression=self.compression)


def open_file(src: str, dest: str, options: RestoreOptions | None = None
              ) -> FileResult | OpenedFile:
    """The first half of :func:`restore_file`: ``exists`` when ``options.skip_existing`` finds
    ``dest``, ``skipped`` when the quality its restoration assumes (:func:`.compression.assess`
    of its tables, or for other formats the traces in its pixels; ``options.assume_quality``
    overrides) is above ``options.skip_above_quality`` or it shows no JPEG compression
    (:func:`.plan.plan_image`), else the decoded input with its compression. Bad files raise
    :class:`ImageReadError` with one line."""
    o = options or RestoreOptions()
    if o.skip_existing:
        fs, path = resolve(dest, o.storage_options)
        if fs.exists(path):
            return FileResult("exists")
    loaded = read_image(src, allow_large=o.allow_large, storage_options=o.storage_options)
    plan = plan_image(loaded.array, loaded.jpeg_grid, o)
    grid = plan.grid
    quality = loaded.quality or (QualityEstimate(grid.quality, float("nan"), False) if grid else None)
    if plan.skip:
        return FileResult("skipped", quality, reason=plan.skip)
    return OpenedFile(loaded, plan.compression, quality)


def restore_file(src: str, dest: str, model: str | nn.Module | Net | None = None,
                 options: RestoreOptions | None = None, *, progress: Progress | None = None
                 ) -> FileResult:
    """The one file-restore step of the CLI and the Ray archive job: :func:`open_file`, then
    restore band by band, consistent with its JPEG, and stream the bands into ``dest``
    (atomically), so memory beyond the decoded input stays small. ``dest`` must come from
    :mod:`.output_paths`. Bad files raise :class:`ImageReadError` / :class:`ImageWriteError` /
    ValueError with one line."""
    o = options or RestoreOptions()
    opened = open_file(src, dest, o)
    if isinstance(opened, FileResult):
        return opened
    image = opened.loaded.array

    def bands() -> Iterator[Band]:
        for done, total, band in restore_bands(image, model, o, compression=opened.compression):
            if progress is not None:
                progress(done, total)
            if band is not None:
                yield band

    write_image_bands(dest, image.shape, image.dtype, bands(), format=o.fmt,
                      icc_profile=opened.loaded.icc_profile, storage_options=o.storage_options)
    return opened.restored()


def restore_files(inputs: Iterable[str], out_dir: str, model: str | nn.Module | Net | None = None,
                  options: RestoreOptions | None = None, *,
                  log: Callable[[str], None] | None = None) -> BatchReport:
    """Restore every input into ``out_dir/<stem>.<fmt>``. Outputs are planned before anything
    is written (:func:`.output_paths.plan_outputs`): an input is never overwritten, nothing is
    written outside ``out_dir``, two inputs never share an output. Progress counts tiles."""
    o = options or RestoreOptions()
    inputs = list(inputs)
    log = log or (lambda m: tqdm.write(m, file=sys.stderr))  # keeps lines clear of the bars
    check_writable(out_dir, o.storage_options)
    plan = plan_outputs(inputs, out_dir, o.fmt, o.storage_options)
    report = BatchReport()
    for src in inputs:
        if src in plan.refused:
            report.fail(src, plan.refused[src], log)
    start = time.perf_counter()
    files = tqdm(plan.pairs, desc="files", unit="img", disable=len(plan.pairs) < 2, file=sys.stderr)
    for src, dest in files:
        res: FileResult | str
        with tqdm(desc=PurePosixPath(src).name, unit="tile", leave=False, file=sys.stderr,
                  delay=PROGRESS_DELAY) as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)
            try:
                res = restore_file(src, dest, model, o, progress=progress)
            except (ImageReadError, ImageWriteError, ValueError, TypeError) as err:
                # Read/write errors already name the file; others get it prefixed.
                named = isinstance(err, (ImageReadError, ImageWriteError))
                res = one_line(err) if named else f"{src}: {one_line(err)}"
        if isinstance(res, str):
            report.fail(src, res, log)  # after the tile bar is gone, so the line stays clean
        elif res.status == "restored":
            report.restored.append(dest)
            report.megapixels += res.megapixels
        else:
            report.skipped[src] = res.reason or "output exists"
    report.seconds = time.perf_counter() - start
    return report
