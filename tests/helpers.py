"""Test helpers: free ports, a local S3 (moto's standalone
server), a Ctrl-C at a given output line, the synthetic image family, the one tiny-restorer recipe of the tests and a restorer
whose table conditioning matters."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
             "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def interrupt_at(proc: subprocess.Popen, stream, marker: str, timeout: float = 600) -> list[str]:
    """Read ``stream`` (one of ``proc``'s pipes) until a line contains ``marker``, then send
    ``proc`` a Ctrl-C; the lines read. Waits as long as start-up takes on a loaded machine, up to
    ``timeout`` seconds; fails if the process ends first."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(marker in line for line in lines):
        line = stream.readline()
        assert line or proc.poll() is None, f"ended before {marker!r}: {''.join(lines)}"
        lines.append(line)
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGINT)
    return lines


def synthetic(seed: int = 0, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A smooth gray image with an edge and mild noise (the family tests/test_training.py uses)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: size[0], : size[1]]
    img = 128 + 70 * np.sin(xx / 9.0 + seed) * np.cos(yy / 13.0) + 40 * (xx > size[1] // 2)
    return np.clip(img + rng.normal(0, 3, size), 0, 255).astype(np.uint8)


@contextmanager
def moto_s3(env: dict[str, str] | None = None) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1; yields its endpoint URL. Sets dummy AWS credentials in
    ``os.environ`` for its lifetime (restored afterwards)."""
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in {**DUMMY_AWS, **(env or {})}}
    os.environ.update({**DUMMY_AWS, **(env or {})})
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def train_tiny_restorer(path: str | Path, steps: int = 120, seed: int = 0) -> Path:
    """A CRL-lite gray restorer (no encoder, one top block) overfitted to one Q10 synthetic image,
    saved with ``registry.save_weights`` (as tests/test_training.py's overfit test trains it)."""
    import tempfile

    import torch
    from napari_jpeg_restore.core.models import create_model
    from napari_jpeg_restore.core.registry import save_weights
    from napari_jpeg_restore.core.training.data import PairSampler
    from napari_jpeg_restore.core.training.loop import fit
    from napari_jpeg_restore.core.training.tasks import RestorationTask

    torch.manual_seed(seed)
    model = create_model("crl", "lite", 1, use_encoder=False, top_blocks=1)
    task = RestorationTask(model, PairSampler([synthetic(seed, (128, 160))], patch=64,
                                              qualities=(10, 10, 10)), batch=4)
    with tempfile.TemporaryDirectory() as tmp:
        fit(task, steps=steps, out_dir=tmp, lr=2e-3, device=torch.device("cpu"), log_every=steps,
            ckpt_every=steps)
    path = Path(path)
    save_weights(model.eval(), path, {"note": "tiny test restorer"})
    return path


def conditioned_restorer(seed: int = 0):
    """A lite gray restorer conditioned on tables, its FiLM layer and tail randomised so that the
    table and the tiling show in its output."""
    import torch
    from napari_jpeg_restore.core.models import create_model

    torch.manual_seed(seed)
    model = create_model("crl", "lite", 1, condition=True).eval()
    with torch.no_grad():
        model.condition.out.weight.normal_(0, 0.5)
        model.tail.weight.normal_(0, 0.05)
    return model
