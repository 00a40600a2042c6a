"""Shared plumbing of the Ray jobs: connecting to a cluster, credentials, redaction."""
from __future__ import annotations

import os
from typing import Any

from napari_jpeg_restore.core.imageio.filesystem import SECRET_KEY

# Environment variables the object-store clients read (botocore, gcsfs/google-auth). The driver
# hands them to its actors as constructor arguments (not a runtime_env, which the dashboard shows).
CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "GOOGLE_APPLICATION_CREDENTIALS",
)
REDACTED = "***"


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (nested dicts/lists) with the values of secret-looking keys replaced."""
    if isinstance(obj, dict):
        return {k: REDACTED if isinstance(k, str) and SECRET_KEY.search(k) and v not in (None, "")
                else redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    return obj


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret value blanked (error messages may echo request parameters)."""
    for s in secrets:
        text = text.replace(s, REDACTED)
    return text


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
