"""The stages of the archive job's Ray Data pipeline. Rows are dicts of ``key src dst row
payload seconds``: ``row`` is the finished manifest row (JSON) once a stage has decided the
file's fate, ``payload`` the pickled work in between (the decoded input, then its restoration).

* CPU actors run the whole file step (:func:`core.file_restore.restore_file`, streaming band by
  band) in :class:`RestoreActor`.
* GPU actors only run the model: :func:`read_stage` (exists? read, decode, skip above the
  quality) and :func:`write_stage` (encode, write atomically) are CPU tasks around them.

The last stage writes every row to the manifest as soon as the file is done
(:class:`.archive_manifest.ManifestPart`), so an output never lacks its row for long, whatever
happens to the driver."""
from __future__ import annotations

import json
import os
import pickle
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from napari_jpeg_restore.core.engines.device import resolve_device, set_threads
from napari_jpeg_restore.core.engines.selection import open_net
from napari_jpeg_restore.core.error_text import one_line
from napari_jpeg_restore.core.imageio.filesystem import secret_values
from napari_jpeg_restore.core.imageio.writing import write_image
from napari_jpeg_restore.core.jpeg.consistency import calibration_path
from napari_jpeg_restore.core.restoration.file_restore import (
    FileResult,
    OpenedFile,
    open_file,
    restore_file,
)
from napari_jpeg_restore.core.restoration.image_restore import restore
from napari_jpeg_restore.core.restoration.options import RestoreOptions

from ._common import scrub
from .archive_manifest import ManifestPart

Batch = dict[str, Any]  # column -> values, as Ray Data hands them over


@dataclass(frozen=True)
class Settings:
    """What every stage needs to know about the run."""

    dst: str  # the destination root (for the manifest)
    run_id: str
    options: RestoreOptions = field(default_factory=RestoreOptions)  # with skip_existing
    env: dict[str, str] = field(default_factory=dict)  # the driver's cloud credentials

    @property
    def storage_options(self) -> dict:
        return self.options.storage_options or {}

    def enter(self) -> list[str]:
        """Set the credentials in this process; returns the secret values to scrub."""
        os.environ.update(self.env)
        return secret_values(self.storage_options, self.env)


def rows_of(batch: Batch) -> list[dict[str, Any]]:
    columns = list(batch)
    return [dict(zip(columns, values)) for values in zip(*(batch[c] for c in columns))]


def batch_of(items: list[dict[str, Any]], columns: tuple[str, ...]) -> Batch:
    return {c: np.array([it[c] for it in items], dtype=object) for c in columns}


ALL = ("key", "src", "dst", "row", "payload", "seconds")


def result_row(key: str, res: FileResult, dst: str, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"key": key, "status": res.status, "quality": None, "error": None}
    if res.reason:
        row["reason"] = res.reason
    if res.quality is not None:
        row["quality"] = res.quality.quality
        row["quality_exact"] = res.quality.exact
    if res.status == "restored":
        row.update(megapixels=res.megapixels, output=dst, **extra)
        if res.compression is not None:  # what the restoration assumed, and why
            row.update(restored_as=res.compression.quality, restored_as_source=res.compression.source)
    return row


def error_row(key: str, err: BaseException, secrets: list[str]) -> dict[str, Any]:
    """Every per-file problem is a manifest row, never a stopped job."""
    return {"key": key, "status": "failed", "quality": None, "error": scrub(one_line(err), secrets)}


def _finish(it: dict[str, Any], row: dict[str, Any], t0: float) -> None:
    it["seconds"] = float(it["seconds"]) + time.perf_counter() - t0
    it["row"] = json.dumps({**row, "seconds": round(it["seconds"], 4)})
    it["payload"] = b""


def read_stage(batch: Batch, settings: Settings) -> Batch:
    """CPU task before GPU actors: decide exists/skipped/failed, else decode the input."""
    secrets = settings.enter()
    items = rows_of(batch)
    for it in items:
        t0 = time.perf_counter()
        try:
            opened = open_file(it["src"], it["dst"], settings.options)
        except Exception as err:  # noqa: BLE001 - a row, not a stopped job
            _finish(it, error_row(it["key"], err, secrets), t0)
            continue
        if isinstance(opened, FileResult):
            _finish(it, result_row(it["key"], opened, it["dst"]), t0)
        else:
            it["payload"] = pickle.dumps(opened, protocol=5)
            it["seconds"] = float(it["seconds"]) + time.perf_counter() - t0
    return batch_of(items, ALL)


def write_stage(batch: Batch, settings: Settings) -> Batch:
    """CPU task after GPU actors: encode and write each restoration atomically, then its row."""
    secrets = settings.enter()
    part = ManifestPart(settings.dst, settings.run_id, settings.storage_options)
    items = rows_of(batch)
    for it in items:
        t0 = time.perf_counter()
        if it["payload"]:
            opened, restored, placed = pickle.loads(it["payload"])
            try:
                write_image(it["dst"], restored, format=settings.options.fmt,
                            icc_profile=opened.loaded.icc_profile,
                            storage_options=settings.storage_options)
                _finish(it, result_row(it["key"], opened.restored(), it["dst"], **placed), t0)
            except Exception as err:  # noqa: BLE001
                _finish(it, error_row(it["key"], err, secrets), t0)
        part.add([json.loads(it["row"])])
    return batch_of(items, ("row",))


class RestoreActor:
    """A Ray Data actor holding one model. ``whole_files``: the whole file step per input
    (CPU actors; writes the manifest rows), else only the model between the CPU stages."""

    def __init__(self, settings: Settings, model: str | None,
                 model_blob: tuple[bytes, bytes | None] | None, *, device: str = "cpu",
                 threads: int = 1, whole_files: bool = True) -> None:
        import ray

        self.secrets = settings.enter()
        set_threads(max(1, int(threads)))
        self.settings, self.whole_files = settings, whole_files
        self.device = resolve_device(device)
        context = ray.get_runtime_context()
        self.placed: dict[str, Any] = {"actor": (context.get_actor_id() or "")[:12]}
        gpus = [str(g) for g in ray.get_gpu_ids()]  # the GPU(s) Ray assigned to this actor
        if gpus:
            self.placed["gpus"] = gpus
        self.options = replace(settings.options, device=str(self.device))
        # weights (and calibration) through the object store: a file only while the net is
        # opened (the net then holds them in memory, or OpenVINO's conversion cache does)
        with tempfile.TemporaryDirectory(prefix="jpeg-restore-model-") as folder:
            if model_blob is not None:
                weights, calibration = model_blob
                model = str(Path(folder) / "model.pt")
                Path(model).write_bytes(weights)
                if calibration is not None:
                    calibration_path(model).write_bytes(calibration)
            self.model = (open_net(model, device=str(self.device), precision=self.options.precision,
                                   engine=self.options.engine) if model else None)  # None: per image default
        print(f"restoration actor {self.placed['actor']} started on {self.placement()}", flush=True)

    def placement(self) -> str:
        """Where this actor runs: its device and the GPU ids Ray assigned to it."""
        gpus = self.placed.get("gpus")
        return f"{self.device}" + (f", GPU {','.join(gpus)}" if gpus else "")

    def __call__(self, batch: Batch) -> Batch:
        s = self.settings
        items = rows_of(batch)
        part = ManifestPart(s.dst, s.run_id, s.storage_options) if self.whole_files else None
        for it in items:
            t0 = time.perf_counter()
            try:
                if part is not None:
                    res = restore_file(it["src"], it["dst"], self.model, self.options)
                    _finish(it, result_row(it["key"], res, it["dst"], **self.placed), t0)
                elif it["payload"]:
                    opened: OpenedFile = pickle.loads(it["payload"])
                    restored = restore(opened.loaded.array, self.model, self.options,
                                       compression=opened.compression)
                    it["payload"] = pickle.dumps((opened, restored, self.placed), protocol=5)
                    it["seconds"] = float(it["seconds"]) + time.perf_counter() - t0
            except Exception as err:  # noqa: BLE001
                _finish(it, error_row(it["key"], err, self.secrets), t0)
            if part is not None:
                part.add([json.loads(it["row"])])
        return batch_of(items, ("row",) if part is not None else ALL)
