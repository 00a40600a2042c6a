"""Shared plumbing of the Ray jobs: connecting to a cluster, storage options, redaction."""
from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

# Environment variables the object-store clients read (botocore, gcsfs/google-auth). The driver
# hands them to its actors as constructor arguments (not a runtime_env, which the dashboard shows).
CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "GOOGLE_APPLICATION_CREDENTIALS",
)
_SECRET = re.compile(r"key|secret|token|password|passwd|credential|auth|signature", re.IGNORECASE)
REDACTED = "***"


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (nested dicts/lists) with the values of secret-looking keys replaced."""
    if isinstance(obj, dict):
        return {k: REDACTED if isinstance(k, str) and _SECRET.search(k) and v not in (None, "")
                else redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    return obj


def secret_values(storage_options: dict | None, env: dict[str, str] | None = None) -> list[str]:
    """Every secret string in the storage options and the forwarded environment."""
    found: list[str] = []

    def walk(o: Any, secret: bool = False) -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                walk(v, secret or (isinstance(k, str) and bool(_SECRET.search(k))))
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v, secret)
        elif secret and isinstance(o, str) and len(o) >= 4:
            found.append(o)
    walk(storage_options or {})
    walk(env or {})
    return found


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret value blanked (error messages may echo request parameters)."""
    for s in secrets:
        text = text.replace(s, REDACTED)
    return text


def parse_storage_options(text: str | None, warn=None) -> dict[str, Any]:
    """``--storage-options``: a JSON object, or the path of a file holding one. Secrets written
    inline end up wherever the command line is recorded (the process list; `ray job list`,
    `ray job logs` and the driver log keep a job's entrypoint), so ``warn`` (default: a line on
    stderr) is called when the inline text carries any."""
    if not text:
        return {}
    inline = not os.path.isfile(text)
    if not inline:  # a JSON file keeps secrets out of the command line
        with open(text) as f:
            text = f.read()
    options = json.loads(text)
    if not isinstance(options, dict):
        raise ValueError("--storage-options must be a JSON object")
    if inline and secret_values(options):
        (warn or (lambda m: print(m, file=sys.stderr)))(
            "warning: --storage-options carries a secret on the command line, where Ray records "
            "it (ray job list, ray job logs); pass the path of a JSON file instead, or AWS_* "
            "variables (e.g. the job's runtime_env env_vars)")
    return options


def credential_env() -> dict[str, str]:
    return {k: os.environ[k] for k in CREDENTIAL_ENV if os.environ.get(k)}


def init_ray(address: str | None) -> str:
    """Connect to ``address`` / RAY_ADDRESS, or start a local Ray instance. Returns a label."""
    import ray

    if ray.is_initialized():
        return "already initialised"
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return f"cluster at {address}"
    ray.init()
    return "local Ray instance"
