"""Files and object stores, one way for every part of the package: an fsspec URL or path to
(filesystem, path), atomic writes (readers never see half a file), and ``--storage-options``
(a JSON file or an inline object) with the secret-looking values it may carry."""
from __future__ import annotations

import glob
import json
import os
import re
import sys
import uuid
from collections.abc import Callable
from contextlib import suppress
from typing import Any, BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

SECRET_KEY = re.compile(r"key|secret|token|password|passwd|credential|auth|signature", re.IGNORECASE)


def secret_values(storage_options: dict | None, env: dict[str, str] | None = None) -> list[str]:
    """Every secret string in the storage options and the forwarded environment."""
    found: list[str] = []

    def walk(o: Any, secret: bool = False) -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                walk(v, secret or (isinstance(k, str) and bool(SECRET_KEY.search(k))))
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v, secret)
        elif secret and isinstance(o, str) and len(o) >= 4:
            found.append(o)
    walk(storage_options or {})
    walk(env or {})
    return found


def parse_storage_options(text: str | None, warn=None) -> dict[str, Any]:
    """``--storage-options``: a JSON object, or the path of a file holding one. Secrets written
    inline end up wherever the command line is recorded (the process list, shell history;
    `ray job list`, `ray job logs` and the driver log keep a job's entrypoint), so ``warn``
    (default: a line on stderr) is called when the inline text carries any."""
    if not text:
        return {}
    inline = not os.path.isfile(text)
    if not inline:  # a JSON file keeps secrets out of the command line
        with open(text) as f:
            text = f.read()
    options = json.loads(text)
    if not isinstance(options, dict):
        raise ValueError("--storage-options must be a JSON object")  # noqa: TRY004 (a bad argument)
    if inline and secret_values(options):
        (warn or (lambda m: print(m, file=sys.stderr)))(
            "warning: --storage-options carries a secret on the command line, which the process "
            "list and Ray's job records (ray job list, ray job logs) keep; pass the path of a JSON "
            "file instead, or AWS_* variables (for a Ray job, its runtime_env env_vars)")
    return options


def resolve(url: str | os.PathLike, storage_options: dict | None = None
            ) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path within it) of a local path or an fsspec URL."""
    return fsspec.core.url_to_fs(os.fspath(url), **(storage_options or {}))


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def stale_temporaries(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """Temporary files of ``path`` on an object store. Object stores (s3fs, gcsfs) list only the
    keys under that prefix; a glob would list the whole folder at every write, which grows with
    the archive."""
    parent, _, name = path.rpartition("/")
    try:
        found = fs.find(parent, prefix=f"{name}.tmp-")
    except TypeError:  # a filesystem without prefix listing
        return fs.glob(f"{glob.escape(path)}.tmp-*")
    return [p for p in found if p.rpartition("/")[2].startswith(f"{name}.tmp-")]


def write_atomically(url: str | os.PathLike, fill: Callable[[BinaryIO], None],
                     storage_options: dict | None = None) -> None:
    """Call ``fill(file)`` on a new temporary file beside ``url``, then move it over ``url``: a
    local file is fsynced and renamed (``os.replace``); an object store gets a temporary key
    moved into place. On failure the temporary file is removed and the error raised. After a
    success, temporary files of the same output left by killed writers are removed."""
    fs, path = resolve(url, storage_options)
    if is_local(fs):
        folder, base = os.path.split(os.path.abspath(path))
        tmp = os.path.join(folder, f".{base}.tmp-{uuid.uuid4().hex[:12]}")
        try:
            os.makedirs(folder, exist_ok=True)
            with open(tmp, "xb") as f:  # exclusive: never an existing file
                fill(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise
        for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(base)}.tmp-*")):
            with suppress(OSError):  # left by a writer of this file that was killed
                os.unlink(stale)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with fs.open(tmp, "wb") as f:
            fill(f)
        fs.mv(tmp, path)
    except BaseException:
        with suppress(Exception):
            if fs.exists(tmp):
                fs.rm(tmp)
        raise
    with suppress(Exception):  # left by a writer of this file that was killed
        stale = stale_temporaries(fs, path)
        if stale:
            fs.rm(stale)
