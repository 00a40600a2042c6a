"""``--storage-options`` for fsspec, shared by every command: parsing (a JSON file or an inline
object) and the secret-looking values it may carry."""
from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

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
