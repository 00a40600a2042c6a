"""The archive job's manifest: JSON Lines rows under ``<dst>/_manifest/<run-id>/``, one part per
batch, written by the process that wrote the outputs, and ``<run-id>.run.json`` per run."""
from __future__ import annotations

import json
import os
import time
import uuid

from napari_jpeg_restore.core.imageio.filesystem import is_local, resolve, write_atomically

from ._common import redact
from .archive_listing import full_url

MANIFEST_DIR = "_manifest"


def _root(dst: str, storage_options: dict | None) -> tuple:
    fs, root = resolve(dst, storage_options)
    return fs, f"{root.rstrip('/')}/{MANIFEST_DIR}"


def run_folder(dst: str, run_id: str, storage_options: dict | None = None) -> str:
    """URL of the folder holding one run's parts."""
    fs, root = _root(dst, storage_options)
    return full_url(fs, f"{root}/{run_id}/")


class ManifestPart:
    """Rows written by one process for one batch of one run, each durable as soon as it is
    added (locally appended and fsynced; on object stores the part object is rewritten), so
    an output is never without its row for longer than it takes to write one line."""

    def __init__(self, dst: str, run_id: str, storage_options: dict | None = None) -> None:
        self.fs, root = _root(dst, storage_options)
        self.run_id = run_id
        self.local = is_local(self.fs)
        folder = f"{root}/{run_id}"
        if self.local:
            self.fs.makedirs(folder, exist_ok=True)
        self.path = f"{folder}/part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"
        self.text = ""

    def add(self, rows: list[dict]) -> None:
        if not rows:
            return
        text = "".join(json.dumps({**r, "run": self.run_id}, sort_keys=True) + "\n" for r in rows)
        if self.local:
            with open(self.path, "a") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        else:
            self.text += text
            self.fs.pipe_file(self.path, self.text.encode())


def write_info(dst: str, run_id: str, info: dict, storage_options: dict | None = None) -> None:
    """``<run-id>.run.json``: the run's (redacted) options, status and summary, atomically."""
    fs, root = _root(dst, storage_options)
    text = json.dumps(redact(info), indent=2, sort_keys=True, default=str).encode()
    write_atomically(full_url(fs, f"{root}/{run_id}.run.json"), lambda f: f.write(text),
                     storage_options)


def read_manifest(dst: str, storage_options: dict | None = None, run_id: str | None = None) -> list[dict]:
    """Every manifest row under ``dst`` (or of one run) in the order written: runs sort by
    their time-stamped id, parts by their time-stamped name."""
    fs, base = _root(dst, storage_options)
    if run_id:
        base = f"{base}/{run_id}"
    if not fs.exists(base):
        return []
    rows = []
    for path in sorted(p for p in fs.find(base) if p.endswith(".jsonl")):
        rows += [json.loads(line) for line in fs.cat_file(path).decode().splitlines() if line]
    return rows


def final_state(rows: list[dict]) -> dict[str, dict]:
    """The last row of every key: what the archive looks like after all runs."""
    return {r["key"]: r for r in rows}
